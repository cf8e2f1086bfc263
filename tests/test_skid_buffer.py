"""SkidBuffer: every item arrives once, in order, under random gaps and stalls; one item per cycle
when nobody stalls; and no combinational path from the consumer's ready to the producer."""

import random

import pytest
from amaranth import unsigned

from spikeforge.rtl.skid_buffer import SkidBuffer
from spikeforge.sim.amaranth_bench import send, simulate


@pytest.mark.parametrize("seed, gap, stall", [(1, 0.0, 0.0), (2, 0.3, 0.0), (3, 0.0, 0.5), (4, 0.4, 0.4), (5, 0.1, 0.8)])
def test_items_arrive_once_and_in_order(seed, gap, stall):
    rng = random.Random(seed)
    items = [rng.randrange(1 << 12) for _ in range(300)]
    dut = SkidBuffer(unsigned(12))
    got = []
    cycles = {}

    async def producer(ctx):
        for x in items:
            await send(ctx, dut.i, x, rng, gap)

    async def consumer(ctx):
        n = 0
        while len(got) < len(items):
            assert n < 20 * len(items), f"seed {seed}: {len(got)} of {len(items)} items after {n} cycles (lost?)"
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            n += 1
            if valid and ready:
                got.append(payload)
        cycles["n"] = n
        # drained: nothing left over, nothing extra
        assert ctx.get(dut.o.valid) == 0 and ctx.get(dut.i.ready) == 1

    simulate(dut, producer, consumer)
    assert got == items, f"seed {seed}: first difference at {next(k for k, (a, b) in enumerate(zip(got, items)) if a != b)}"
    if gap == 0.0 and stall == 0.0:
        assert cycles["n"] <= len(items) + 2, f"not one item per cycle: {cycles['n']} cycles for {len(items)}"


def test_ready_does_not_depend_on_the_consumer_in_the_same_cycle():
    dut = SkidBuffer(unsigned(8))

    async def bench(ctx):
        rng = random.Random(7)
        for _ in range(200):
            ctx.set(dut.i.valid, rng.random() < 0.7)
            ctx.set(dut.i.payload, rng.randrange(256))
            ctx.set(dut.o.ready, 0)
            r0 = ctx.get(dut.i.ready)
            v0, p0 = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            ctx.set(dut.o.ready, 1)
            assert ctx.get(dut.i.ready) == r0, "i.ready follows o.ready combinationally"
            ctx.set(dut.i.valid, 1 - ctx.get(dut.i.valid))
            assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == (v0, p0), "o follows i combinationally"
            ctx.set(dut.o.ready, rng.random() < 0.5)
            await ctx.tick()

    simulate(dut, bench)
