"""LfsrDraws vs golden.lfsr, in Amaranth's simulator: every cycle's draws and state, exactly, under
random ``next`` / ``take`` / ``width`` / ``load`` sequences.

The reference is the one-step loop (``golden.lfsr.draw``) and, for the draws on the output, the
vectorised ``draw_stream``: the RTL must agree with both. A failure names the configuration, the
seed, the cycle and the replay command.
"""

from __future__ import annotations

import gc
import random
import warnings

import pytest
import torch
from amaranth.hdl import UnusedElaboratable

from spikeforge.golden import lfsr as golden_lfsr
from spikeforge.rtl.lfsr import LfsrDraws
from spikeforge.sim.amaranth_bench import simulate

CASES = [
    # (bits, count, short_counts)
    (1, 1, ()),
    (8, 4, ()),
    (16, 8, (3, 5)),
    ((14, 15, 16), 8, (1, 2, 7)),
    ((3, 30), 2, (1,)),
    (13, 3, (1, 2)),
]


def _ref_draws(state: int, count: int, k: int) -> list[int]:
    draws, _ = golden_lfsr.draw_stream(torch.tensor([state]), count, k)
    return [int(v) for v in draws[0]]


@pytest.mark.parametrize("onehot", [False, True])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF])
def test_draws_and_state_match_golden(case, seed, onehot):
    bits, count, shorts = CASES[case]
    widths = (bits,) if isinstance(bits, int) else bits
    init_seed = (seed * 7919 + 3) & 0xFFFFFFFF
    dut = LfsrDraws(bits, count, short_counts=shorts, init_seed=init_seed, width_onehot=onehot)
    rng = random.Random(1000 * case + seed)
    replay = f"pytest 'tests/test_lfsr_rtl.py::test_draws_and_state_match_golden[{seed}-{case}-{onehot}]'"

    def where(cycle, what, got, want):
        return (f"case {CASES[case]}, seed {seed:#x}, cycle {cycle}: {what}: rtl {got} != golden {want}"
                f"\n  replay: {replay}")

    async def bench(ctx):
        state = golden_lfsr.seed_state(init_seed)
        for cycle in range(80):
            k = rng.choice(widths)
            take = rng.choice(shorts + (count,)) if shorts else count
            if len(widths) > 1:
                ctx.set(dut.width, 1 << widths.index(k) if onehot else k)
            if shorts:
                ctx.set(dut.take, take)
            load = cycle == 0 or rng.random() < 0.05
            new_seed = rng.choice([0, seed, rng.getrandbits(32)])
            nxt = rng.random() < 0.7
            ctx.set(dut.load, load and cycle > 0)  # cycle 0 checks the reset state instead
            ctx.set(dut.seed, new_seed)
            ctx.set(dut.next, nxt)
            got_state = ctx.get(dut.state)
            assert got_state == state, where(cycle, "state", hex(got_state), hex(state))
            got = [ctx.get(dut.draws[m]) for m in range(count)]
            want = _ref_draws(state, count, k)
            assert got == want, where(cycle, f"draws (width {k})", got, want)
            if load and cycle > 0:
                state = golden_lfsr.seed_state(new_seed)
            elif nxt:
                for _ in range(take):
                    _, state = golden_lfsr.draw(state, k)
            await ctx.tick()

    simulate(dut, bench)


def test_seed_zero_loads_state_one_and_long_run_matches_stream():
    """``load`` of seed 0 gives state 1; 50 full advances land where golden LfsrStream does."""
    dut = LfsrDraws(16, 8)
    stream = golden_lfsr.LfsrStream(0)

    async def bench(ctx):
        ctx.set(dut.load, 1)
        ctx.set(dut.seed, 0)
        await ctx.tick()
        ctx.set(dut.load, 0)
        assert ctx.get(dut.state) == 1
        ctx.set(dut.next, 1)
        for cycle in range(50):
            want = [int(v) for v in stream.take(8, 16)]
            got = [ctx.get(dut.draws[m]) for m in range(8)]
            assert got == want, f"cycle {cycle}: rtl {got} != golden {want}"
            await ctx.tick()
        assert ctx.get(dut.state) == stream.state

    simulate(dut, bench)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bits=0, count=4), "draw width"),
        (dict(bits=31, count=4), "draw width"),
        (dict(bits=(), count=4), "at least one"),
        (dict(bits=(8, 8), count=4), "distinct"),
        (dict(bits=8, count=0), "count"),
        (dict(bits=8, count=4, short_counts=(4,)), "short counts"),
        (dict(bits=8, count=4, short_counts=(0,)), "short counts"),
        (dict(bits=8, count=4, init_seed=-1), "init_seed"),
        (dict(bits=8, count=4, init_seed=1 << 32), "init_seed"),
    ],
)
def test_bad_parameters_are_refused(kwargs, match):
    with warnings.catch_warnings():
        # the half-built component is never elaborated, by design
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            LfsrDraws(**kwargs)
        gc.collect()
