"""cocotb bench: one network of the interconnect (:class:`~spikeforge.rtl.noc.ChainNetwork`)
under Verilator, every link stalled at random.

Every core sends a stream of flits (random destination ranges its direction allows, random idle
gaps) while every core's ``deliver`` port drops ``ready`` at random. The scoreboard then checks
the contract of rtl/noc.py exactly: each flit reached each core of its range once, no other core
got it, and each receiver saw each sender's flits in the order they were sent. Arguments (from
:func:`spikeforge.sim.runner.run`)::

    n, direction, data_width, depth    the build
    seed, flits, gap, stall            the traffic; ``replay`` reruns it
    misroute                           also send one malformed flit per core and expect the flag
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from spikeforge.rtl.noc import flit_layout
from spikeforge.sim.tb.streams import StreamSource, stream_port

CLOCK_NS = 10


def _args() -> dict:
    from spikeforge.sim.runner import cosim_args

    return cosim_args()


def traffic(n: int, direction: int, flits: int, data_width: int, rng: random.Random) -> list[list[dict]]:
    """Per sender, its flits: data = (sender, sequence number), so every flit is unique."""
    out = []
    seq_bits = data_width - 5
    for k in range(n):
        mine = []
        for q in range(flits):
            if direction > 0:
                lo = rng.randint(k, n - 1)
                hi = rng.randint(lo, n - 1)
            else:
                hi = rng.randint(0, k)
                lo = rng.randint(0, hi)
            mine.append({"src": k, "dst_lo": lo, "dst_hi": hi, "data": (k << seq_bits) | q})
        out.append(mine)
    return out


class Receiver:
    def __init__(self, dut, k: int, layout, rng: random.Random, stall: float):
        self.clk = dut.clk
        self.valid, self.ready, self.payload = stream_port(dut, f"deliver_{k}")
        self.layout, self.rng, self.stall = layout, rng, stall
        self.got: list = []

    async def run(self) -> None:
        while True:
            self.ready.value = int(self.rng.random() >= self.stall)
            await ReadOnly()
            if int(self.valid.value) and int(self.ready.value):
                self.got.append(self.layout.from_bits(self.payload.value.to_unsigned()))
            await RisingEdge(self.clk)


@cocotb.test()
async def lossless_in_order(dut) -> None:
    a = _args()
    n, direction, width = a["n"], a["direction"], a["data_width"]
    layout = flit_layout(width)
    rng = random.Random(a["seed"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    senders = [StreamSource(dut, f"send_{k}", layout, random.Random(rng.random()), a["gap"]) for k in range(n)]
    receivers = [Receiver(dut, k, layout, random.Random(rng.random()), a["stall"]) for k in range(n)]
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    for r in receivers:
        cocotb.start_soon(r.run())
    plan = traffic(n, direction, a["flits"], width, rng)
    bad = []
    if a.get("misroute"):  # one malformed flit per sender (range behind it or reversed), then more traffic
        for k in range(n):
            lo, hi = ((k - 1, k - 1) if k > 0 else (1, 0)) if direction > 0 else ((k + 1, k + 1) if k < n - 1 else (1, 0))
            bad.append({"src": k, "dst_lo": lo, "dst_hi": hi, "data": 0})
            plan[k].insert(len(plan[k]) // 2, bad[-1])
    tasks = [cocotb.start_soon(s.send(items)) for s, items in zip(senders, plan)]
    for t in tasks:
        await t
    expected = [[f for f in sum(plan, []) if f["dst_lo"] <= d <= f["dst_hi"] and f not in bad] for d in range(n)]
    for _ in range(200 * a["flits"] * n):
        if all(len(r.got) >= len(e) for r, e in zip(receivers, expected)):
            break
        await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, 20)  # anything extra (a duplicate) would arrive now
    replay = a.get("replay", "?")
    seq_mask = (1 << (width - 5)) - 1
    for d, (r, e) in enumerate(zip(receivers, expected)):
        got = [{"src": int(f.src), "dst_lo": int(f.dst_lo), "dst_hi": int(f.dst_hi), "data": int(f.data)} for f in r.got]
        for f in got:
            assert f["dst_lo"] <= d <= f["dst_hi"], f"core {d} got a flit not addressed to it: {f}; replay: {replay}"
        assert len(got) == len(e), (f"core {d}: {len(got)} flits delivered, {len(e)} addressed to it "
                                    f"(dropped or duplicated); replay: {replay}")
        for s in range(n):
            seen = [f["data"] & seq_mask for f in got if f["src"] == s]
            want = [f["data"] & seq_mask for f in e if f["src"] == s]
            assert seen == want, f"core {d} from core {s}: order {seen[:12]}... expected {want[:12]}...; replay: {replay}"
    flag = int(dut.misroute.value)
    assert flag == int(bool(a.get("misroute"))), f"misroute flag {flag}; replay: {replay}"
    dut._log.info("%d cores, direction %+d: %d deliveries exact", n, direction, sum(len(e) for e in expected))
