"""Federated training (FedAvg) of several accelerators over torch.distributed (gloo).

Each worker is one accelerator instance (the golden model, or the core's RTL under Verilator)
training on its own shard of the training set. A round is ``local_epochs`` passes over the shard,
then the integer FedAvg of docs/arithmetic.md ("Federated averaging"):

    W = round_half_up( sum_k n_k W_k / sum_k n_k )     n_k = samples in worker k's shard

computed exactly from an ``all_reduce`` of ``n_k W_k`` (int64), so every worker ends the round
with the same weights, bit for bit, on any backend. The average of in-range weights is in range,
so no saturation is needed. Worker k's stochastic-rounding LFSR has its own stream
(``worker_update_seed``); each sample is encoded with the seed centralised training would give it
(epoch, index in the whole training set), so the workers differ from centralised training only in
what FedAvg changes.

One machine by default: ``run_federated`` spawns the workers. Several machines: start one process
per worker with the usual ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` set
(``spikeforge federated`` reads them) and each runs :func:`worker_main`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.data import load_dataset

__all__ = ["FederatedOptions", "fed_average", "worker_lr_shift", "worker_config", "shard_indices", "run_federated", "worker_main", "FEDAVG_ROUNDING"]

#: the contract's rounding of the weighted mean (docs/arithmetic.md)
FEDAVG_ROUNDING = "half_up"
BACKENDS = ("golden", "rtl")


@dataclass(frozen=True)
class FederatedOptions:
    """What `spikeforge federated` was asked to do (validated before any worker starts)."""

    workers: int = 5
    rounds: int = 20
    local_epochs: int = 1
    backend: str = "golden"
    dataset: str = "digits"
    samples: int | None = None  # keep the first N training samples (before sharding)
    test_samples: int | None = None  # evaluate on the first N test samples
    lr_shift: int | None = None  # the workers' training.lr_shift; None: worker_lr_shift()
    progress: bool = True

    def validate(self) -> None:
        for name, lo in (("workers", 1), ("rounds", 1), ("local_epochs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")
        if self.workers > 64:
            raise ValueError(f"--workers {self.workers}: at most 64 workers")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r}: federated training runs on {', '.join(BACKENDS)}")
        if self.lr_shift is not None and not 0 <= self.lr_shift <= 48:
            raise ValueError(f"--lr-shift must be in [0, 48], got {self.lr_shift}")
        for name in ("samples", "test_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def worker_lr_shift(cfg: SpikeforgeConfig, workers: int) -> int:
    """The workers' learning-rate shift: training.lr_shift - floor(log2(workers)).

    Each of W workers makes 1/W of the centralised run's updates per pass over the data, and
    averaging W models of IID shards moves the weights about as far as one of them. The linear
    scaling rule (learning rate x W), rounded down to a power of two, keeps the progress per round
    close to the centralised run's progress per epoch (digits, 5 workers: shift 14 -> 12)."""
    return max(0, cfg.training.lr_shift - (workers.bit_length() - 1))


def fed_average(weighted_sum: torch.Tensor, total: int) -> torch.Tensor:
    """round_half_up(weighted_sum / total) for int64 tensors: floor((2 s + total) / (2 total))."""
    if total < 1:
        raise ValueError(f"FedAvg over {total} samples")
    return torch.div(2 * weighted_sum + total, 2 * total, rounding_mode="floor")


def shard_indices(n: int, workers: int, rank: int, split_seed: int) -> torch.Tensor:
    """Worker ``rank``'s training-set indices: a fixed shuffle dealt round-robin (IID shards whose
    sizes differ by at most one)."""
    if n < workers:
        raise ValueError(f"{n} training samples cannot be shared by {workers} workers")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0xFED0 + split_seed))
    return perm[rank::workers].sort().values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_config(cfg: SpikeforgeConfig, opts: FederatedOptions, world: int) -> SpikeforgeConfig:
    shift = worker_lr_shift(cfg, world) if opts.lr_shift is None else opts.lr_shift
    return cfg.replace(training={"lr_shift": shift})


def worker_main(cfg: SpikeforgeConfig, opts: FederatedOptions, rank: int, world: int, backend=None) -> dict | None:
    """One worker's whole run; the process group must be initialised. Returns the report on rank 0.
    ``cfg`` is the workers' config (:func:`worker_config` of the run's config): the RTL is built
    for it, since a core supports exactly the learning-rate shifts of its config's schedule."""
    import torch.distributed as dist

    from spikeforge.golden import GoldenBackend, model
    from spikeforge.golden.backend import worker_update_seed
    from spikeforge.train import evaluate_correct, train_epoch, weights_sha256

    data = load_dataset(opts.dataset, cfg.formats.pixel_bits, cfg.training.split_seed, opts.samples)
    mine = shard_indices(len(data.train_x), world, rank, cfg.training.split_seed)
    x, y = data.train_x[mine], data.train_y[mine]
    n_test = len(data.test_x) if opts.test_samples is None else min(opts.test_samples, len(data.test_x))
    test_ids = torch.arange(n_test)[rank::world]  # each worker evaluates its share of the test set
    be = backend or GoldenBackend(cfg)
    be.load_weights(model.init_weights(cfg))  # every worker starts from the same weights
    be.seed_update_lfsr(worker_update_seed(cfg, rank))
    history = []
    t0 = time.perf_counter()
    for r in range(opts.rounds):
        correct_local = 0
        for e in range(opts.local_epochs):
            epoch = r * opts.local_epochs + e  # sets the learning rate and the encoder seeds
            correct_local += train_epoch(be, cfg, x, y, epoch, sample_ids=mine)
        # FedAvg: the sum of n_k W_k and of n_k, exactly, then the contract's rounding
        n_k = torch.tensor([len(x)], dtype=torch.int64)
        dist.all_reduce(n_k)
        avg = []
        for w in be.weights:
            s = w.to(torch.int64) * len(x)
            dist.all_reduce(s)
            avg.append(fed_average(s, int(n_k)))
        be.load_weights(avg)
        stats = torch.tensor([evaluate_correct(be, cfg, data.test_x[test_ids], data.test_y[test_ids],
                                               sample_ids=test_ids), correct_local], dtype=torch.int64)
        dist.all_reduce(stats)
        row = {"round": r + 1, "test_accuracy": int(stats[0]) / n_test,
               "train_accuracy_running": int(stats[1]) / (int(n_k) * opts.local_epochs)}
        history.append(row)
        if rank == 0 and opts.progress:
            print(f"round {r + 1}/{opts.rounds}: test {row['test_accuracy']:.4f}, train (running) "
                  f"{row['train_accuracy_running']:.4f}", file=sys.stderr, flush=True)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(x)], dtype=torch.int64))
    if rank != 0:
        return None
    return {
        "backend": opts.backend,
        "dataset": data.name,
        "workers": world,
        "rounds": opts.rounds,
        "local_epochs": opts.local_epochs,
        "shard_sizes": [int(s) for s in sizes],
        "test_samples": n_test,
        "worker_lr_shift": cfg.training.lr_shift,
        "fedavg": {"weighting": "samples per shard", "rounding": FEDAVG_ROUNDING, "transport": "torch.distributed gloo"},
        "history": history,
        "final_test_accuracy": history[-1]["test_accuracy"],
        "weights_sha256": weights_sha256(be.weights, cfg.formats.weight_bits),
        "seed": cfg.training.seed,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "config": cfg.to_dict(),
    }


def _spawned(rank: int, world: int, cfg_dict: dict, opts: FederatedOptions, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # the workers share the machine's cores
    cfg = worker_config(SpikeforgeConfig.from_dict(cfg_dict), opts, world)
    if opts.backend == "rtl":
        # the simulator process joins the group itself (sim/tb/tb_core.py, test "federated")
        from spikeforge.sim.cosim_core import federated_worker_rtl

        report = federated_worker_rtl(cfg, opts, rank, world, port)
    else:
        dist.init_process_group("gloo", init_method=f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{port}",
                                rank=rank, world_size=world)
        try:
            report = worker_main(cfg, opts, rank, world)
        finally:
            dist.destroy_process_group()
    if report is not None:
        Path(out).write_text(json.dumps(report))


def run_federated(cfg: SpikeforgeConfig, opts: FederatedOptions, centralised: bool = True) -> dict[str, Any]:
    """Spawn ``opts.workers`` local workers; return rank 0's report (plus the centralised baseline)."""
    import tempfile

    import torch.multiprocessing as mp

    opts.validate()
    n_train = len(load_dataset(opts.dataset, cfg.formats.pixel_bits, cfg.training.split_seed, opts.samples).train_x)
    if n_train < opts.workers:  # refuse before any worker starts
        raise ValueError(f"{n_train} training samples cannot be shared by {opts.workers} workers")
    if opts.backend == "rtl":
        from spikeforge.sim.cosim_core import build_core

        build_core(worker_config(cfg, opts, opts.workers), progress=opts.progress)  # once, shared by the workers
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "report.json")
        port = int(os.environ.get("MASTER_PORT") or _free_port())
        mp.spawn(_spawned, args=(opts.workers, cfg.to_dict(), opts, port, out), nprocs=opts.workers, join=True)
        report = json.loads(Path(out).read_text())
    if centralised:
        from spikeforge.train import evaluate, train

        # the config's own centralised run on the same training data
        epochs = cfg.training.epochs
        if opts.progress:
            print(f"centralised baseline: {epochs} epochs (training.epochs) on the same data (golden)", file=sys.stderr)
        res = train(cfg, dataset=opts.dataset, samples=opts.samples, epochs=epochs, progress=False,
                    eval_every_epoch=False)
        base = res.report
        # on the same test samples as the federated evaluation
        data = load_dataset(opts.dataset, cfg.formats.pixel_bits, cfg.training.split_seed, opts.samples)
        n_test = report["test_samples"]
        acc = evaluate(res.backend, cfg, data.test_x[:n_test], data.test_y[:n_test])
        report["centralised"] = {"epochs": epochs, "lr_shift": cfg.training.lr_shift,
                                 "test_accuracy_full_test_set": base["test_accuracy"], "weights_sha256": base["weights_sha256"]}
        report["centralised_test_accuracy"] = acc
        report["accuracy_gap_points"] = round(100 * (acc - report["final_test_accuracy"]), 2)
    return report
