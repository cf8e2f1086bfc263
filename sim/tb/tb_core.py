"""cocotb bench: the whole core (:class:`~spikeforge.rtl.top.Top`) under Verilator, driven only
through the host protocol by the same blocking :class:`~spikeforge.sim.driver.Client` the
Amaranth-sim tests and the training driver use.

The client runs in a cocotb ``bridge`` thread; its transport turns each command into stream
traffic with :func:`cocotb.task.resume`. Random idle gaps on ``cmd`` and random low ``ready`` on
``rsp`` come from the run's seed. While the core computes, the bench waits on ``rsp__valid`` (and
the trace monitor on the trace valids) as edge triggers, so Verilator runs free between events.

Arguments (``$SPIKEFORGE_COSIM_ARGS``, written by :func:`spikeforge.sim.runner.run`)::

    config      SpikeforgeConfig.to_dict() of the build
    seed        drives gaps and backpressure
    gap, stall  probabilities (host stream)
    replay      one-line command that reruns this simulation
    waves       path of the VCD, if any
    scenarios   [{"name": ..., "seed": ...}]            (test ``scenarios``)
    train       {"dataset", "samples", "epochs", "report", "progress"}   (test ``train``)
    bench       {"densities", "samples", "report"}       (test ``bench``)
    out         path of a JSON file the test writes its results to
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import First, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

from spikeforge.config import SpikeforgeConfig
from spikeforge.rtl.fp_engine import neuron_group_layout
from spikeforge.rtl.bp_engine import delta_group_layout, group_bits
from spikeforge.rtl.params import CoreParams
from spikeforge.rtl.protocol import split_response
from spikeforge.sim.driver import Client
from spikeforge.sim.scenario import Trace

CLOCK_NS = 10
#: cycles a single command may take before the bench calls the core hung
RESPONSE_TIMEOUT_CYCLES = 5_000_000


class CocotbTransport:
    """``transact(words)`` for blocking client code running in a bridge thread."""

    def __init__(self, dut, rng: random.Random, gap: float, stall: float, cmd: str = "cmd", rsp: str = "rsp"):
        self.dut, self.rng, self.gap, self.stall = dut, rng, gap, stall
        self.transact = resume(self._transact)
        # the stream ports (a multi-core top has one pair per core: cmd_3, rsp_3)
        self.cmd_valid, self.cmd_ready = getattr(dut, f"{cmd}__valid"), getattr(dut, f"{cmd}__ready")
        self.cmd_payload = getattr(dut, f"{cmd}__payload")
        self.rsp_valid, self.rsp_ready = getattr(dut, f"{rsp}__valid"), getattr(dut, f"{rsp}__ready")
        self.rsp_payload = getattr(dut, f"{rsp}__payload")
        self.cmd_valid.value = 0
        self.cmd_payload.value = 0
        self.rsp_ready.value = 0

    async def _transact(self, words: list[int]) -> list[int]:
        d = self.dut
        for w in words:
            while self.rng.random() < self.gap:
                self.cmd_valid.value = 0
                await RisingEdge(d.clk)
            self.cmd_payload.value = w
            self.cmd_valid.value = 1
            while True:
                await ReadOnly()
                taken = int(self.cmd_ready.value) == 1
                await RisingEdge(d.clk)
                if taken:
                    break
        self.cmd_valid.value = 0
        out: list[int] = []
        expected = None
        while expected is None or len(out) < expected:
            ready = self.rng.random() >= self.stall
            self.rsp_ready.value = int(ready)
            await ReadOnly()
            valid = int(self.rsp_valid.value) == 1
            if valid and ready:
                out.append(_u(self.rsp_payload.value))
                if expected is None:
                    expected = 1 + split_response(out[0])[2]
                await RisingEdge(d.clk)
            elif not valid:
                # the core is computing: no Python per cycle until it answers
                try:
                    await with_timeout(RisingEdge(self.rsp_valid), RESPONSE_TIMEOUT_CYCLES * CLOCK_NS, "ns")
                except SimTimeoutError:
                    raise TimeoutError(f"no response within {RESPONSE_TIMEOUT_CYCLES} cycles to command "
                                       f"{words[0]:#010x}: the core hangs") from None
            else:
                await RisingEdge(d.clk)
        self.rsp_ready.value = 0
        return out


async def start_clock_and_reset(dut) -> None:
    """Start ``clk`` and hold ``rst`` for three cycles."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def _u(value) -> int:
    """Unsigned integer of a handle's value (1-bit handles give a Logic, wider a LogicArray)."""
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


async def trace_monitor(dut, cfg: SpikeforgeConfig, trace: Trace) -> None:
    """Append every trace-port record to ``trace``; sleeps on the valids' rising edges."""
    p = CoreParams.from_config(cfg)
    P = p.lanes
    fp_layout = neuron_group_layout(p)
    bp_layout = delta_group_layout(p, group_bits(p))
    while True:
        await ReadOnly()
        ov, bv = int(dut.obs_valid.value), int(dut.bp_obs_valid.value)
        if ov:
            o = fp_layout.from_bits(_u(dut.obs.value))
            trace.fp.append((_u(dut.obs_layer.value), int(o.group),
                             [int(o.membrane[q]) for q in range(P)], int(o.spikes),
                             [int(o.surrogate[q]) for q in range(P)]))
        if bv:
            b = bp_layout.from_bits(_u(dut.bp_obs.value))
            trace.bp.append((_u(dut.bp_obs_layer.value), int(b.group), [int(b.delta[q]) for q in range(P)]))
        if ov or bv:
            await RisingEdge(dut.clk)
        else:
            await First(RisingEdge(dut.obs_valid), RisingEdge(dut.bp_obs_valid))


class TB:
    def __init__(self, dut, args: dict):
        self.dut, self.args = dut, args
        self.cfg = SpikeforgeConfig.from_dict(args["config"])
        self.seed = int(args.get("seed", 0))
        self.transport = CocotbTransport(dut, random.Random(self.seed), float(args.get("gap", 0.0)),
                                         float(args.get("stall", 0.0)))
        self.client = Client(self.transport, self.cfg)

    async def start(self) -> None:
        await start_clock_and_reset(self.dut)

    def check_collisions(self) -> None:
        # the core's no_rw_check memories (rtl/ram.py): a read never met a write of its address
        if int(self.dut.rw_collision.value):
            raise AssertionError("a read met a same-cycle write of its address in a memory marked no_rw_check "
                                 "(the Amaranth replay names the memory)")

    def write_out(self, result: dict) -> None:
        if self.args.get("out"):
            Path(self.args["out"]).write_text(json.dumps(result, indent=2) + "\n")


def _args() -> dict:
    from spikeforge.sim.runner import cosim_args

    return cosim_args()


@cocotb.test()
async def scenarios(dut) -> None:
    """Each scenario of the arguments, back to back on one core, exact against golden."""
    from spikeforge.sim.scenario import make_scenario, run_and_check

    args = _args()
    tb = TB(dut, args)
    await tb.start()
    trace = Trace()
    cocotb.start_soon(trace_monitor(dut, tb.cfg, trace))
    results = []
    for spec in args["scenarios"]:
        sc = make_scenario(spec["name"], int(spec["seed"]))
        if sc.cfg.to_dict() != tb.cfg.to_dict():
            raise ValueError(f"scenario {spec} has config {sc.cfg.name}, but the simulator was built for {tb.cfg.name}")
        t0 = time.perf_counter()
        res = await bridge(run_and_check)(tb.client, sc, trace, args.get("replay", "?"))
        res.update(spec, wall_s=round(time.perf_counter() - t0, 3))
        results.append(res)
        dut._log.info("%s seed %s: %d samples, %d elements exact", spec["name"], spec["seed"], res["samples"],
                      res["elements_compared"])
        tb.check_collisions()
    tb.write_out({"scenarios": results})


@cocotb.test()
async def train(dut) -> None:
    """``spikeforge train --backend rtl``: the training driver with the RTL backend."""
    from spikeforge.sim.driver import RtlBackend
    from spikeforge.train import train as run_training
    from spikeforge.train import write_report

    args = _args()
    opts = args["train"]
    tb = TB(dut, args)
    await tb.start()

    def job():
        backend = RtlBackend(tb.client)
        t0 = time.perf_counter()
        result = run_training(tb.cfg, dataset=opts["dataset"], samples=opts.get("samples"), epochs=opts.get("epochs"),
                              progress=bool(opts.get("progress")), backend=backend)
        counters = tb.client.counters()
        wall = time.perf_counter() - t0
        result.report["rtl"] = {"cycles": counters["cycles"], "wall_s": round(wall, 3),
                                "simulated_cycles_per_s": round(counters["cycles"] / wall), "counters": counters}
        write_report(result.report, opts["report"])

    await bridge(job)()
    tb.check_collisions()


@cocotb.test()
async def federated(dut) -> None:
    """One worker of ``spikeforge federated --backend rtl``: joins the gloo group and trains its
    shard on this core (spikeforge.federated.worker_main with the RTL backend)."""
    import torch.distributed as dist

    from spikeforge.federated import FederatedOptions, worker_main
    from spikeforge.sim.driver import RtlBackend

    args = _args()
    fed = args["federated"]
    tb = TB(dut, args)
    await tb.start()

    def job():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{fed['port']}", rank=fed["rank"],
                                world_size=fed["world"])
        try:
            report = worker_main(tb.cfg, FederatedOptions(**fed["options"]), fed["rank"], fed["world"],
                                 backend=RtlBackend(tb.client))
        finally:
            dist.destroy_process_group()
        if report is not None:
            tb.write_out(report)

    await bridge(job)()
    tb.check_collisions()


@cocotb.test()
async def bench(dut) -> None:
    """``spikeforge bench rtl``: per density, run training steps on given input spikes and read the
    hardware counters (see spikeforge.bench for the bounds)."""
    from spikeforge.bench import rtl_bench_job

    args = _args()
    tb = TB(dut, args)
    await tb.start()
    tb.write_out(await bridge(rtl_bench_job)(tb.client, args["bench"]))
    tb.check_collisions()
