"""Interconnect construction: clear errors on bad parameters; the two-network top generates."""

import pytest
from amaranth.back import verilog

from spikeforge.rtl.noc import ChainRouter, Interconnect, StreamFifo, flit_layout


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        StreamFifo(8, 3)
    with pytest.raises(ValueError, match="direction"):
        ChainRouter(8, 0, 3, direction=0)
    with pytest.raises(ValueError, match="outside a chain"):
        ChainRouter(8, 3, 3)
    with pytest.raises(ValueError, match="data width"):
        flit_layout(0)


def test_interconnect_of_twenty_cores_generates():
    ic = Interconnect(20, spike_width=16, error_width=40)
    text = verilog.convert(ic, name="interconnect")
    assert "spikes" in text and "errors" in text
    assert ic.spikes.n == 20 and ic.errors.direction == -1


@pytest.mark.parametrize("percent", [0, 50, 90])
def test_stall_link_delays_but_never_drops_duplicates_or_withdraws(percent):
    """StallLink (the multi-core top's stall injection): every flit comes out once, in order; an
    offered flit stays valid, unchanged, until taken; at 50 % and 90 % it really stalls; a bad
    percentage is refused."""
    import random

    from spikeforge.rtl.noc import StallLink
    from spikeforge.sim.amaranth_bench import simulate

    dut = StallLink(12, percent, seed=7)
    sent = [{"src": k % 32, "dst_lo": (k * 3) % 32, "dst_hi": 31, "data": (k * 37) % 4096} for k in range(200)]
    got, errors = [], []
    cycles = {"n": 0}
    rng = random.Random(percent)

    async def source(ctx):
        for flit in sent:
            ctx.set(dut.i.payload, flit)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        offered = None  # the payload offered and not yet taken
        while len(got) < len(sent):
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            valid, payload = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            flit = {name: int(getattr(payload, name)) for name in ("src", "dst_lo", "dst_hi", "data")}
            if offered is not None and (not valid or flit != offered):
                errors.append(f"cycle {cycles['n']}: offered flit withdrawn or changed ({offered} -> {valid}, {flit})")
            if valid and ready:
                got.append(flit)
                offered = None
            elif valid:
                offered = flit
            await ctx.tick()
            cycles["n"] += 1
            if cycles["n"] > 100_000:
                errors.append("no progress")
                return

    simulate(dut, source, sink)
    assert not errors, errors[:3]
    assert got == sent
    # unstalled: one flit per 2 cycles at most (a one-flit stage), 500 cycles for 200 flits with
    # this sink; stalled half or 90 % of the cycles each way, it must take clearly longer
    assert cycles["n"] < 600 if percent == 0 else cycles["n"] > {50: 700, 90: 2500}[percent], cycles["n"]
    with pytest.raises(ValueError, match="0..99"):
        StallLink(12, 100, 0)
