"""Offline datasets, prepared on the host exactly as the core will receive them.

Only bundled data: scikit-learn's ``load_digits`` (1,797 8x8 images, intensities 0..16). Nothing
is downloaded. Pixels are rescaled to the encoder's ``pixel_bits`` with integer arithmetic,
``p = (x * (2**pixel_bits - 1) + 8) // 16``, so 0 stays 0 and 16 maps to full scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dataset", "load_dataset", "DATASETS"]

DATASETS = ("digits",)


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: torch.Tensor  # (N, inputs) int64 intensities in [0, 2**pixel_bits)
    train_y: torch.Tensor  # (N,) int64 labels
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def inputs(self) -> int:
        return int(self.train_x.shape[1])


def load_dataset(name: str, pixel_bits: int, split_seed: int = 0, samples: int | None = None) -> Dataset:
    """Stratified 75/25 split with a fixed seed; ``samples`` keeps the first N training samples."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.int64)
    y = d.target.astype(np.int64)
    full = (1 << pixel_bits) - 1
    x = (x * full + 8) // 16
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=split_seed)
    if samples is not None:
        if samples < 1:
            raise ValueError(f"--samples must be >= 1, got {samples}")
        xtr, ytr = xtr[:samples], ytr[:samples]
    t = torch.from_numpy
    return Dataset(name, t(xtr), t(ytr), t(xte), t(yte), classes=10)
