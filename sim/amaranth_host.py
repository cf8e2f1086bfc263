"""Run the :class:`~spikeforge.sim.driver.Client` against a :class:`~spikeforge.rtl.top.Top` in
Amaranth's simulator.

The client is ordinary blocking code; the simulator drives the testbench coroutine. They meet at
two queues: the client's ``transact`` puts a command and waits; the testbench (which blocks the
simulator while it waits for the next command, so no simulated time passes meanwhile) sends the
words on ``cmd`` with random idle gaps, collects the response from ``rsp`` under random
backpressure, and hands it back. The client runs in a worker thread.
"""

from __future__ import annotations

import queue
import random
import threading
from typing import Any, Callable

from spikeforge.rtl.protocol import split_response

from .amaranth_bench import send, simulate

__all__ = ["run_client", "trace_monitor"]

_DONE = object()


class _QueueTransport:
    def __init__(self):
        self.requests: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()

    def transact(self, words: list[int]) -> list[int]:
        self.requests.put(list(words))
        rsp = self.responses.get()
        if isinstance(rsp, BaseException):
            raise RuntimeError("the simulation stopped") from rsp
        return rsp


async def _receive(ctx, top, rng: random.Random, stall: float, timeout: int) -> list[int]:
    words: list[int] = []
    expected = None
    waited = 0
    while expected is None or len(words) < expected:
        ready = rng.random() >= stall
        ctx.set(top.rsp.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(top.rsp.valid, top.rsp.payload)
        waited += 1
        if waited > timeout:
            raise TimeoutError(f"no response within {timeout} cycles (got {len(words)} words)")
        if valid and ready:
            words.append(int(payload))
            if expected is None:
                expected = 1 + split_response(words[0])[2]
    ctx.set(top.rsp.ready, 0)
    return words


def run_client(top, fn: Callable[[Any], Any], *, seed: int = 0, gap: float = 0.0, stall: float = 0.0,
               timeout: int = 2_000_000, benches=()) -> Any:
    """Simulate ``top`` while ``fn(transport)`` runs in a thread; return what ``fn`` returns.

    ``gap``: probability of an idle cycle before each command word; ``stall``: probability that
    ``rsp.ready`` is low in a cycle; ``timeout``: cycles a response may take (a hang fails).
    ``benches``: background testbench coroutines (trace monitors)."""
    tr = _QueueTransport()
    result: dict[str, Any] = {}

    def worker():
        try:
            result["value"] = fn(tr)
        except BaseException as e:  # handed to the main thread
            result["error"] = e
        finally:
            tr.requests.put(_DONE)

    async def host(ctx):
        rng = random.Random(seed)
        try:
            while (words := tr.requests.get()) is not _DONE:
                for w in words:
                    await send(ctx, top.cmd, w, rng, gap)
                tr.responses.put(await _receive(ctx, top, rng, stall, timeout))
        except BaseException as e:
            tr.responses.put(e)
            raise

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    try:
        simulate(top, host, background=benches)
    finally:
        th.join(timeout=5)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def trace_monitor(top, trace) -> Callable:
    """A background testbench appending the top's trace-port records to ``trace``
    (a :class:`spikeforge.sim.scenario.Trace`)."""
    P = top.cfg.hardware.lanes

    async def monitor(ctx):
        async for _, _, ov, ol, o, bv, bl, b in ctx.tick().sample(top.obs_valid, top.obs_layer, top.obs,
                                                                   top.bp_obs_valid, top.bp_obs_layer, top.bp_obs):
            if ov:
                trace.fp.append((ol, o.group, [o.membrane[q] for q in range(P)], o.spikes,
                                 [o.surrogate[q] for q in range(P)]))
            if bv:
                trace.bp.append((bl, b.group, [b.delta[q] for q in range(P)]))

    return monitor
