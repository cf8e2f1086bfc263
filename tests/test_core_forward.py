"""The core's forward half vs golden ``forward``: membranes, spikes and surrogates of every layer
and timestep, and the predicted class, for real digits samples through the on-chip encoder."""

import pytest
import torch

from spikeforge.config import load_config
from spikeforge.data import load_dataset
from spikeforge.golden import encoder, model
from spikeforge.rtl.core import Core
from spikeforge.sim.amaranth_bench import simulate


def run_core(cfg, weights, pixels, seed):
    P = cfg.hardware.lanes
    init = [{(j, i): int(w[j, i]) for j in range(w.shape[0]) for i in range(w.shape[1])} for w in weights]
    dut = Core(cfg, init)
    L = cfg.network.layers
    seen = {}

    async def bench(ctx):
        H0 = -(-L[0] // P)
        for h in range(H0):
            ctx.set(dut.px_wr_en, 1)
            ctx.set(dut.px_wr_group, h)
            ctx.set(dut.px_wr_data, [int(pixels[h * P + k]) if h * P + k < L[0] else 0 for k in range(P)])
            await ctx.tick()
        ctx.set(dut.px_wr_en, 0)
        ctx.set(dut.seed, seed)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        counters = {}
        while True:
            _, _, done, ov, layer, obs = await ctx.tick().sample(dut.done, dut.obs_valid, dut.obs_layer, dut.obs)
            if ov:
                k = counters.get(layer, 0)
                counters[layer] = k + 1
                seen[(layer, k)] = ([obs.membrane[q] for q in range(P)], [(obs.spikes >> q) & 1 for q in range(P)],
                                    [obs.surrogate[q] for q in range(P)], obs.group)
            if done and counters:
                break
        seen["prediction"] = ctx.get(dut.prediction)

    simulate(dut, bench)
    return seen


def small_cfg():
    cfg = load_config("configs/digits.toml")
    return cfg.replace(network={"layers": [64, 24, 10], "timesteps": 4}, hardware={"lanes": 8},
                       training={"target_true": 3, "target_false": 1})


@pytest.mark.parametrize("sample", [0, 1])
def test_core_inference_matches_golden(sample):
    cfg = small_cfg()
    data = load_dataset("digits", cfg.formats.pixel_bits)
    weights = model.init_weights(cfg)
    pixels = data.test_x[sample]
    seed = encoder.sample_seed(1, 7, sample)
    x = encoder.encode(pixels.unsqueeze(0), torch.tensor([seed]), cfg.network.timesteps, cfg.formats.pixel_bits)
    golden = model.forward(cfg, weights, x)
    assert int(golden.forward[0].spikes.sum()) > 0, "degenerate sample: the hidden layer never fires"
    seen = run_core(cfg, weights, pixels, seed)
    P = cfg.hardware.lanes
    for l, lf in enumerate(golden.forward):
        n = lf.membrane.shape[2]
        G = -(-n // P)
        for t in range(cfg.network.timesteps):
            for g in range(G):
                mv, ms, mg, group = seen[(l, t * G + g)]
                assert group == g
                for q in range(P):
                    j = g * P + q
                    if j >= n:
                        continue
                    for name, got, ref in (("membrane", mv[q], lf.membrane[t, 0, j]), ("spike", ms[q], lf.spikes[t, 0, j]),
                                           ("surrogate", mg[q], lf.surr[t, 0, j])):
                        assert got == int(ref), f"layer {l} t {t} neuron {j}: {name} rtl {got} != golden {int(ref)}"
    assert seen["prediction"] == int(model.predict(golden.counts, golden.membrane_sum)[0])
