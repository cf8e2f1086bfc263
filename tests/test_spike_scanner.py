"""Spike scanner: every set bit of a timestep's bitmap becomes one event, in index order, then eot."""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.memory import Memory

from spikeforge.rtl.spike_scanner import SpikeScanner
from spikeforge.sim.amaranth_bench import simulate


class Harness(Elaboratable):
    def __init__(self, lanes, words, queue=True):
        self.words = words
        self.scan = SpikeScanner(lanes=lanes, max_words=len(words), depth=len(words), index_bits=8, queue=queue)

    def elaborate(self, platform):
        m = Module()
        m.submodules.scan = self.scan
        m.submodules.mem = mem = Memory(shape=self.scan.lanes, depth=len(self.words), init=self.words)
        rd = mem.read_port()
        m.d.comb += [rd.en.eq(self.scan.rd_en), rd.addr.eq(self.scan.rd_addr), self.scan.rd_data.eq(rd.data)]
        return m


@pytest.mark.parametrize("queue", [True, False])
@pytest.mark.parametrize("lanes", [1, 3, 8])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_events_match_bitmap(lanes, density, queue):
    rng = random.Random(lanes * 7 + int(density * 10))
    words = [sum((rng.random() < density) << k for k in range(lanes)) for _ in range(6)]
    dut = Harness(lanes, words, queue)
    scan = dut.scan
    expected = [k + w * lanes for w, word in enumerate(words) for k in range(lanes) if (word >> k) & 1]

    async def bench(ctx):
        for fresh in (1, 0):
            await ctx.tick().until(scan.done)
            ctx.set(scan.base, 0)
            ctx.set(scan.words, len(words))
            ctx.set(scan.fresh, fresh)
            ctx.set(scan.start, 1)
            await ctx.tick()
            ctx.set(scan.start, 0)
            got = []
            while True:
                ctx.set(scan.events.ready, int(rng.random() < 0.6))
                _, _, valid, ready, payload = await ctx.tick().sample(scan.events.valid, scan.events.ready,
                                                                      scan.events.payload)
                if valid and ready:
                    if payload.eot:
                        assert payload.fresh == fresh
                        break
                    got.append(payload.index)
            assert got == expected

    simulate(dut, bench)


@pytest.mark.parametrize("queue", [True, False])
@pytest.mark.parametrize("density", [0.0, 0.15, 1.0])
def test_a_timestep_costs_about_max_of_words_and_spikes(density, queue):
    """The queued scanner reads a word per cycle while the emitter sends an event per cycle: a
    slice core's engines spend a cycle or two per event, and the plain scanner, at three cycles
    per word, starved them (their bitmap spans the whole layer below)."""
    lanes, n = 8, 16
    rng = random.Random(int(density * 100))
    words = [sum((rng.random() < density) << k for k in range(lanes)) for _ in range(n)]
    spikes = sum(bin(w).count("1") for w in words)
    dut = Harness(lanes, words, queue)
    scan = dut.scan
    cycles = []

    async def bench(ctx):
        ctx.set(scan.events.ready, 1)
        await ctx.tick().until(scan.done)
        ctx.set(scan.base, 0)
        ctx.set(scan.words, n)
        ctx.set(scan.start, 1)
        await ctx.tick()
        ctx.set(scan.start, 0)
        k = 0
        while True:
            k += 1
            _, _, valid, payload = await ctx.tick().sample(scan.events.valid, scan.events.payload)
            if valid and payload.eot:
                break
        cycles.append(k)

    simulate(dut, bench)
    if queue:  # read latency, output register, eot, the queue filling behind a word of many spikes
        assert cycles[0] <= max(n, spikes) + 8, (cycles[0], n, spikes)
    else:  # three cycles per word, one per spike and one more per non-zero word
        nonzero = sum(w != 0 for w in words)
        assert 3 * n + spikes + nonzero <= cycles[0] <= 3 * n + spikes + nonzero + 3, (cycles[0], n, spikes)
