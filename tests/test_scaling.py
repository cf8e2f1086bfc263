"""The scaling benchmark's cycle model: one core never idles, N cores respect the work bound and
the dependencies, weights are identical at every core count, and the traffic terms add up."""

import pytest
import torch

from spikeforge.config import load_config
from spikeforge.data import load_dataset
from spikeforge.golden.multicore import MultiCoreGolden
from spikeforge.mapper import place
from spikeforge.scaling import bench_scaling, core_tasks, schedule_batch, traffic_model
from spikeforge.train import _seeds

CFG = load_config("configs/deep-20core.toml").replace(training={"batch_size": 8})


def _batch_tasks(n):
    pl = place(CFG.network.layers, n, 1 << 30, 1 << 40, align=CFG.hardware.lanes)
    be = MultiCoreGolden(CFG, placement=pl)
    be.activity = []
    data = load_dataset("digits", 8, 0)
    idx = torch.arange(8)
    be.train_batch(data.train_x[idx], _seeds(1, 0, idx), data.train_y[idx])
    return pl, core_tasks(CFG, be.activity[-1], 8)


def test_one_core_runs_every_task_back_to_back():
    pl, tasks = _batch_tasks(1)
    assert schedule_batch(tasks, 1, 4, 8, [100], buffers=4) == sum(t.cycles for t in tasks) + 100


@pytest.mark.parametrize("n", [2, 5, 8])
def test_many_cores_bounded_by_work_and_by_one_samples_chain(n):
    pl, tasks = _batch_tasks(n)
    work = [0] * n
    for t in tasks:
        work[t.core] += t.cycles
    total = schedule_batch(tasks, n, 4, 8, [0] * n, buffers=4)
    assert total >= max(work)
    # one sample's forward through every layer and backward down again is a chain of dependent tasks
    chain = sum(max(t.cycles for t in tasks if t.sample == 0 and t.layer == l and t.backward == bw)
                for l in range(4) for bw in (False, True))
    assert total >= chain
    assert total <= sum(work) + 10_000  # never worse than one core, up to the network latency
    assert schedule_batch(tasks, n, 4, 8, [0] * n, buffers=1) >= total  # fewer buffers never help


def test_traffic_terms_add_up():
    t = traffic_model(CFG)
    dense = sum(t["terms"]["dense BPTT"].values())
    assert abs(dense - t["dense_bptt_bytes_per_sample"]) < 1
    assert t["bytes_per_sample"] == sum(t["terms"]["this dataflow"].values())
    assert 0 < t["traffic_ratio"] < t["traffic_ratio_weights_streamed"] < 1


def test_bench_rows_and_same_weights_on_every_count():
    r = bench_scaling(CFG, core_counts=(1, 2, 4), batches=1, progress=False)
    assert [row["cores"] for row in r["rows"]] == [1, 2, 4]
    assert r["rows"][0]["efficiency"] == 1.0
    assert r["weights_identical_across_core_counts"] and len(set(r["weights_sha256"].values())) == 1
    assert all(0 < row["efficiency"] <= 1.0 for row in r["rows"])
    assert r["placement"]["neuron_cost_per_layer"] and len(r["placement"]["neuron_cost_per_layer"]) == 4


@pytest.mark.parametrize("cores, msg", [("0,4", "--cores must list core counts from 1 to 20"),
                                        ("two", "--cores must be comma-separated integers")])
def test_bench_scaling_refuses_bad_core_counts(cores, msg, capsys):
    from spikeforge.cli import main

    assert main(["bench", "scaling", "--rtl", "--cores", cores, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err


def test_goal_is_judged_only_with_one_eight_and_twenty_cores(capsys):
    """A run without the 1-core baseline or without 8 and 20 cores does not claim the goal
    (an 8-core row alone has efficiency 1.0 against itself)."""
    from spikeforge.scaling import _goal, scaling_summary

    assert _goal(True, {8: 1.0}, 0.01) is None
    assert _goal(True, {1: 1.0, 2: 0.9, 4: 0.9}, 0.01) is None
    assert _goal(True, {1: 1.0, 8: 0.8, 20: 0.7}, 0.01) is True
    assert _goal(True, {1: 1.0, 8: 0.79, 20: 0.9}, 0.01) is False
    assert _goal(False, {1: 1.0, 8: 0.9, 20: 0.9}, 0.01) is False
    r = bench_scaling(CFG, core_counts=(1, 2), batches=1, progress=False)
    assert r["goal_met"] is None and "not judged" in scaling_summary(r)


def test_measured_layer_costs_are_work_per_neuron_and_sample():
    """The RTL profile for hardware.neuron_cost: a layer's cores' FP busy + BP busy + WG-alone
    cycles, per neuron and sample; waits (the other cycle counts) are not work. A core holding
    two layers makes the split unknowable: None."""
    from spikeforge.mapper import place_by_layer
    from spikeforge.scaling import measured_layer_costs

    p = place_by_layer((8, 16, 8), 3, 64, 4096, align=8)  # L1 on two cores of 8, L2 on one of 8
    assert [len(h) for h in p.cores] == [1, 1, 1]
    core = dict(fp_busy=0, bp_busy=0, wg_cycles=0, fp_cycles=10**6, bp_cycles=10**6, wg_busy=10**6)
    counters = [dict(core, fp_busy=100, bp_busy=20, wg_cycles=40), dict(core, fp_busy=60, bp_busy=60, wg_cycles=0),
                dict(core, fp_busy=8, bp_busy=8, wg_cycles=0)]
    assert measured_layer_costs(p, counters, samples=2) == [round(280 / 32), 1]
    two = place_by_layer((8, 16, 8), 1, 64, 4096, align=8)
    assert measured_layer_costs(two, counters[:1], samples=2) is None
