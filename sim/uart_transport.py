"""The host protocol over a serial line: the byte encoding of docs/host-protocol.md §1 ("UART
transport") and :class:`UartTransport`, the :class:`~spikeforge.sim.driver.Client` transport for
any byte port.

A byte port is anything with ``write(bytes)`` and ``read(n) -> bytes``, where ``read`` returns
fewer than ``n`` bytes (possibly none) when its timeout expires -- as ``serial.Serial`` does
(:func:`open_serial`), and as the cocotb UART model of :mod:`spikeforge.sim.tb.tb_uart` does, so
the co-simulation runs this very transport against the RTL.

The pure helpers (:func:`words_to_bytes`, :func:`bytes_to_words`, :func:`frame_bits`) are shared
by the transport, the cocotb bench and the Amaranth-simulator tests, so every side agrees on one
definition of the framing.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from spikeforge.rtl.protocol import Op, split_response

__all__ = ["WORD_BYTES", "BytePort", "UartTransport", "words_to_bytes", "bytes_to_words", "frame_bits",
           "describe_command", "open_serial"]

#: bytes per 32-bit protocol word on the line
WORD_BYTES = 4


def words_to_bytes(words: Iterable[int]) -> bytes:
    """Each 32-bit word as 4 bytes, least significant first."""
    out = bytearray()
    for w in words:
        w = int(w)
        if not 0 <= w <= 0xFFFF_FFFF:
            raise ValueError(f"word {w:#x} does not fit 32 bits")
        out += w.to_bytes(WORD_BYTES, "little")
    return bytes(out)


def bytes_to_words(data: bytes) -> list[int]:
    """The inverse of :func:`words_to_bytes`; ``data`` must hold whole words."""
    if len(data) % WORD_BYTES:
        raise ValueError(f"{len(data)} bytes are not a whole number of {WORD_BYTES}-byte words")
    return [int.from_bytes(data[i:i + WORD_BYTES], "little") for i in range(0, len(data), WORD_BYTES)]


def frame_bits(byte: int) -> list[int]:
    """Line levels of one 8N1 frame, in time order: start bit 0, data bits LSB first, stop bit 1."""
    if not 0 <= byte <= 0xFF:
        raise ValueError(f"byte {byte!r} out of range 0..255")
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def describe_command(words: list[int]) -> str:
    """``READ region 0x10 count 72 arg 0x00000000``: a command's header, for messages."""
    if not words:
        return "empty command"
    op, region, count = (words[0] >> 24) & 0xFF, (words[0] >> 16) & 0xFF, words[0] & 0xFFFF
    name = Op(op).name if op in Op._value2member_map_ else f"opcode {op:#04x}"
    arg = f" arg {words[1]:#010x}" if len(words) > 1 else ""
    return f"{name} region {region:#04x} count {count}{arg}"


class BytePort(Protocol):
    def write(self, data: bytes) -> int | None: ...

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer (or none) when the port's read timeout expires."""


class UartTransport:
    """``transact(words)``: send one command as little-endian bytes, read the 4-byte response
    header, then the data words it announces. A read that comes back empty is a timeout and
    raises :class:`TimeoutError` naming the command; after one, bytes of the late response may
    still arrive, so the link needs a resynchronisation (or a core reset) before the next
    command."""

    def __init__(self, port: BytePort):
        for method in ("write", "read"):
            if not callable(getattr(port, method, None)):
                raise TypeError(f"UartTransport needs a port with write(bytes) and read(n); "
                                f"{type(port).__name__} has no {method}()")
        self.port = port

    def transact(self, words: list[int]) -> list[int]:
        words = list(words)
        self.port.write(words_to_bytes(words))
        header = self._read_words(1, words, "header")
        count = split_response(header[0])[2]
        return header + self._read_words(count, words, f"{count} data words")

    def _read_words(self, n: int, command: list[int], what: str) -> list[int]:
        want = n * WORD_BYTES
        got = bytearray()
        while len(got) < want:
            chunk = self.port.read(want - len(got))
            if not chunk:
                raise TimeoutError(f"no complete response to {describe_command(command)}: {len(got)} of {want} "
                                   f"bytes of the response {what} arrived before the port's read timeout")
            got += chunk
        return bytes_to_words(bytes(got))


def open_serial(port: str, baud: int, timeout: float = 2.0):
    """A pyserial port (8N1, ``timeout`` seconds per read) for :class:`UartTransport`. ``port`` is
    a device (``/dev/ttyUSB1``, ``COM3``) or any pyserial URL (``loop://``, ``socket://host:port``)."""
    try:
        import serial
    except ImportError:
        raise ModuleNotFoundError("open_serial needs pyserial: pip install 'pyserial>=3.5'") from None
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive int, got {baud!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be positive seconds (a read without one could hang forever), got {timeout!r}")
    return serial.serial_for_url(port, baudrate=baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                                 stopbits=serial.STOPBITS_ONE, timeout=timeout)
