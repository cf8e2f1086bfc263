"""The core trains: forward, BP, WG over a mini-batch and the update, against the golden model —
every δ of every layer and timestep, and the updated weights, exactly."""

import pytest
import torch

from spikeforge.config import load_config
from spikeforge.data import load_dataset
from spikeforge.golden import GoldenBackend, encoder
from spikeforge.rtl.core import Core
from spikeforge.rtl.skewed_memory import read_matrix
from spikeforge.sim.amaranth_bench import simulate


def small_cfg(**training):
    cfg = load_config("configs/digits.toml")
    return cfg.replace(network={"layers": [64, 24, 10], "timesteps": 4}, hardware={"lanes": 8},
                       training={"target_true": 3, "target_false": 1, "batch_size": 2, "lr_shift": 9,
                                 "lr_decay_epochs": [], **training})


@pytest.mark.parametrize("rounding", ["stochastic", "half_even"])
def test_one_minibatch_matches_golden(rounding):
    cfg = small_cfg(update_rounding=rounding)
    P = cfg.hardware.lanes
    L = cfg.network.layers
    data = load_dataset("digits", cfg.formats.pixel_bits)
    idx = torch.tensor([3, 11])
    pixels, labels = data.train_x[idx], data.train_y[idx]
    seeds = torch.tensor([encoder.sample_seed(1, 0, int(i)) for i in idx])
    gold = GoldenBackend(cfg)
    w0 = [w.clone() for w in gold.weights]
    # golden, one sample at a time so each sample's deltas can be compared
    traces = []
    for b in range(2):
        from spikeforge.golden import model
        tr = model.forward(cfg, w0, gold.encode(pixels[b:b + 1], seeds[b:b + 1]))
        model.backward(cfg, w0, tr, labels[b:b + 1])
        traces.append(tr)
    gold.train_batch(pixels, seeds, labels)  # the same batch as one update
    init = [{(j, i): int(w[j, i]) for j in range(w.shape[0]) for i in range(w.shape[1])} for w in w0]
    dut = Core(cfg, init)
    got_w = {}
    deltas = [{}, {}]

    async def bench(ctx):
        H0 = -(-L[0] // P)
        for b in range(2):
            for h in range(H0):
                ctx.set(dut.px_wr_en, 1)
                ctx.set(dut.px_wr_group, h)
                ctx.set(dut.px_wr_data, [int(pixels[b, h * P + k]) for k in range(P)])
                await ctx.tick()
            ctx.set(dut.px_wr_en, 0)
            ctx.set(dut.seed, int(seeds[b]))
            ctx.set(dut.label, int(labels[b]))
            ctx.set(dut.train, 1)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            count = {}
            while True:
                _, _, done, v, layer, obs = await ctx.tick().sample(dut.done, dut.bp_obs_valid, dut.bp_obs_layer,
                                                                   dut.bp_obs)
                if v:
                    k = count.get(layer, 0)
                    count[layer] = k + 1
                    deltas[b][(layer, k)] = (obs.group, [obs.delta[q] for q in range(P)])
                if done and count.get(0):
                    break
        ctx.set(dut.lr_shift, cfg.training.lr_shift)
        ctx.set(dut.update, 1)
        await ctx.tick()
        ctx.set(dut.update, 0)
        await ctx.tick()
        await ctx.tick().until(dut.done)
        for l in range(len(L) - 1):
            got_w[l] = torch.tensor(read_matrix(ctx, dut.weights[l], L[l + 1], L[l]))

    simulate(dut, bench)
    T = cfg.network.timesteps
    for b in range(2):
        for l, lb in enumerate(traces[b].backward):
            n = lb.delta.shape[2]
            G = -(-n // P)
            for k in range(T * G):
                t = T - 1 - k // G
                group, lanes = deltas[b][(l, k)]
                for q in range(P):
                    j = group * P + q
                    if j < n:
                        assert lanes[q] == int(lb.delta[t, 0, j]), f"sample {b} layer {l} t {t} neuron {j}: delta"
    assert any(int(lb.delta.abs().sum()) for tr in traces for lb in tr.backward), "no error: test would prove little"
    for l, w in enumerate(gold.weights):
        bad = torch.nonzero(got_w[l] != w)
        assert not len(bad), f"layer {l}: first weight mismatch at {bad[0].tolist()}: " \
                             f"rtl {int(got_w[l][tuple(bad[0])])} != golden {int(w[tuple(bad[0])])}"
    assert any(not torch.equal(a, b) for a, b in zip(w0, gold.weights)), "update changed nothing"
