"""The whole core against the golden model through the host protocol, on every exposed
intermediate (per-timestep membranes, spikes and surrogates of every layer, δ, accumulated ΔW,
updated weights, predictions), with random gaps and backpressure on the host streams.

CI-sized here: every directed edge case and a few constrained-random configs in Amaranth's
simulator, and a subset under cocotb + Verilator. The full-length regression is
``make cosim-full``. A failure names the seed, the first mismatching tensor/index/timestep and a
one-line replay command; Verilator runs write a waveform.
"""

import pytest
import torch

from spikeforge.sim.cosim_core import run_scenario_amaranth, run_scenario_verilator
from spikeforge.sim.scenario import DIRECTED, Mismatch, Trace, _bp_tensor, _Checker, make_scenario

#: constrained-random seeds in CI (each is a new config: lanes, widths, sizes, modes, batch)
RANDOM_AMARANTH = range(100, 108)
RANDOM_VERILATOR = range(200, 204)
DIRECTED_VERILATOR = ("partial-groups", "update-stochastic", "error-saturation", "single-port-gradients")


@pytest.mark.parametrize("name", DIRECTED)
def test_directed_amaranth(name):
    r = run_scenario_amaranth(name, 0)
    assert r["samples"] >= 1 and r["elements_compared"] > 0


@pytest.mark.parametrize("seed", RANDOM_AMARANTH)
def test_random_amaranth(seed):
    r = run_scenario_amaranth("random", seed)
    assert r["samples"] >= 1 and r["elements_compared"] > 0


@pytest.mark.parametrize("seed", RANDOM_VERILATOR)
def test_random_verilator(seed):
    r = run_scenario_verilator("random", seed)
    assert r["samples"] >= 1 and r["elements_compared"] > 0


@pytest.mark.parametrize("name", DIRECTED_VERILATOR)
def test_directed_verilator(name):
    r = run_scenario_verilator(name, 0)
    assert r["samples"] >= 1 and r["elements_compared"] > 0


def test_directed_cases_exercise_what_they_claim():
    """The edge cases are what their names say (so a green run means something)."""
    from spikeforge.golden import model

    sat = make_scenario("saturate-high", 0)
    cfg = sat.cfg
    tr = model.forward(cfg, sat.weights, sat.batches[0][0].spikes.reshape(cfg.network.timesteps, 1, -1))
    vmax = (1 << (cfg.formats.membrane_bits - 1)) - 1
    assert int(tr.forward[0].membrane.max()) == min(vmax, cfg.neuron.membrane_range(cfg.formats)[1])
    silent = make_scenario("silent-input", 0)
    assert all(int(s.spikes.sum()) == 0 for b in silent.batches for s in b)
    groups = make_scenario("partial-groups", 0).cfg
    assert any(n % groups.hardware.lanes for n in groups.network.layers)
    es = make_scenario("error-saturation", 0)
    emax = (1 << (es.cfg.formats.error_bits - 1)) - 1
    peak = 0
    for s in es.batches[0]:
        tr = model.forward(es.cfg, es.weights, s.input_spikes(es.cfg))
        model.backward(es.cfg, es.weights, tr, torch.tensor([s.label]))
        peak = max([peak] + [int(lb.delta.abs().max()) for lb in tr.backward])
    assert peak >= emax, f"no δ reached the error rail {emax} (peak {peak})"


def test_checker_reports_first_mismatch_with_seed_and_replay():
    """The comparison fails on one wrong element and says where, which seed, and how to replay."""
    sc = make_scenario("partial-groups", 5)
    chk = _Checker(sc, "python -m spikeforge.sim.cosim_core --scenario partial-groups --seed 5")
    ref = torch.arange(12).reshape(3, 4)
    bad = ref.clone()
    bad[2, 1] = 99
    chk.same("layer 0 membrane", ref, ref.clone(), ("timestep", "neuron"))
    with pytest.raises(Mismatch) as e:
        chk.same("layer 0 membrane", bad, ref, ("timestep", "neuron"))
    msg = str(e.value)
    assert "seed 5" in msg and "layer 0 membrane at timestep 2, neuron 1: rtl 99 != golden 9" in msg
    assert "replay: python -m spikeforge.sim.cosim_core --scenario partial-groups --seed 5" in msg


def test_missing_trace_records_are_a_mismatch():
    sc = make_scenario("partial-groups", 0)
    trace = Trace()
    trace.bp.append((0, 0, [0] * sc.cfg.hardware.lanes))
    with pytest.raises(Mismatch, match="δ groups on the trace port"):
        _bp_tensor(sc.cfg, trace.bp, 0)
