"""Hardware parameters derived from the one config object (spikeforge.config).

The RTL never reads TOML itself: generators take a :class:`CoreParams`, built from a validated
:class:`~spikeforge.config.SpikeforgeConfig` by :meth:`CoreParams.from_config`, so the golden
model, the RTL and the testbenches all see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig

__all__ = ["CoreParams"]


@dataclass(frozen=True)
class CoreParams:
    lanes: int
    max_inputs: int  # largest fan-in of any layer
    max_neurons: int  # largest layer
    timesteps: int
    weight_bits: int
    membrane_bits: int
    membrane_frac_bits: int
    input_acc_bits: int
    threshold: int
    beta_q: int
    beta_bits: int
    leak_rounding: str
    reset: str
    membrane_min: int
    membrane_max: int
    surrogate: str
    surrogate_width: int
    surrogate_bits: int
    error_bits: int
    grad_bits: int
    error_shift: int
    error_rounding: str
    update_rounding: str
    max_batch: int
    #: the fewest groups of P any layer has (inputs included): with two or more, the engines'
    #: read-modify-write accumulators never meet a write of the word they read (rtl/ram.py),
    #: with one, consecutive items are the same group and take a transparent read port
    min_groups: int = 1
    #: the small-FPGA layout (``hardware.large_memories = "single_port"``, the iCE40 UP5K): where
    #: an engine can carry a pipeline's operands in a block RAM instead of flip-flops, it does
    compact: bool = False

    @classmethod
    def from_config(cls, cfg: SpikeforgeConfig) -> "CoreParams":
        n = cfg.neuron
        lo, hi = n.membrane_range(cfg.formats)
        return cls(
            lanes=cfg.hardware.lanes,
            max_inputs=max(cfg.network.fan_ins),
            max_neurons=max(cfg.network.layers[1:]),
            timesteps=cfg.network.timesteps,
            weight_bits=cfg.formats.weight_bits,
            membrane_bits=cfg.formats.membrane_bits,
            membrane_frac_bits=cfg.formats.membrane_frac_bits,
            input_acc_bits=cfg.formats.input_acc_bits,
            threshold=n.threshold,
            beta_q=n.beta_q,
            beta_bits=n.beta_bits,
            leak_rounding=n.leak_rounding,
            reset=n.reset,
            membrane_min=lo,
            membrane_max=hi,
            surrogate=cfg.surrogate.kind,
            surrogate_width=cfg.surrogate.width,
            surrogate_bits=cfg.surrogate.bits,
            error_bits=cfg.formats.error_bits,
            grad_bits=cfg.formats.grad_bits,
            error_shift=cfg.training.error_shift,
            error_rounding=cfg.training.error_rounding,
            update_rounding=cfg.training.update_rounding,
            max_batch=cfg.training.batch_size,
            min_groups=min(-(-x // cfg.hardware.lanes) for x in (*cfg.network.layers, *cfg.network.fan_ins)),
            compact=cfg.hardware.large_memories == "single_port",
        )

    @property
    def max_groups(self) -> int:
        """Groups of ``lanes`` neurons in the largest layer."""
        return -(-self.max_neurons // self.lanes)

    @property
    def input_index_bits(self) -> int:
        return max(1, ceil_log2(self.max_inputs))

    @property
    def group_bits(self) -> int:
        """Wide enough for every group index and for the group count itself."""
        return max(1, ceil_log2(self.max_groups + 1))
