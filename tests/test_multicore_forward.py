"""Several cores run the forward pass together over the spike network (rtl/multicore.py): every
core's membranes, spikes and surrogates of every timestep equal the golden model's for its slice."""

import pytest
import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.mapper import Placement, Slice
from spikeforge.rtl.multicore import MultiCoreForward
from spikeforge.sim.amaranth_bench import assert_same, simulate


def _cfg(layers, lanes):
    return SpikeforgeConfig().replace(
        network={"layers": layers, "timesteps": 4},
        neuron={"threshold": 40, "beta": 0.875, "beta_bits": 3, "reset": "subtract"},
        formats={"membrane_bits": 12, "weight_bits": 6},
        surrogate={"kind": "triangle", "width": 64, "bits": 3},
        training={"target_true": 3, "target_false": 1},
        hardware={"lanes": lanes, "cores": 4},
    )


def _placement(layers, cuts):
    """cuts[l] = slice boundaries of LIF layer l; one slice per core, in layer order."""
    cores = []
    for l, bounds in enumerate(cuts):
        for lo, hi in zip(bounds, bounds[1:]):
            cores.append((Slice(l, lo, hi, layers[l]),))
    return Placement(tuple(layers), tuple(cores))


CASES = {
    "2-layers-4-cores": ([20, 12, 8], 4, [[0, 6, 12], [0, 4, 8]]),
    "3-layers-5-cores-uneven": ([16, 10, 9, 5], 2, [[0, 3, 10], [0, 9], [0, 2, 5]]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_cores_match_golden_per_slice(case, seed):
    layers, lanes, cuts = CASES[case]
    cfg = _cfg(layers, lanes)
    placement = _placement(layers, cuts)
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randint(-12, 20, (o, i), generator=g) for o, i in cfg.layer_shapes]
    T = cfg.network.timesteps
    x = (torch.rand(T, 1, layers[0], generator=g) < 0.5).to(torch.int64)
    gold = model.forward(cfg, weights, x)
    dut = MultiCoreForward(cfg, placement, weights, x[:, 0])
    seen = {c: [] for c in range(placement.n_cores)}

    async def run(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().until(dut.done)
        assert not ctx.get(dut.misroute)

    async def monitor(ctx):
        while True:
            for c, sl in enumerate(dut.slices):
                no = sl.fp.neuron_out
                if ctx.get(no.valid) and ctx.get(no.ready):
                    p = ctx.get(no.payload)
                    seen[c].append(p)
            await ctx.tick()

    simulate(dut, run, background=[monitor])
    spikes_total = 0
    for c, (s,) in enumerate(placement.cores):
        P = lanes
        G = -(-s.neurons // P)
        assert len(seen[c]) == T * G, f"core {c}: {len(seen[c])} groups, expected {T * G}"
        v = torch.zeros(T, G * P, dtype=torch.int64)
        sp = torch.zeros_like(v)
        sg = torch.zeros_like(v)
        for n, p in enumerate(seen[c]):
            t, grp = n // G, int(p.group)
            for k in range(P):
                v[t, grp * P + k] = int(p.membrane[k])
                sp[t, grp * P + k] = (int(p.spikes) >> k) & 1
                sg[t, grp * P + k] = int(p.surrogate[k])
        fw = gold.forward[s.layer]
        n = s.neurons
        assert_same((("membrane", v[:, :n], fw.membrane[:, 0, s.lo:s.hi]),
                     ("spikes", sp[:, :n], fw.spikes[:, 0, s.lo:s.hi]),
                     ("surrogate", sg[:, :n], fw.surr[:, 0, s.lo:s.hi])), seed,
                    f"pytest 'tests/test_multicore_forward.py::test_cores_match_golden_per_slice[{seed}-{case}]' (core {c})")
        spikes_total += int(sp.sum())
    assert spikes_total > 0, "the case should spike"


def test_more_than_one_slice_per_core_is_refused():
    cfg = _cfg([8, 4, 2], 2)
    p = Placement((8, 4, 2), ((Slice(0, 0, 4, 8), Slice(1, 0, 2, 4)),))
    with pytest.raises(ValueError, match="one slice per core"):
        MultiCoreForward(cfg, p, [torch.zeros(4, 8, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64)],
                         torch.zeros(4, 8, dtype=torch.int64))
