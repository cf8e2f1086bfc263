"""Backend-independent training driver: epochs, mini-batches, evaluation and the JSON report.

The driver decides everything the host decides (sample order, per-sample encoder seeds, batch
boundaries) and leaves every number the chip computes to the backend, so two backends given the
same config and seed must end with the same weights, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.data import Dataset, load_dataset
from spikeforge.golden import encoder

__all__ = ["Backend", "TrainResult", "train", "train_epoch", "evaluate", "evaluate_correct", "weights_sha256", "make_backend", "BACKENDS"]

BACKENDS = ("golden",)
EVAL_STREAM = 0xE7A1  # encoder seed stream of evaluation samples (training uses the epoch number)


class Backend(Protocol):
    name: str
    weights: list[torch.Tensor]
    lr_shift: int

    def infer(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Predicted class per sample."""

    def train_batch(self, pixels: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Train one mini-batch; return the class each sample was predicted before the update."""


def make_backend(name: str, cfg: SpikeforgeConfig) -> Backend:
    if name == "golden":
        from spikeforge.golden import GoldenBackend

        return GoldenBackend(cfg)
    raise ValueError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")


def weights_sha256(weights: list[torch.Tensor], weight_bits: int) -> str:
    """sha256 over every layer's weights as little-endian int16 (int32 if wider), row-major."""
    dtype = torch.int16 if weight_bits <= 16 else torch.int32
    h = hashlib.sha256()
    for w in weights:
        h.update(w.to(dtype).contiguous().numpy().astype(f"<i{dtype.itemsize}").tobytes())
    return h.hexdigest()


def _seeds(seed: int, stream: int, indices: torch.Tensor) -> torch.Tensor:
    return torch.tensor([encoder.sample_seed(seed, stream, int(i)) for i in indices], dtype=torch.int64)


def evaluate(backend: Backend, cfg: SpikeforgeConfig, x: torch.Tensor, y: torch.Tensor, batch: int = 256,
             sample_ids: torch.Tensor | None = None) -> float:
    """Accuracy on ``x``/``y``; ``sample_ids`` (default 0..n-1) are their indices in the test set,
    which fix each sample's encoder seed."""
    return evaluate_correct(backend, cfg, x, y, batch, sample_ids) / max(1, len(x))


def evaluate_correct(backend: Backend, cfg: SpikeforgeConfig, x: torch.Tensor, y: torch.Tensor, batch: int = 256,
                     sample_ids: torch.Tensor | None = None) -> int:
    """How many of ``x`` the backend classifies correctly (see :func:`evaluate`)."""
    ids = torch.arange(len(x)) if sample_ids is None else sample_ids
    correct = 0
    for lo in range(0, len(x), batch):
        idx = torch.arange(lo, min(lo + batch, len(x)))
        pred = backend.infer(x[idx], _seeds(cfg.training.seed, EVAL_STREAM, ids[idx]))
        correct += int((pred == y[idx]).sum())
    return correct


@dataclass
class TrainResult:
    report: dict[str, Any]
    backend: Backend


def train_epoch(be: Backend, cfg: SpikeforgeConfig, x: torch.Tensor, y: torch.Tensor, epoch: int,
                sample_ids: torch.Tensor | None = None, bar=None) -> int:
    """One pass over ``x``/``y`` in mini-batches at the learning rate of ``epoch``; returns how many
    samples the forward passes classified correctly (before each batch's update).

    ``sample_ids`` are the samples' indices in the whole training set (default 0..n-1): the encoder
    seed of a sample depends on the epoch and that index only, so a federated worker training a
    shard encodes every sample exactly as centralised training does."""
    n = len(x)
    ids = torch.arange(n) if sample_ids is None else sample_ids
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.training.seed * 7919 + epoch))
    be.lr_shift = cfg.training.lr_shift_at(epoch)
    correct = 0
    bs = cfg.training.batch_size
    for lo in range(0, n, bs):
        idx = order[lo : lo + bs]
        pred = be.train_batch(x[idx], _seeds(cfg.training.seed, epoch, ids[idx]), y[idx])
        correct += int((pred == y[idx]).sum())
        if bar is not None:
            bar.update(len(idx))
    return correct


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, leave=False, file=sys.stderr)


def train(
    cfg: SpikeforgeConfig,
    backend_name: str = "golden",
    dataset: str = "digits",
    samples: int | None = None,
    epochs: int | None = None,
    progress: bool = True,
    backend: Backend | None = None,
    data: Dataset | None = None,
    eval_every_epoch: bool = True,
) -> TrainResult:
    """Train for ``epochs`` (default: the config's); return the report dict and the backend."""
    epochs = cfg.training.epochs if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    data = data or load_dataset(dataset, cfg.formats.pixel_bits, cfg.training.split_seed, samples)
    if data.inputs != cfg.network.layers[0] or data.classes != cfg.network.layers[-1]:
        raise ValueError(
            f"dataset {data.name!r} has {data.inputs} inputs and {data.classes} classes but "
            f"network.layers = {list(cfg.network.layers)}"
        )
    be = backend or make_backend(backend_name, cfg)
    n = len(data.train_x)
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        with _progress(n, f"epoch {epoch + 1}/{epochs}", progress) as bar:
            correct = train_epoch(be, cfg, data.train_x, data.train_y, epoch, bar=bar)
        row = {"epoch": epoch + 1, "train_accuracy_running": correct / n}
        if eval_every_epoch or epoch == epochs - 1:
            row["test_accuracy"] = evaluate(be, cfg, data.test_x, data.test_y)
        history.append(row)
        if progress:
            acc = f", test {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
            print(f"epoch {epoch + 1}/{epochs}: train (running) {row['train_accuracy_running']:.4f}{acc}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    report = {
        "backend": be.name,
        "dataset": data.name,
        "epochs": epochs,
        "samples": n,
        "test_samples": len(data.test_x),
        "train_accuracy": evaluate(be, cfg, data.train_x, data.train_y),
        "test_accuracy": history[-1]["test_accuracy"],
        "weights_sha256": weights_sha256(be.weights, cfg.formats.weight_bits),
        "seed": cfg.training.seed,
        "train_seconds": round(elapsed, 3),
        "history": history,
        "config": cfg.to_dict(),
    }
    return TrainResult(report=report, backend=be)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=2) + "\n")
