"""FP engine vs golden ``lif_forward``, in Amaranth's simulator: every membrane, spike and
surrogate of every timestep and group, exactly, under random input gaps and output backpressure.

A failure names the seed, the first mismatching tensor / timestep / neuron and the replay command.
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth import Elaboratable, Module
from amaranth.lib.memory import Memory

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.rtl.fp_engine import FpEngine
from spikeforge.rtl.params import CoreParams
from spikeforge.sim.amaranth_bench import assert_same, connect_fp_weights, fp_weight_words, send, simulate


class FpHarness(Elaboratable):
    """The engine plus a plain weight memory: word (input i, group g) at address i*G + g."""

    def __init__(self, params: CoreParams, weights: torch.Tensor):
        self.p = params
        self.fp = FpEngine(params)
        self.words = fp_weight_words(params, weights)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        m.submodules.fp = self.fp
        m.submodules.wmem = wmem = Memory(shape=p.lanes * p.weight_bits, depth=len(self.words), init=self.words)
        connect_fp_weights(m, self.fp, wmem, p)
        return m


def run_fp(cfg: SpikeforgeConfig, weights: torch.Tensor, inputs: torch.Tensor, seed: int, stall: float = 0.3):
    """Simulate one layer over all timesteps of ``inputs`` (T, N_in) for one sample."""
    p = CoreParams.from_config(cfg)
    T = inputs.shape[0]
    n_out = weights.shape[0]
    G = -(-n_out // p.lanes)
    dut = FpHarness(p, weights)
    fp = dut.fp
    rng = random.Random(seed)
    results = {}
    cycles = {"n": 0, "busy": 0}

    async def producer(ctx):
        ctx.set(fp.groups, G)
        ctx.set(fp.neurons, n_out)
        await ctx.tick().repeat(2)  # the geometry leads the first event (FpEngine's groups port)
        for t in range(T):
            events = [(int(i), 0, 0) for i in torch.nonzero(inputs[t]).flatten()] + [(0, 1, int(t == 0))]
            for idx, eot, fresh in events:
                await send(ctx, fp.spikes_in, {"index": idx, "eot": eot, "fresh": fresh}, rng, stall)

    async def consumer(ctx):
        got = 0
        while got < T * G:
            ctx.set(fp.neuron_out.ready, int(rng.random() >= stall))
            _, _, valid, ready, payload, busy = await ctx.tick().sample(
                fp.neuron_out.valid, fp.neuron_out.ready, fp.neuron_out.payload, fp.busy)
            cycles["n"] += 1
            cycles["busy"] += busy
            if valid and ready:
                t = got // G
                g = payload.group
                results[(t, g)] = (
                    [payload.membrane[k] for k in range(p.lanes)],
                    [(payload.spikes >> k) & 1 for k in range(p.lanes)],
                    [payload.surrogate[k] for k in range(p.lanes)],
                )
                got += 1

    simulate(dut, producer, consumer)
    v = torch.zeros(T, G * p.lanes, dtype=torch.int64)
    s = torch.zeros_like(v)
    gg = torch.zeros_like(v)
    for (t, g), (mv, ms, mg) in results.items():
        v[t, g * p.lanes:(g + 1) * p.lanes] = torch.tensor(mv)
        s[t, g * p.lanes:(g + 1) * p.lanes] = torch.tensor(ms)
        gg[t, g * p.lanes:(g + 1) * p.lanes] = torch.tensor(mg)
    return v[:, :n_out], s[:, :n_out], gg[:, :n_out], cycles


def compare(cfg, weights, inputs, seed, replay):
    golden = model.lif_forward(cfg, weights, inputs.unsqueeze(1))
    v, s, g, cycles = run_fp(cfg, weights, inputs, seed)
    assert_same((("membrane", v, golden.membrane[:, 0]), ("spikes", s, golden.spikes[:, 0]),
                 ("surrogate", g, golden.surr[:, 0])), seed, replay, ("timestep", "neuron"))
    return cycles


def random_layer(cfg: SpikeforgeConfig, seed: int, density: float):
    g = torch.Generator().manual_seed(seed)
    n_out, n_in = cfg.layer_shapes[0]
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    weights = torch.randint(-wmax - 1, wmax + 1, (n_out, n_in), generator=g, dtype=torch.int64)
    inputs = (torch.rand(cfg.network.timesteps, n_in, generator=g) < density).to(torch.int64)
    return weights, inputs


def test_digits_hidden_layer_exact():
    cfg = SpikeforgeConfig().replace(network={"layers": [64, 40], "timesteps": 6},
                                     neuron={"threshold": 300, "membrane_floor": -1024},
                                     surrogate={"kind": "triangle", "width": 2048, "bits": 4},
                                     hardware={"lanes": 8}, training={"target_true": 4, "target_false": 1})
    weights, inputs = random_layer(cfg, 1, 0.3)
    compare(cfg, weights, inputs, 1, "pytest tests/test_fp_engine.py -k digits_hidden")


CASES = [
    # (lanes, layers, reset, surrogate, leak_rounding, membrane_bits, beta)
    (1, [5, 3], "subtract", "rect", "half_up", 12, 0.75),
    (2, [9, 5], "zero", "triangle", "floor", 10, 0.875),
    (4, [16, 13], "subtract", "triangle", "half_up", 9, 1.0),
    (8, [12, 8], "zero", "rect", "floor", 16, 0.5),
    (4, [7, 33], "subtract", "rect", "floor", 8, 0.9375),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_configs_exact(case, seed):
    lanes, layers, reset, surrogate, rounding, vbits, beta = CASES[case]
    vmax = (1 << (vbits - 1)) - 1
    thr = max(1, vmax // 3)
    width = 1 << max(4, (vbits - 3)) if surrogate == "triangle" else thr // 2 + 1
    cfg = SpikeforgeConfig().replace(
        network={"layers": layers, "timesteps": 5},
        neuron={"threshold": thr, "beta": beta, "beta_bits": 4, "reset": reset, "leak_rounding": rounding},
        formats={"membrane_bits": vbits, "weight_bits": 6},
        surrogate={"kind": surrogate, "width": width, "bits": 3 if surrogate == "triangle" else 1},
        hardware={"lanes": lanes},
        training={"target_true": 4, "target_false": 1},
    )
    weights, inputs = random_layer(cfg, 100 * case + seed, [0.1, 0.5, 1.0][seed])
    # saturate toward both rails now and then: scale some weights up
    compare(cfg, weights, inputs, seed,
            f"pytest 'tests/test_fp_engine.py::test_random_configs_exact[{seed}-{case}]'")


@pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
def test_busy_cycles_follow_the_work_bound(density):
    """Busy cycles (no stalls) within 1.25x of the bound sum_t nnz(x[t])*G + T*G, and falling
    with input density: the engine never pays for inputs that did not spike."""
    cfg = SpikeforgeConfig().replace(network={"layers": [64, 128], "timesteps": 8},
                                     neuron={"threshold": 300}, hardware={"lanes": 8},
                                     training={"target_true": 4, "target_false": 1})
    weights, inputs = random_layer(cfg, 7, density)
    p = CoreParams.from_config(cfg)
    G = p.max_groups
    golden = model.lif_forward(cfg, weights, inputs.unsqueeze(1))
    v, s, g, cycles = run_fp(cfg, weights, inputs, 7, stall=0.0)
    assert torch.equal(v, golden.membrane[:, 0])
    bound = int(inputs.sum()) * G + cfg.network.timesteps * G
    ratio = cycles["busy"] / bound
    print(f"\n  FP density {density}: busy {cycles['busy']} bound {bound} ratio {ratio:.3f}")
    assert ratio <= 1.25
