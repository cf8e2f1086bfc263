"""BP engine vs golden ``layer_backward``, in Amaranth's simulator: δ[t] of every neuron and the
error ε'[t] sent to the previous layer, every timestep, exactly, under random stalls."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth import Elaboratable, Module

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.rtl.bp_engine import BpEngine
from spikeforge.rtl.params import CoreParams
from spikeforge.rtl.skewed_memory import SkewedMemory
from spikeforge.sim.amaranth_bench import assert_same, send, simulate


class BpHarness(Elaboratable):
    def __init__(self, params: CoreParams, weights: torch.Tensor, partial: bool = False, overlap: bool = False):
        self.bp = BpEngine(params, partial=partial, overlap=overlap)
        n_out, n_in = weights.shape
        init = {(j, i): int(weights[j, i]) for j in range(n_out) for i in range(n_in)}
        self.wmem = SkewedMemory(lanes=params.lanes, width=params.weight_bits,
                                 max_outputs=params.max_neurons, max_inputs=params.max_inputs, init=init)

    def elaborate(self, platform):
        m = Module()
        m.submodules.bp, m.submodules.wmem = self.bp, self.wmem
        m.d.comb += [
            self.wmem.rd_en.eq(self.bp.w_rd_en),
            self.wmem.rd_row.eq(1),
            self.wmem.rd_major.eq(self.bp.w_rd_major),
            self.wmem.rd_group.eq(self.bp.w_rd_group),
            self.bp.w_rd_data.eq(self.wmem.rd_data),
        ]
        return m


def run_bp(cfg, weights, error_in, surr, spikes, seed, stall=0.3, partial=False, overlap=False):
    """error_in/surr/spikes: (T, N) for one sample; returns delta (T, N), error_out (T, N_in) and
    stats (busy cycles, events, cycles until the last output)."""
    p = CoreParams.from_config(cfg)
    P = p.lanes
    T, n_out = error_in.shape
    n_in = weights.shape[1]
    G, H = -(-n_out // P), -(-n_in // P)
    dut = BpHarness(p, weights, partial, overlap)
    bp = dut.bp
    rng = random.Random(seed)
    deltas, errors = {}, {}
    stats = {"busy": 0, "events": 0, "cycles": 0, "round_starts": 0}

    def lanes(x, t, g):
        return [int(x[t, g * P + k]) if g * P + k < n_out else 0 for k in range(P)]

    async def driver(ctx):
        ctx.set(bp.groups, G)
        ctx.set(bp.in_groups, H)
        for t in range(T - 1, -1, -1):
            await ctx.tick().until(bp.done)
            ctx.set(bp.start, 1)
            ctx.set(bp.first, int(t == T - 1))
            ctx.set(bp.propagate, 1)
            await ctx.tick()
            ctx.set(bp.start, 0)
            for g in range(G):
                await send(ctx, bp.error_in, {"error": lanes(error_in, t, g), "surrogate": lanes(surr, t, g),
                                              "spikes": sum(int(spikes[t, g * P + k]) << k
                                                            for k in range(P) if g * P + k < n_out)}, rng, stall)

    async def sink(ctx):
        n_d = n_e = 0
        while len(errors) < T * H or len(deltas) < T * G:
            ctx.set(bp.delta_out.ready, int(rng.random() >= stall))
            ctx.set(bp.error_out.ready, int(rng.random() >= stall))
            _, _, dv, dr, dp, ev, er, ep, busy, event, rs = await ctx.tick().sample(
                bp.delta_out.valid, bp.delta_out.ready, bp.delta_out.payload,
                bp.error_out.valid, bp.error_out.ready, bp.error_out.payload, bp.busy, bp.event, bp.round_start)
            stats["busy"] += busy
            stats["events"] += event
            stats["cycles"] += 1
            stats["round_starts"] += rs
            if dv and dr:
                deltas[(T - 1 - n_d // G, dp.group)] = [dp.delta[k] for k in range(P)]
                n_d += 1
            if ev and er:
                errors[(T - 1 - n_e // H, ep.group)] = [ep.delta[k] for k in range(P)]
                n_e += 1

    simulate(dut, driver, sink)
    d = torch.zeros(T, G * P, dtype=torch.int64)
    e = torch.zeros(T, H * P, dtype=torch.int64)
    for (t, g), v in deltas.items():
        d[t, g * P:(g + 1) * P] = torch.tensor(v)
    for (t, h), v in errors.items():
        e[t, h * P:(h + 1) * P] = torch.tensor(v)
    return d[:, :n_out], e[:, :n_in], stats


def check(cfg, seed, density, replay, overlap=False):
    g = torch.Generator().manual_seed(seed)
    n_out, n_in = cfg.layer_shapes[-1]
    T = cfg.network.timesteps
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    weights = torch.randint(-wmax - 1, wmax + 1, (n_out, n_in), generator=g, dtype=torch.int64)
    x = (torch.rand(T, 1, n_in, generator=g) < 0.5).to(torch.int64)
    fw = model.lif_forward(cfg, weights, x)
    emax = (1 << (cfg.formats.error_bits - 1)) - 1
    err = torch.randint(-emax - 1, emax + 1, (T, 1, n_out), generator=g, dtype=torch.int64)
    err = err * (torch.rand(T, 1, n_out, generator=g) < density)  # sparse errors: zero δ costs nothing
    lb = model.layer_backward(cfg, weights, fw, x, err, need_error_out=True)
    d, e, stats = run_bp(cfg, weights, err[:, 0], fw.surr[:, 0], fw.spikes[:, 0], seed, overlap=overlap)
    assert_same((("delta", d, lb.delta[:, 0]), ("error_out", e, lb.error_out[:, 0])), seed, replay)
    assert stats["events"] == int((lb.delta != 0).sum()), "one propagation event per non-zero δ"
    return stats


CASES = [
    # lanes, layers, reset, surrogate, error_bits, error_shift, rounding
    (1, [3, 4], "subtract", "rect", 10, 2, "half_up"),
    (2, [5, 3], "zero", "triangle", 12, 5, "floor"),
    (4, [9, 6], "subtract", "triangle", 16, 7, "half_even"),
    (8, [20, 10], "zero", "rect", 8, 0, "half_up"),
    (4, [4, 17], "subtract", "rect", 12, 4, "half_even"),
]


def case_config(case: int, timesteps: int, large_memories: str = "dual_port", min_error_shift: int = 0):
    lanes, layers, reset, surrogate, ebits, eshift, rounding = CASES[case]
    return SpikeforgeConfig().replace(
        network={"layers": layers, "timesteps": timesteps},
        neuron={"threshold": 100, "beta": 0.8125, "beta_bits": 4, "reset": reset},
        formats={"membrane_bits": 12, "weight_bits": 7, "error_bits": ebits},
        surrogate={"kind": surrogate, "width": 256 if surrogate == "triangle" else 90,
                   "bits": 3 if surrogate == "triangle" else 1},
        training={"target_true": 4, "target_false": 1, "error_shift": max(eshift, min_error_shift),
                  "error_rounding": rounding, "output_error_shift": 0},
        hardware={"lanes": lanes, "large_memories": large_memories},
    )


# single_port: the small-FPGA layout (CoreParams.compact), where the accumulate's operands
# travel through a block RAM delay line; overlap: dual_port with two accumulator banks, the
# error out running beside the next timestep (the multi-core cores' build)
@pytest.mark.parametrize("layout", ["dual_port", "single_port", "overlap"])
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_configs_exact(case, seed, layout):
    overlap = layout == "overlap"
    cfg = case_config(case, timesteps=5, large_memories="dual_port" if overlap else layout)
    stats = check(cfg, seed + 10 * case, [0.1, 0.5, 1.0][seed],
                  f"pytest 'tests/test_bp_engine.py::test_random_configs_exact[{seed}-{case}-{layout}]'", overlap)
    assert stats["round_starts"] == (5 if overlap else 0), "one hand-over to the error out per timestep"


@pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
def test_busy_cycles_follow_the_work_bound(density):
    """Busy cycles within 1.25x of sum_t (G + nnz(delta[t])*H + H): zero deltas cost nothing."""
    cfg = SpikeforgeConfig().replace(
        network={"layers": [64, 128], "timesteps": 8}, neuron={"threshold": 100, "reset": "zero"},
        formats={"error_bits": 16}, surrogate={"kind": "rect", "width": 1},
        training={"target_true": 4, "target_false": 1, "error_shift": 8}, hardware={"lanes": 8})
    g = torch.Generator().manual_seed(3)
    n_out, n_in = 128, 64
    T = 8
    weights = torch.randint(-128, 128, (n_out, n_in), generator=g, dtype=torch.int64)
    x = (torch.rand(T, 1, n_in, generator=g) < 0.5).to(torch.int64)
    fw = model.lif_forward(cfg, weights, x)
    # the surrogate decides which deltas are non-zero: force the requested density, zero reset
    # masks the carry at spikes; fully random surrogate bits keep δ sparse where asked
    surr = (torch.rand(T, 1, n_out, generator=g) < density).to(torch.int64)
    spikes = torch.ones_like(surr)
    fw = model.LayerForward(current=fw.current, membrane=fw.membrane, spikes=spikes, surr=surr)
    err = torch.randint(1, 1000, (T, 1, n_out), generator=g, dtype=torch.int64)
    lb = model.layer_backward(cfg, weights, fw, x, err, need_error_out=True)
    d, e, stats = run_bp(cfg, weights, err[:, 0], surr[:, 0], spikes[:, 0], 3, stall=0.0)
    assert torch.equal(d, lb.delta[:, 0]) and torch.equal(e, lb.error_out[:, 0])
    G, H = 16, 8
    bound = T * (G + H) + int((lb.delta != 0).sum()) * H
    ratio = stats["busy"] / bound
    print(f"\n  BP delta density {density}: busy {stats['busy']} bound {bound} ratio {ratio:.3f}")
    assert ratio <= 1.25


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("case", [0, 2, 3])
def test_partial_mode_sends_the_unrounded_sums(case, overlap):
    """A slice of a layer on a multi-core accelerator sends sum_j W[j, i] delta[t, j] unrounded:
    exactly golden ``error_partial`` of its rows; rounding happens at the receiver."""
    cfg = case_config(case, timesteps=4, min_error_shift=3)
    g = torch.Generator().manual_seed(case)
    n_out, n_in = cfg.layer_shapes[-1]
    T = cfg.network.timesteps
    weights = torch.randint(-64, 64, (n_out, n_in), generator=g, dtype=torch.int64)
    x = (torch.rand(T, 1, n_in, generator=g) < 0.5).to(torch.int64)
    fw = model.lif_forward(cfg, weights, x)
    emax = (1 << (cfg.formats.error_bits - 1)) - 1
    err = torch.randint(-emax - 1, emax + 1, (T, 1, n_out), generator=g, dtype=torch.int64)
    delta = model.layer_delta(cfg, fw, err)
    d, e, _ = run_bp(cfg, weights, err[:, 0], fw.surr[:, 0], fw.spikes[:, 0], case, partial=True, overlap=overlap)
    want = model.error_partial(cfg, weights, delta)[:, 0]
    assert_same((("delta", d, delta[:, 0]), ("partial", e, want)), case,
                f"pytest 'tests/test_bp_engine.py::test_partial_mode_sends_the_unrounded_sums[{case}-{overlap}]'")
    assert not torch.equal(want, model.error_finish(cfg, want)), "the case should need rounding"


def test_overlap_hides_the_error_out():
    """With two accumulator banks the next timestep's δ and propagation run while the error out
    puts out the last one's: over T timesteps, at least (T-1)·H cycles fewer, the same outputs."""
    cfg = case_config(1, timesteps=6).replace(network={"layers": [20, 6]})  # 2 lanes: H = 10, G = 3
    g = torch.Generator().manual_seed(7)
    n_out, n_in = cfg.layer_shapes[-1]
    T, H = 6, -(-n_in // 2)
    weights = torch.randint(-64, 64, (n_out, n_in), generator=g, dtype=torch.int64)
    x = (torch.rand(T, 1, n_in, generator=g) < 0.5).to(torch.int64)
    fw = model.lif_forward(cfg, weights, x)
    err = torch.randint(-2000, 2000, (T, 1, n_out), generator=g, dtype=torch.int64)
    runs = {ov: run_bp(cfg, weights, err[:, 0], fw.surr[:, 0], fw.spikes[:, 0], 7, stall=0.0, overlap=ov)
            for ov in (False, True)}
    (d0, e0, s0), (d1, e1, s1) = runs[False], runs[True]
    assert torch.equal(d0, d1) and torch.equal(e0, e1)
    print(f"\n  cycles: one bank {s0['cycles']}, two banks {s1['cycles']} (H = {H}, T = {T})")
    assert s1["cycles"] <= s0["cycles"] - (T - 1) * H


def test_overlap_needs_the_dual_port_layout():
    with pytest.raises(ValueError, match="dual-port"):
        BpEngine(CoreParams.from_config(case_config(0, 4, large_memories="single_port")), overlap=True)
