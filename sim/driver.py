"""The Python host driver: docs/host-protocol.md over any transport.

A transport is anything with ``transact(words) -> list[int]``: it sends one command's words on
the ``cmd`` stream and returns the response header plus the data words the header announces.
The same :class:`Client` runs over the Amaranth simulator (:mod:`spikeforge.sim.amaranth_host`),
cocotb + Verilator (:mod:`spikeforge.sim.tb.tb_core`) and a serial port to a board
(:mod:`spikeforge.sim.uart_transport`, co-simulated in :mod:`spikeforge.sim.tb.tb_uart`).

:class:`RtlBackend` is the training driver's backend on top of a client: it loads the initial
weights and LFSR state, streams samples, runs TRAIN / UPDATE / INFER and reads the weights back.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import lfsr, model
from spikeforge.golden.backend import update_seed
from spikeforge.rtl.protocol import (COUNTERS, CONFIG_FIELDS, MAX_COUNT, RUN_SPIKES, STATUS_FIELDS, Error, Op,
                                     RegionId, command, info_words, region_by_id, split_response)

__all__ = ["Transport", "Client", "HostError", "RtlBackend"]


class Transport(Protocol):
    def transact(self, words: list[int]) -> list[int]:
        """Send one command, return its response (header and data words)."""


class HostError(RuntimeError):
    """The core refused a command; ``code`` is the :class:`Error`."""

    def __init__(self, code: int, op: int, what: str):
        self.code, self.op = code, op
        name = Error(code).name if code in Error._value2member_map_ else f"error {code}"
        super().__init__(f"{what}: core answered {name}")


def _signed(word: int, bits: int) -> int:
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word


class Client:
    def __init__(self, transport: Transport, cfg: SpikeforgeConfig):
        self.t = transport
        self.cfg = cfg
        self.regions = region_by_id(cfg)

    # ---- raw commands ---------------------------------------------------------------------------

    def call(self, op: int, region: int = 0, count: int = 0, arg: int = 0, payload=(), check: bool = True,
             what: str | None = None) -> tuple[int, list[int]]:
        """One command; returns (status, data words). Raises :class:`HostError` on a refusal
        when ``check``."""
        return self.answer(op, self.t.transact(command(op, region, count, arg, payload)), check, what)

    @staticmethod
    def answer(op: int, rsp: list[int], check: bool = True, what: str | None = None) -> tuple[int, list[int]]:
        """(status, data words) of the response ``rsp`` to a command ``op``."""
        status, echo, n = split_response(rsp[0])
        if echo != op or len(rsp) != 1 + n:
            raise RuntimeError(f"protocol out of step: sent opcode {op:#x}, response {rsp[0]:#010x} "
                               f"with {len(rsp) - 1} data words")
        if check and status != Error.OK:
            raise HostError(status, op, what or f"{Op(op).name if op in Op._value2member_map_ else hex(op)}")
        return status, rsp[1:]

    def write(self, region: int, values: Sequence[int], row: int = 0, col: int = 0) -> None:
        r = self.regions[region]
        flat = [int(v) for v in values]
        pos = row * r.cols + col
        for lo in range(0, len(flat), MAX_COUNT):
            chunk = flat[lo:lo + MAX_COUNT]
            rr, cc = divmod(pos + lo, r.cols)
            self.call(Op.WRITE, region, len(chunk), (rr << 16) | cc, chunk, what=f"write {r.name}")

    def read(self, region: int, count: int | None = None, row: int = 0, col: int = 0) -> list[int]:
        """``count`` elements from (row, col), sign-extended per the region's format."""
        r = self.regions[region]
        pos = row * r.cols + col
        count = r.size - pos if count is None else count
        out: list[int] = []
        while len(out) < count:
            n = min(MAX_COUNT, count - len(out))
            rr, cc = divmod(pos + len(out), r.cols)
            _, words = self.call(Op.READ, region, n, (rr << 16) | cc, what=f"read {r.name}")
            out += [_signed(w, r.bits) if r.signed else w & ((1 << r.bits) - 1 if r.bits < 32 else 0xFFFF_FFFF)
                    for w in words]
        return out

    # ---- named operations -----------------------------------------------------------------------

    def info(self) -> list[int]:
        return self.read(RegionId.INFO)

    def check_info(self) -> None:
        """Refuse to drive a core generated from a different configuration."""
        got, want = self.info(), info_words(self.cfg)
        if got != want:
            raise RuntimeError(f"the core does not match the config: INFO reads {got}, config gives {want}")

    def status(self) -> dict[str, int]:
        return dict(zip(STATUS_FIELDS, self.read(RegionId.STATUS)))

    def counters(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self.read(RegionId.COUNTERS)))

    def set_config(self, **fields: int) -> None:
        for name, value in fields.items():
            self.write(RegionId.CONFIG, [value], col=CONFIG_FIELDS.index(name))

    def get_config(self) -> dict[str, int]:
        return dict(zip(CONFIG_FIELDS, self.read(RegionId.CONFIG)))

    def clear_error(self) -> None:
        self.call(Op.CLEAR_ERROR)

    def clear_counters(self) -> None:
        self.call(Op.CLEAR_COUNTERS)

    def sample(self, pixels: Sequence[int], label: int, seed: int) -> None:
        px = [int(v) for v in pixels]
        self.call(Op.SAMPLE, int(label), len(px), int(seed), px, what="sample")

    def infer(self, spikes: bool = False) -> int:
        return self.call(Op.INFER, RUN_SPIKES if spikes else 0)[1][0]

    def train(self, spikes: bool = False) -> int:
        return self.call(Op.TRAIN, RUN_SPIKES if spikes else 0)[1][0]

    def update(self) -> None:
        self.call(Op.UPDATE)

    def write_spikes(self, spikes: torch.Tensor) -> None:
        """Input spikes (T, N_in) of 0/1 into SPIKES+0."""
        self.write(RegionId.SPIKES, spikes.reshape(-1).tolist())

    def matrix(self, region: int) -> torch.Tensor:
        r = self.regions[region]
        return torch.tensor(self.read(region), dtype=torch.int64).reshape(r.rows, r.cols)

    def load_weights(self, weights: Sequence[torch.Tensor]) -> None:
        for l, w in enumerate(weights):
            self.write(RegionId.WEIGHTS + l, w.reshape(-1).tolist())

    def weights(self) -> list[torch.Tensor]:
        return [self.matrix(RegionId.WEIGHTS + l) for l in range(len(self.cfg.network.layers) - 1)]

    def gradients(self) -> list[torch.Tensor]:
        return [self.matrix(RegionId.GRADIENTS + l) for l in range(len(self.cfg.network.layers) - 1)]


class RtlBackend:
    """The training driver's backend (spikeforge.train.Backend) on a simulated or real core."""

    name = "rtl"

    def __init__(self, client: Client, weights: list[torch.Tensor] | None = None):
        self.client = client
        self.cfg = cfg = client.cfg
        client.check_info()
        client.clear_error()
        client.load_weights(weights if weights is not None else model.init_weights(cfg))
        self._lr_shift = cfg.training.lr_shift
        client.set_config(lr_shift=self._lr_shift, update_lfsr_state=update_seed(cfg))
        client.clear_counters()

    @property
    def lr_shift(self) -> int:
        return self._lr_shift

    @lr_shift.setter
    def lr_shift(self, value: int) -> None:
        if value != self._lr_shift:
            self.client.set_config(lr_shift=value)
            self._lr_shift = value

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.client.weights()

    def load_weights(self, weights: list[torch.Tensor]) -> None:
        self.client.load_weights(weights)

    def seed_update_lfsr(self, seed: int) -> None:
        self.client.set_config(update_lfsr_state=lfsr.seed_state(seed))

    def infer(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        out = []
        for px, seed in zip(pixels, seeds):
            self.client.sample(px.tolist(), 0, int(seed))
            out.append(self.client.infer())
        return torch.tensor(out, dtype=torch.int64)

    def train_batch(self, pixels: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = []
        for px, seed, y in zip(pixels, seeds, labels):
            self.client.sample(px.tolist(), int(y), int(seed))
            out.append(self.client.train())
        self.client.update()
        return torch.tensor(out, dtype=torch.int64)
