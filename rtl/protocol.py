"""The host protocol: opcodes, error codes, regions and word formats (docs/host-protocol.md).

Pure Python, no Amaranth: the RTL host interface, the cocotb benches, the Python driver and the
documentation all take their numbers from here, and the region table is derived from the same
config object that generates the core, so host and hardware cannot disagree about a size.

One command stream of 32-bit words in, one response stream of 32-bit words out::

    command   word 0: opcode[31:24] region[23:16] count[15:0]
              word 1: argument (for memory commands: row[31:16] col[15:0])
              then `count` payload words -- except READ, where `count` is the number of words
              requested and no payload follows
    response  word 0: status[31:24] opcode[23:16] count[15:0]   (status 0 = ok, else an Error)
              then `count` data words

Every command gets exactly one response, sent after its payload has been consumed. A refused
command consumes its payload too (the stream stays in step) and changes nothing but the sticky
error registers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from spikeforge.config import SpikeforgeConfig

__all__ = [
    "PROTOCOL_VERSION", "MAGIC", "Op", "Error", "Region", "RegionId", "regions", "region_by_id",
    "COUNTERS", "STATUS_FIELDS", "CONFIG_FIELDS", "info_words", "command", "split_response",
    "RUN_SPIKES", "RUN_FORWARD", "RUN_BACKWARD", "MAX_COUNT",
]

PROTOCOL_VERSION = 1
MAGIC = 0x53504B46  # "SPKF"
MAX_COUNT = 0xFFFF
#: INFER / TRAIN flag (in the region field): take the input spikes already written to region
#: SPIKES+0 instead of encoding the stored pixels
RUN_SPIKES = 0x01
#: TRAIN flags of a core of the multi-core accelerator (docs/multicore.md): run only the forward
#: pass (the sample stays in flight, its state in the core's next bank), or only the backward pass
#: of the oldest sample in flight. Together they let samples pipeline through the cores.
RUN_FORWARD = 0x02
RUN_BACKWARD = 0x04


class Op(enum.IntEnum):
    NOP = 0x00  # count 0; answers ok (a cheap liveness probe)
    WRITE = 0x01  # region, row/col, count payload words
    READ = 0x02  # region, row/col, count = words wanted
    SAMPLE = 0x03  # region = label, argument = encoder seed, count = N_in pixel words
    INFER = 0x04  # region = flags, count 0; response: 1 word, the prediction
    TRAIN = 0x05  # region = flags, count 0; forward + backward + gradient accumulation; 1 word
    UPDATE = 0x06  # count 0; apply the accumulated gradients with CONFIG.lr_shift
    CLEAR_ERROR = 0x07  # count 0; clears the sticky error registers
    CLEAR_COUNTERS = 0x08  # count 0; zeroes the performance counters


class Error(enum.IntEnum):
    OK = 0
    BAD_OPCODE = 1  # unknown opcode
    BAD_REGION = 2  # unknown region
    BAD_ADDRESS = 3  # row/col outside the region, or the access runs past its end
    BAD_LENGTH = 4  # count differs from what the opcode needs
    READ_ONLY = 5  # WRITE to a region the host may only read
    WRONG_STATE = 6  # e.g. INFER before any sample, UPDATE with nothing accumulated
    BAD_ARG = 7  # label out of range, unknown run flags, unsupported lr_shift, a value too wide


class RegionId(enum.IntEnum):
    INFO = 0x00
    CONFIG = 0x01
    STATUS = 0x02
    COUNTERS = 0x03
    PIXELS = 0x04
    MEMBRANES = 0x05  # output layer, per timestep: rows = T, cols = N_out
    WEIGHTS = 0x10  # + layer
    GRADIENTS = 0x20  # + layer
    SPIKES = 0x30  # + k: k = 0 the encoded input, k = l + 1 the output of LIF layer l


#: CONFIG region, one register per column
CONFIG_FIELDS = ("lr_shift", "update_lfsr_state")
#: STATUS region
STATUS_FIELDS = ("flags", "error_code", "error_opcode", "error_count", "prediction", "batch_samples")
#: status flag bits (STATUS.flags)
FLAG_SAMPLE_LOADED = 1 << 0
FLAG_SPIKES_LOADED = 1 << 1
FLAG_COUNTERS_OVERFLOW = 1 << 2  # a performance counter lost events (read too often): clear them

#: COUNTERS region: 32-bit counters that wrap; cycles per phase, then per engine, then work
COUNTERS = (
    "cycles",  # every cycle since the last CLEAR_COUNTERS
    "encode_cycles",
    "fp_cycles",  # forward phase: scanning + FP + readout decision
    "bp_cycles",  # backward phase, BP engine running (per layer and timestep)
    "wg_cycles",  # backward phase, WG accumulation
    "update_cycles",
    "fp_busy", "fp_stalled", "fp_events",  # events: input spikes integrated
    "bp_busy", "bp_stalled", "bp_events",  # events: non-zero δ propagated
    "wg_busy", "wg_stalled", "wg_events",  # busy/stalled/events during accumulation only
    "samples_inferred",
    "samples_trained",
    "updates",
)


@dataclass(frozen=True)
class Region:
    id: int
    name: str
    rows: int
    cols: int
    writable: bool
    bits: int  # element width
    signed: bool

    @property
    def size(self) -> int:
        return self.rows * self.cols


def info_words(cfg: SpikeforgeConfig) -> list[int]:
    """The INFO region: what a host needs to check it talks to the core it was configured for."""
    f, L = cfg.formats, cfg.network.layers
    # a core holding the end of one layer and the start of the next: each LIF layer's fan-in follows
    return [MAGIC, PROTOCOL_VERSION, cfg.hardware.lanes, cfg.network.timesteps, len(L), *L,
            f.pixel_bits, f.weight_bits, f.membrane_bits, f.error_bits, f.grad_bits, *cfg.network.inputs]


def regions(cfg: SpikeforgeConfig) -> list[Region]:
    f, L, T = cfg.formats, cfg.network.layers, cfg.network.timesteps
    n = len(L) - 1
    fan_ins = cfg.network.fan_ins
    # spike bitmap k: the inputs of LIF layer k (k < n), the outputs of the last layer (k = n)
    bitmaps = [*fan_ins, L[-1]]
    out = [
        Region(RegionId.INFO, "info", 1, len(info_words(cfg)), False, 32, False),
        Region(RegionId.CONFIG, "config", 1, len(CONFIG_FIELDS), True, 32, False),
        Region(RegionId.STATUS, "status", 1, len(STATUS_FIELDS), False, 32, False),
        Region(RegionId.COUNTERS, "counters", 1, len(COUNTERS), False, 32, False),
        Region(RegionId.PIXELS, "pixels", 1, L[0], True, f.pixel_bits, False),
        Region(RegionId.MEMBRANES, "membranes", T, L[-1], False, f.membrane_bits, True),
    ]
    out += [Region(RegionId.WEIGHTS + l, f"weights{l}", L[l + 1], fan_ins[l], True, f.weight_bits, True) for l in range(n)]
    out += [Region(RegionId.GRADIENTS + l, f"gradients{l}", L[l + 1], fan_ins[l], False, f.grad_bits, True) for l in range(n)]
    out += [Region(RegionId.SPIKES + k, f"spikes{k}", T, bitmaps[k], k == 0, 1, False) for k in range(n + 1)]
    return out


def region_by_id(cfg: SpikeforgeConfig) -> dict[int, Region]:
    return {r.id: r for r in regions(cfg)}


def command(op: int, region: int = 0, count: int = 0, arg: int = 0, payload=()) -> list[int]:
    """The words of one command (see the module docstring)."""
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count {count} does not fit 16 bits")
    return [((int(op) & 0xFF) << 24) | ((region & 0xFF) << 16) | count, arg & 0xFFFF_FFFF,
            *[int(w) & 0xFFFF_FFFF for w in payload]]


def split_response(word: int) -> tuple[int, int, int]:
    """(status, opcode, count) of a response header."""
    return (word >> 24) & 0xFF, (word >> 16) & 0xFF, word & 0xFFFF
