"""PerfCounters (RAM-backed): every read equals a plain register counter, under random events,
clears and reads; a read of a counter whose visit is in flight; and the overflow flag when reads
come every cycle (outside the contract)."""

import random

import pytest

from spikeforge.rtl.counters import READ_LATENCY, PerfCounters
from spikeforge.sim.amaranth_bench import simulate

#: a read at cycle c sees the events of cycles <= c - SEEN_LAG (the inputs are registered)
SEEN_LAG = 1


def run(names, cycles, rng, p_event, p_clear, p_read, min_read_gap=2, read_gap=2):
    """Drive random inputs; return (reads as (cycle, index, got, want), overflow at the end).
    ``min_read_gap``: the reads the test makes; ``read_gap``: the cadence the counters are sized for."""
    dut = PerfCounters(names, read_gap=read_gap)
    n = len(names)
    history = []  # per cycle: (inc bits, clear)
    reads = []
    out = {}

    async def bench(ctx):
        pending_reads = []  # (due cycle, issue cycle, index)
        last_read = -10
        for c in range(cycles):
            incs = [rng.random() < p for p in p_event]
            clear = rng.random() < p_clear
            rd = c - last_read >= min_read_gap and rng.random() < p_read
            idx = rng.randrange(n)
            for k, nm in enumerate(names):
                ctx.set(dut.inc[nm], incs[k])
            ctx.set(dut.clear, clear)
            ctx.set(dut.rd_en, rd)
            ctx.set(dut.rd_index, idx)
            history.append((incs, clear))
            if rd:
                last_read = c
                pending_reads.append((c + READ_LATENCY, c, idx))
            await ctx.tick()
            # after the tick the simulation is in cycle c + 1
            for due, issued, k in [r for r in pending_reads if r[0] == c + 1]:
                reads.append((issued, k, ctx.get(dut.rd_data), model(history, issued, k)))
            pending_reads = [r for r in pending_reads if r[0] != c + 1]
        out["overflow"] = ctx.get(dut.overflow)

    simulate(dut, bench)
    return reads, out["overflow"]


def model(history, read_cycle, k):
    """A plain counter: events after the last clear, both up to read_cycle - SEEN_LAG; an event in
    the cycle of a clear is lost (the clear wins)."""
    count = 0
    for incs, clear in history[:max(0, read_cycle - SEEN_LAG + 1)]:
        if clear:
            count = 0
        elif incs[k]:
            count += 1
    return count & 0xFFFFFFFF


@pytest.mark.parametrize("n, seed, p_clear, p_read", [
    (18, 1, 0.0, 0.3), (18, 2, 0.01, 0.5), (3, 3, 0.02, 0.5), (1, 4, 0.01, 0.5), (2, 5, 0.005, 0.5), (7, 6, 0.0, 1.0),
])
def test_reads_equal_a_register_counter(n, seed, p_clear, p_read):
    rng = random.Random(seed)
    names = [f"c{k}" for k in range(n)]
    # one counter that counts every cycle (like "cycles"), others at various rates
    p_event = [1.0] + [rng.choice([0.0, 0.1, 0.5, 0.9]) for _ in range(n - 1)]
    reads, overflow = run(names, 1500, rng, p_event, p_clear, p_read)
    assert len(reads) > 100
    bad = [r for r in reads if r[2] != r[3]]
    assert not bad, f"seed {seed}: read at cycle {bad[0][0]} of counter {bad[0][1]}: got {bad[0][2]}, want {bad[0][3]}"
    assert overflow == 0


def test_read_of_a_counter_in_flight():
    """Reads of every counter at every phase of the walk: some land on the counter just visited
    (its RAM word is being written in the read's cycle)."""
    for n in (2, 5, 18):
        rng = random.Random(n)
        names = [f"c{k}" for k in range(n)]
        reads, overflow = run(names, 40 * n, rng, [1.0] * n, 0.0, 1.0)
        assert [r for r in reads if r[2] != r[3]] == [] and overflow == 0


def test_reads_every_cycle_flag_overflow():
    """Reading every cycle stops the walk: the pending counts wrap, and the flag says so."""
    rng = random.Random(9)
    names = [f"c{k}" for k in range(4)]
    _, overflow = run(names, 300, rng, [1.0] * 4, 0.0, 1.0, min_read_gap=1)
    assert overflow == 1


def test_sized_for_the_host_cadence():
    """Sized for the host's cadence (a read every 9 cycles at most): fewer pending bits, exact at
    that cadence, and reads every other cycle overflow."""
    names = [f"c{k}" for k in range(18)]
    host, every_other = PerfCounters(names, read_gap=9), PerfCounters(names)
    host._MustUse__silence = every_other._MustUse__silence = True  # built only to be measured
    assert host.pending_bits < every_other.pending_bits
    reads, overflow = run(names, 1500, random.Random(3), [1.0] * 18, 0.0, 1.0, min_read_gap=9, read_gap=9)
    assert len(reads) > 100 and [r for r in reads if r[2] != r[3]] == [] and overflow == 0
    _, overflow = run(names, 600, random.Random(4), [1.0] * 18, 0.0, 1.0, min_read_gap=2, read_gap=9)
    assert overflow == 1


@pytest.mark.parametrize("gap", [1, 0, 2.5, True])
def test_bad_read_gap_refused(gap):
    with pytest.raises(ValueError, match="read_gap"):
        PerfCounters(("a", "b"), read_gap=gap)


@pytest.mark.parametrize("names", [(), ("a", "a"), ("a", "1b")])
def test_bad_names_refused(names):
    with pytest.raises(ValueError, match="distinct identifiers"):
        PerfCounters(names)
