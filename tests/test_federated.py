"""Federated training: the integer FedAvg contract, the shards, and 5 workers over torch.distributed
(gloo) against an in-process replay, on golden and on the core's RTL."""

from fractions import Fraction
import random

import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import load_config
from spikeforge.data import load_dataset
from spikeforge.federated import FederatedOptions, fed_average, run_federated, shard_indices, worker_config, worker_lr_shift
from spikeforge.golden import GoldenBackend, model
from spikeforge.golden.backend import worker_update_seed
from spikeforge.train import train_epoch, weights_sha256


def test_fed_average_is_round_half_up_of_the_exact_mean():
    rng = random.Random(5)
    for _ in range(2000):
        total = rng.randint(1, 50)
        s = rng.randint(-128 * total, 127 * total)
        q = Fraction(s, total)
        want = (q + Fraction(1, 2)).__floor__()
        assert int(fed_average(torch.tensor([s]), total)) == want, (s, total)
    assert fed_average(torch.tensor([5, -5, 3, -3]), 2).tolist() == [3, -2, 2, -1]  # ties up, both signs
    with pytest.raises(ValueError):
        fed_average(torch.tensor([1]), 0)


def test_shards_cover_the_training_set_once():
    parts = [shard_indices(1347, 5, r, 0) for r in range(5)]
    flat = torch.cat(parts).sort().values
    assert torch.equal(flat, torch.arange(1347))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="cannot be shared"):
        shard_indices(3, 5, 0, 0)


def test_worker_lr_shift_scales_with_workers():
    cfg = load_config("configs/digits.toml")
    assert [worker_lr_shift(cfg, w) for w in (1, 2, 3, 4, 5, 8)] == [14, 13, 13, 12, 12, 11]


def _replay(cfg, opts):
    """FedAvg without torch.distributed: every worker in this process, averaged by hand."""
    wcfg = worker_config(cfg, opts, opts.workers)
    data = load_dataset("digits", wcfg.formats.pixel_bits, wcfg.training.split_seed, opts.samples)
    shards = [shard_indices(len(data.train_x), opts.workers, r, wcfg.training.split_seed) for r in range(opts.workers)]
    bes = []
    for r in range(opts.workers):
        be = GoldenBackend(wcfg, model.init_weights(wcfg))
        be.seed_update_lfsr(worker_update_seed(wcfg, r))
        bes.append(be)
    for rnd in range(opts.rounds):
        for be, ids in zip(bes, shards):
            train_epoch(be, wcfg, data.train_x[ids], data.train_y[ids], rnd, sample_ids=ids)
        total = sum(len(ids) for ids in shards)
        avg = [fed_average(sum(be.weights[l] * len(ids) for be, ids in zip(bes, shards)), total)
               for l in range(len(bes[0].weights))]
        for be in bes:
            be.load_weights(avg)
    return weights_sha256(bes[0].weights, wcfg.formats.weight_bits)


SHORT = dict(workers=5, rounds=2, samples=40, test_samples=10, progress=False)


def test_five_gloo_workers_match_the_in_process_replay():
    cfg = load_config("configs/digits.toml")
    opts = FederatedOptions(backend="golden", **SHORT)
    rep = run_federated(cfg, opts, centralised=False)
    assert rep["shard_sizes"] == [8] * 5 and len(rep["history"]) == 2
    assert rep["weights_sha256"] == _replay(cfg, opts)
    assert rep["weights_sha256"] != weights_sha256(model.init_weights(cfg), 8)


def test_rtl_workers_end_with_the_golden_weights():
    cfg = load_config("configs/digits.toml")
    gold = run_federated(cfg, FederatedOptions(backend="golden", **SHORT), centralised=False)
    rtl = run_federated(cfg, FederatedOptions(backend="rtl", **SHORT), centralised=False)
    assert rtl["weights_sha256"] == gold["weights_sha256"]
    assert [r["test_accuracy"] for r in rtl["history"]] == [r["test_accuracy"] for r in gold["history"]]


@pytest.mark.parametrize("argv, msg", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--lr-shift", "60"], "--lr-shift must be in"),
    (["--samples", "3"], "3 training samples cannot be shared by 5 workers"),
    (["--test-samples", "0"], "--test-samples must be >= 1"),
])
def test_cli_refuses_bad_options(argv, msg, capsys):
    with pytest.raises(SystemExit) if "must be >= 1" in msg else _nothing():
        rc = main(["federated", *argv, "--quiet"])
        assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1, err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.slow
def test_twenty_rounds_within_two_points_of_centralised():
    cfg = load_config("configs/digits.toml")
    rep = run_federated(cfg, FederatedOptions(workers=5, rounds=20, progress=False))
    assert abs(rep["accuracy_gap_points"]) <= 2.0, rep["history"]
