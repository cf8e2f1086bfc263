"""Bit-exact PyTorch model of the spikeforge arithmetic contract (docs/arithmetic.md)."""

from .backend import GoldenBackend
from .model import backward, forward, init_weights

__all__ = ["GoldenBackend", "forward", "backward", "init_weights"]
