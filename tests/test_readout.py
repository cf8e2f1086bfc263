"""Readout vs golden: counts, prediction (count, then membrane sum, then lowest index), output error."""

import random

import pytest
import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.rtl.readout import Readout
from spikeforge.sim.amaranth_bench import simulate


# (4, 3): a single group, read back-to-back through the transparent port
@pytest.mark.parametrize("lanes, n_out, loss", [(1, 3, "count_hinge"), (4, 10, "count_mse"), (8, 10, "count_hinge"),
                                                 (2, 5, "count_mse"), (4, 3, "count_hinge")])
@pytest.mark.parametrize("seed", range(4))
def test_readout_matches_golden(lanes, n_out, loss, seed):
    T = 6
    cfg = SpikeforgeConfig().replace(
        network={"layers": [4, n_out], "timesteps": T},
        formats={"membrane_bits": 8, "error_bits": 8},
        neuron={"threshold": 20},
        training={"target_true": 5, "target_false": 1, "loss": loss, "output_error_shift": 3},
        hardware={"lanes": lanes})
    rng = random.Random(seed)

    def sample(tie: bool):
        # few distinct values so that ties in count and in membrane sum happen
        spikes = torch.tensor([[rng.random() < 0.5 for _ in range(n_out)] for _ in range(T)], dtype=torch.int64)
        mem = torch.tensor([[rng.choice([-3, 0, 7, 21]) for _ in range(n_out)] for _ in range(T)], dtype=torch.int64)
        if tie and n_out >= 3 and seed % 2 == 0:
            # exact (count, sum) tie between the first and last neuron at the top: lowest index wins
            spikes[:, 0] = spikes[:, -1] = 1
            mem[:, -1] = mem[:, 0]
        elif tie and n_out >= 3:
            # equal top counts, the membrane sum decides
            spikes[:, 1] = spikes[:, 2] = 1
            mem[:, 1], mem[:, 2] = 0, 7
        return spikes, mem, rng.randrange(n_out)

    # two samples through one readout: the second must see nothing of the first (the clear)
    samples = [sample(False), sample(True)]
    dut = Readout(cfg)
    G = -(-n_out // lanes)

    async def bench(ctx):
        for spikes, mem, label in samples:
            counts, msum = spikes.sum(0, keepdim=True), mem.sum(0, keepdim=True)
            want_pred = int(model.predict(counts, msum)[0])
            want_err = model.output_error(cfg, counts, torch.tensor([label]))[0]
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for t in range(T):
                for g in range(G):
                    lanes_j = [g * lanes + k for k in range(lanes)]
                    ctx.set(dut.neuron_in.payload, {
                        "group": g,
                        "membrane": [int(mem[t, j]) if j < n_out else 0 for j in lanes_j],
                        "spikes": sum(int(spikes[t, j]) << k for k, j in enumerate(lanes_j) if j < n_out),
                        "surrogate": [0] * lanes})
                    ctx.set(dut.neuron_in.valid, 1)
                    await ctx.tick()
                    ctx.set(dut.neuron_in.valid, 0)
                    if rng.random() < 0.3:
                        await ctx.tick()
            ctx.set(dut.label, label)
            ctx.set(dut.decide, 1)
            await ctx.tick()
            ctx.set(dut.decide, 0)
            await ctx.tick().until(dut.decided)
            assert ctx.get(dut.prediction) == want_pred, (counts, msum)
            for g in range(G):
                ctx.set(dut.err_group, g)
                await ctx.delay(1e-9)
                for k in range(lanes):
                    j = g * lanes + k
                    if j < n_out:
                        assert ctx.get(dut.err_data[k]) == int(want_err[j]), (j, counts, label)

    simulate(dut, bench)
