"""The one configuration object behind the golden model, the RTL generator and the testbenches.

A config is a tree of frozen dataclasses loaded from TOML. Loading checks every value and stops
with a single :class:`ConfigError` that names the field, the value and what is allowed, so a bad
file never produces a traceback from deep inside the model or the generator.

All numbers on the bit-exact path are integers; the one float (``neuron.beta``) must be exactly
representable as ``beta_q / 2**beta_bits`` and is converted to that integer on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "NetworkConfig",
    "NeuronConfig",
    "FormatConfig",
    "SurrogateConfig",
    "TrainingConfig",
    "HardwareConfig",
    "SpikeforgeConfig",
    "load_config",
    "ROUNDING_MODES",
]

#: Every rounding mode the contract names (docs/arithmetic.md, "Rounding").
ROUNDING_MODES = ("floor", "half_up", "half_even", "stochastic")
#: Which of them each rounding point implements; any other named mode is refused on load.
LEAK_ROUNDING = ("floor", "half_up")
SHIFT_ROUNDING = ("floor", "half_up", "half_even")
UPDATE_ROUNDING = ("floor", "half_up", "half_even", "stochastic")
RESET_MODES = ("subtract", "zero")
SURROGATES = ("rect", "triangle")
LOSSES = ("count_mse", "count_hinge")
#: the gradient, weight and error memories: dual_port, block RAM with a read and a write port;
#: single_port, one port per bank and one memory per kind for all layers (iCE40 SPRAM)
LARGE_MEMORIES = ("dual_port", "single_port")


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range. The message names the field."""


def _fail(path: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config field '{path}' = {value!r}: {allowed}")


def _check_int(path: str, value: Any, lo: int | None = None, hi: int | None = None) -> None:
    # bool is an int subclass; a TOML `true` where a width is expected is a typo, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, value, f"must be an integer{_range_text(lo, hi)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(path, value, f"out of range, allowed{_range_text(lo, hi)}")


def _range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def _check_choice(path: str, value: Any, choices: tuple[str, ...], what: str = "") -> None:
    if not isinstance(value, str) or value not in choices:
        extra = f" ({what})" if what else ""
        _fail(path, value, f"must be one of {', '.join(repr(c) for c in choices)}{extra}")


def bits_for_range(lo: int, hi: int) -> int:
    """Width of the smallest two's-complement format holding every integer in [lo, hi]."""
    b = 1
    while lo < -(1 << (b - 1)) or hi > (1 << (b - 1)) - 1:
        b += 1
    return b


@dataclass(frozen=True)
class NetworkConfig:
    """Fully connected LIF layers: ``layers[0]`` inputs (pixels), then one entry per LIF layer."""

    layers: tuple[int, ...] = (64, 128, 10)
    timesteps: int = 16
    #: the fan-in of each LIF layer where it is not the previous entry of ``layers``; empty (the
    #: default) for a whole network. Set by the multi-core mapper on the part of a network one core
    #: holds when that is the end of one layer and the start of the next: the second slice takes
    #: the whole first layer as inputs, not only the end this core holds (spikeforge/mapper.py).
    inputs: tuple[int, ...] = ()

    @property
    def fan_ins(self) -> tuple[int, ...]:
        """The number of inputs of each LIF layer."""
        return tuple(self.inputs) if self.inputs else tuple(self.layers[:-1])

    def validate(self) -> None:
        if not isinstance(self.layers, (list, tuple)) or len(self.layers) < 2:
            _fail("network.layers", self.layers, "must be a list of at least 2 sizes (inputs, then LIF layers)")
        for k, n in enumerate(self.layers):
            _check_int(f"network.layers[{k}]", n, 1, 4096)
        _check_int("network.timesteps", self.timesteps, 1, 256)
        if self.inputs:
            if not isinstance(self.inputs, (list, tuple)) or len(self.inputs) != len(self.layers) - 1:
                _fail("network.inputs", self.inputs, f"must give one fan-in per LIF layer ({len(self.layers) - 1}) or be empty")
            for k, n in enumerate(self.inputs):
                _check_int(f"network.inputs[{k}]", n, 1, 4096)
            if self.inputs[0] != self.layers[0]:
                _fail("network.inputs", self.inputs, f"the first LIF layer's inputs are network.layers[0] = {self.layers[0]}")
            for k in range(1, len(self.inputs)):
                if self.inputs[k] < self.layers[k]:
                    _fail("network.inputs", self.inputs, f"layer {k + 1} cannot take fewer inputs ({self.inputs[k]}) "
                          f"than the {self.layers[k]} neurons of the layer below it")


@dataclass(frozen=True)
class NeuronConfig:
    """LIF parameters shared by every layer (docs/arithmetic.md, "Forward step")."""

    threshold: int = 64
    beta: float = 0.875
    beta_bits: int = 3
    reset: str = "subtract"
    leak_rounding: str = "half_up"
    membrane_floor: int | None = None

    def membrane_range(self, fmt: "FormatConfig") -> tuple[int, int]:
        """(min, max) the membrane saturates to: [membrane_floor or the negative rail, positive rail]."""
        lo = -(1 << (fmt.membrane_bits - 1))
        hi = (1 << (fmt.membrane_bits - 1)) - 1
        return (lo if self.membrane_floor is None else self.membrane_floor), hi

    @property
    def beta_q(self) -> int:
        """Leak factor as the integer numerator over ``2**beta_bits``."""
        return round(self.beta * (1 << self.beta_bits))

    def validate(self, fmt: "FormatConfig") -> None:
        _check_int("neuron.beta_bits", self.beta_bits, 0, 16)
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)):
            _fail("neuron.beta", self.beta, "must be a number in (0, 1]")
        if not 0 < self.beta <= 1:
            _fail("neuron.beta", self.beta, "out of range, allowed (0, 1]")
        scaled = self.beta * (1 << self.beta_bits)
        if scaled != int(scaled):
            near = math.floor(scaled) / (1 << self.beta_bits)
            _fail(
                "neuron.beta",
                self.beta,
                f"not exactly representable as k/2**{self.beta_bits} (beta_bits); "
                f"nearest below is {near}, or raise neuron.beta_bits",
            )
        vmax = (1 << (fmt.membrane_bits - 1)) - 1
        _check_int("neuron.threshold", self.threshold, 1, vmax - 1)
        if self.membrane_floor is not None:
            _check_int("neuron.membrane_floor", self.membrane_floor, -vmax - 1, 0)
        _check_choice("neuron.reset", self.reset, RESET_MODES)
        _check_choice("neuron.leak_rounding", self.leak_rounding, ROUNDING_MODES)
        _check_choice("neuron.leak_rounding", self.leak_rounding, LEAK_ROUNDING, "modes implemented for the leak")


@dataclass(frozen=True)
class FormatConfig:
    """Bit widths of every stored or accumulated number (docs/arithmetic.md, "Number formats")."""

    pixel_bits: int = 8
    weight_bits: int = 8
    membrane_bits: int = 16
    membrane_frac_bits: int = 0
    input_acc_bits: int = 16
    error_bits: int = 16
    grad_bits: int = 32

    def validate(self, net: NetworkConfig, train: "TrainingConfig") -> None:
        _check_int("formats.pixel_bits", self.pixel_bits, 1, 16)
        _check_int("formats.weight_bits", self.weight_bits, 2, 16)
        _check_int("formats.membrane_bits", self.membrane_bits, 4, 48)
        _check_int("formats.membrane_frac_bits", self.membrane_frac_bits, 0, self.membrane_bits - 2)
        _check_int("formats.error_bits", self.error_bits, 4, 40)
        _check_int("formats.input_acc_bits", self.input_acc_bits, 4, 48)
        _check_int("formats.grad_bits", self.grad_bits, 4, 62)
        wmin, wmax = -(1 << (self.weight_bits - 1)), (1 << (self.weight_bits - 1)) - 1
        fan_in = max(net.fan_ins)
        need = bits_for_range(fan_in * wmin, fan_in * wmax)
        if self.input_acc_bits < need:
            _fail(
                "formats.input_acc_bits",
                self.input_acc_bits,
                f"too narrow for fan-in {fan_in} x weight_bits {self.weight_bits}: "
                f"the synaptic sum needs at least {need} bits",
            )
        emin, emax = -(1 << (self.error_bits - 1)), (1 << (self.error_bits - 1)) - 1
        n = net.timesteps * train.batch_size
        need = bits_for_range(emin * n, emax * n)
        if self.grad_bits < need:
            _fail(
                "formats.grad_bits",
                self.grad_bits,
                f"too narrow for error_bits {self.error_bits} x timesteps {net.timesteps} x batch_size "
                f"{train.batch_size}: the weight-gradient accumulator needs at least {need} bits",
            )


@dataclass(frozen=True)
class SurrogateConfig:
    """Surrogate derivative of the spike, evaluated on the pre-reset membrane (docs/arithmetic.md)."""

    kind: str = "rect"
    width: int = 64
    bits: int = 1

    def validate(self, fmt: FormatConfig) -> None:
        _check_choice("surrogate.kind", self.kind, SURROGATES)
        span = 1 << (fmt.membrane_bits - 1)
        _check_int("surrogate.width", self.width, 1, span)
        if self.kind == "rect":
            _check_int("surrogate.bits", self.bits, 1, 1)
        else:
            _check_int("surrogate.bits", self.bits, 1, 8)
            if self.width & (self.width - 1):
                _fail("surrogate.width", self.width, "must be a power of two for the triangle surrogate")
            if self.width < (1 << self.bits):
                _fail(
                    "surrogate.width",
                    self.width,
                    f"must be >= 2**surrogate.bits = {1 << self.bits} for the triangle surrogate",
                )


@dataclass(frozen=True)
class TrainingConfig:
    """Loss, error scaling, learning rate and update rounding (docs/arithmetic.md, "Training")."""

    batch_size: int = 16
    epochs: int = 20
    loss: str = "count_hinge"
    target_true: int = 12
    target_false: int = 2
    output_error_shift: int = 6
    error_shift: int = 6
    error_rounding: str = "half_up"
    lr_shift: int = 16
    lr_decay_epochs: tuple[int, ...] = ()
    update_rounding: str = "stochastic"
    init_scale: int = 0
    seed: int = 1
    split_seed: int = 0

    def lr_shift_at(self, epoch: int) -> int:
        """Learning-rate shift in force during 0-based ``epoch``: +1 for every decay epoch passed."""
        return self.lr_shift + sum(1 for e in self.lr_decay_epochs if epoch >= e)

    def validate(self, net: NetworkConfig, fmt: FormatConfig) -> None:
        _check_int("training.batch_size", self.batch_size, 1, 4096)
        _check_int("training.epochs", self.epochs, 1, 10000)
        _check_choice("training.loss", self.loss, LOSSES)
        _check_int("training.target_true", self.target_true, 0, net.timesteps)
        _check_int("training.target_false", self.target_false, 0, net.timesteps)
        if self.target_false > self.target_true:
            _fail("training.target_false", self.target_false, f"must be <= training.target_true = {self.target_true}")
        _check_int("training.output_error_shift", self.output_error_shift, 0, fmt.error_bits - 2)
        _check_int("training.error_shift", self.error_shift, 0, 40)
        _check_choice("training.error_rounding", self.error_rounding, ROUNDING_MODES)
        _check_choice("training.error_rounding", self.error_rounding, SHIFT_ROUNDING, "modes implemented for error shifts")
        _check_int("training.lr_shift", self.lr_shift, 0, 48)
        for k, e in enumerate(self.lr_decay_epochs):
            _check_int(f"training.lr_decay_epochs[{k}]", e, 1, 10000)
        if list(self.lr_decay_epochs) != sorted(set(self.lr_decay_epochs)):
            _fail("training.lr_decay_epochs", list(self.lr_decay_epochs), "must be strictly increasing")
        if self.lr_shift + len(self.lr_decay_epochs) > 48:
            _fail("training.lr_decay_epochs", list(self.lr_decay_epochs), "would raise lr_shift above 48")
        _check_choice("training.update_rounding", self.update_rounding, UPDATE_ROUNDING)
        _check_int("training.init_scale", self.init_scale, 0, (1 << (fmt.weight_bits - 1)) - 1)
        _check_int("training.seed", self.seed, 0, (1 << 32) - 1)
        _check_int("training.split_seed", self.split_seed, 0, (1 << 32) - 1)


@dataclass(frozen=True)
class HardwareConfig:
    """How the network is laid out on silicon; does not change any number the model computes."""

    lanes: int = 8
    cores: int = 1
    # single_port: the gradients, the weights and the error memories have one port per bank, so
    # they can live in iCE40 SPRAM; accumulate and update run at half rate. It also selects the
    # compact layout, which trades block RAM and clock margin for logic cells (docs/architecture.md)
    large_memories: str = "dual_port"
    # capacity of one core: the mapper (spikeforge/mapper.py) refuses a placement that puts more
    # neurons or synapses (weights) on a core than this; sizes the per-core memories
    core_neurons: int = 512
    core_synapses: int = 16384
    # per-sample state a core of the multi-core RTL holds (input bitmaps, spikes, surrogates,
    # error accumulators): with more than one, samples pipeline through the cores (a core runs the
    # forward pass of a later sample while the layers above work on an earlier one;
    # docs/multicore.md). 1: one sample in flight. The one-core accelerator ignores it.
    sample_buffers: int = 1
    # cycles per neuron and sample of each LIF layer (a profile: `spikeforge bench scaling` prints
    # the model's as neuron_cost_per_layer, `bench scaling --rtl` the measured one per row). The multi-core RTL gives each layer cores in proportion to its
    # neurons times this cost instead of its synapses, balancing the pipeline stages' work. Empty:
    # by synapses. Changes the placement, never a number the model computes.
    neuron_cost: tuple[int, ...] = ()

    def validate(self, net: NetworkConfig | None = None) -> None:
        _check_int("hardware.lanes", self.lanes, 1, 64)
        if self.lanes & (self.lanes - 1):
            _fail("hardware.lanes", self.lanes, "must be a power of two")
        _check_int("hardware.cores", self.cores, 1, 20)
        _check_choice("hardware.large_memories", self.large_memories, LARGE_MEMORIES)
        _check_int("hardware.core_neurons", self.core_neurons, 1, 4096)
        _check_int("hardware.core_synapses", self.core_synapses, 1, 1 << 20)
        _check_int("hardware.sample_buffers", self.sample_buffers, 1, 16)
        for k, c in enumerate(self.neuron_cost):
            _check_int(f"hardware.neuron_cost[{k}]", c, 1, 10**7)
        if net is not None and self.neuron_cost and len(self.neuron_cost) != len(net.layers) - 1:
            _fail("hardware.neuron_cost", list(self.neuron_cost),
                  f"must give one cost per LIF layer ({len(net.layers) - 1}) or be empty")


_SECTIONS = {
    "network": NetworkConfig,
    "neuron": NeuronConfig,
    "formats": FormatConfig,
    "surrogate": SurrogateConfig,
    "training": TrainingConfig,
    "hardware": HardwareConfig,
}


@dataclass(frozen=True)
class SpikeforgeConfig:
    name: str = "default"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    formats: FormatConfig = field(default_factory=FormatConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "must be a non-empty string")
        self.network.validate()
        self.formats.validate(self.network, self.training)
        self.neuron.validate(self.formats)
        self.surrogate.validate(self.formats)
        self.training.validate(self.network, self.formats)
        self.hardware.validate(self.network)

    # -- derived quantities used by golden model, RTL generator and testbenches alike ---------
    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_out, fan_in) of every LIF layer's weight matrix."""
        L = self.network.layers
        return [(L[k + 1], n_in) for k, n_in in enumerate(self.network.fan_ins)]

    @property
    def threshold_q(self) -> int:
        return self.neuron.threshold

    def replace(self, **sections: Any) -> "SpikeforgeConfig":
        """Copy with some fields changed: ``cfg.replace(training={"epochs": 3})``. Re-validates."""
        d = self.to_dict()
        for sec, val in sections.items():
            if sec == "name":
                d["name"] = val
            elif sec not in _SECTIONS:
                raise ConfigError(f"unknown config section '{sec}'; known: {', '.join(_SECTIONS)}")
            else:
                d[sec] = {**d[sec], **val}
        return SpikeforgeConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        for sec in _SECTIONS:
            d[sec] = {f.name: _plain(getattr(getattr(self, sec), f.name)) for f in fields(getattr(self, sec))}
        if not self.network.inputs:  # a whole network: the dict (and the digest) as before the field existed
            del d["network"]["inputs"]
        return d

    def digest(self) -> str:
        """Short stable hash of every value, to tell reports of different configs apart."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "SpikeforgeConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level must be a table, got {type(data).__name__}")
        unknown = set(data) - set(_SECTIONS) - {"name"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown config section(s) {', '.join(sorted(map(repr, unknown)))}; "
                f"known: name, {', '.join(_SECTIONS)}"
            )
        kwargs: dict[str, Any] = {}
        if "name" in data:
            kwargs["name"] = data["name"]
        for sec, klass in _SECTIONS.items():
            raw = data.get(sec, {})
            if not isinstance(raw, dict):
                raise ConfigError(f"config section '{sec}' = {raw!r}: must be a table")
            known = {f.name: f for f in fields(klass)}
            bad = set(raw) - set(known)
            if bad:
                raise ConfigError(
                    f"unknown config field(s) {', '.join(f'{sec}.{k}' for k in sorted(bad))}; "
                    f"known in [{sec}]: {', '.join(known)}"
                )
            vals = {}
            for k, v in raw.items():
                default = known[k].default if known[k].default is not dataclasses.MISSING else None
                if isinstance(default, tuple):
                    if not isinstance(v, (list, tuple)):
                        _fail(f"{sec}.{k}", v, "must be a list")
                    v = tuple(v)
                elif isinstance(default, str) and not isinstance(v, str):
                    _fail(f"{sec}.{k}", v, "must be a string")
                vals[k] = v
            kwargs[sec] = klass(**vals)
        return cls(**kwargs)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def to_toml(cfg: SpikeforgeConfig) -> str:
    """TOML text that loads back to ``cfg`` (fields left at None are omitted)."""
    d = cfg.to_dict()
    lines = [f"name = {json.dumps(d.pop('name'))}"]
    for sec, vals in d.items():
        lines.append(f"\n[{sec}]")
        for k, v in vals.items():
            if v is not None:
                lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def load_config(path: str | Path) -> SpikeforgeConfig:
    """Read and validate a TOML config; any problem raises :class:`ConfigError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file '{p}' is not valid TOML: {e}") from None
    try:
        return SpikeforgeConfig.from_dict(data, source=str(p))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
