"""The host side of the UART link (sim/uart_transport.py): the byte encoding, UartTransport over a
scripted byte port (partial reads, timeouts), and open_serial."""

import sys

import pytest

from spikeforge.rtl.protocol import Op, RegionId, command
from spikeforge.sim.driver import Client
from spikeforge.sim.uart_transport import (UartTransport, bytes_to_words, describe_command, frame_bits, open_serial,
                                           words_to_bytes)


def test_words_are_little_endian_bytes():
    assert words_to_bytes([0x11223344, 0xA0B0C0D0]) == bytes([0x44, 0x33, 0x22, 0x11, 0xD0, 0xC0, 0xB0, 0xA0])
    assert bytes_to_words(words_to_bytes([0, 0xFFFF_FFFF, 7])) == [0, 0xFFFF_FFFF, 7]
    with pytest.raises(ValueError, match="does not fit 32 bits"):
        words_to_bytes([1 << 32])
    with pytest.raises(ValueError, match="5 bytes are not a whole number"):
        bytes_to_words(b"12345")


def test_frame_bits_are_8n1_lsb_first():
    assert frame_bits(0x01) == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert frame_bits(0xA5) == [0, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    with pytest.raises(ValueError):
        frame_bits(256)


class ScriptedPort:
    """Answers each command with the next scripted response, handed out in small pieces (as a
    serial port returns what has arrived); an exhausted script reads as a timeout."""

    def __init__(self, responses: list[list[int]], piece: int = 3):
        self.pending = bytearray()
        self.responses = list(responses)
        self.written = bytearray()
        self.piece = piece

    def write(self, data: bytes) -> int:
        self.written += data
        if self.responses:
            self.pending += words_to_bytes(self.responses.pop(0))
        return len(data)

    def read(self, n: int) -> bytes:
        chunk = bytes(self.pending[:min(n, self.piece)])
        del self.pending[:len(chunk)]
        return chunk


def test_transact_sends_le_bytes_and_reads_announced_words():
    header = (0 << 24) | (Op.READ << 16) | 3
    port = ScriptedPort([[header, 10, 0xFFFF_FFFF, 30]])
    words = command(Op.READ, RegionId.WEIGHTS, 3, 0)
    assert UartTransport(port).transact(words) == [header, 10, 0xFFFF_FFFF, 30]
    assert bytes(port.written) == words_to_bytes(words)


def test_client_runs_over_the_transport():
    from spikeforge.sim.scenario import small_cfg

    cfg = small_cfg()
    port = ScriptedPort([[(0 << 24) | (Op.READ << 16) | 2, 0x0000_0080, 0x7F]])  # two 8-bit weights
    assert Client(UartTransport(port), cfg).read(RegionId.WEIGHTS, 2) == [-128, 127]


def test_timeout_names_the_command():
    port = ScriptedPort([[(0 << 24) | (Op.READ << 16) | 5, 1, 2]])  # 5 words announced, 2 arrive
    with pytest.raises(TimeoutError, match=r"READ region 0x10 count 5 arg 0x00020003: 8 of 20 bytes of the "
                                           r"response 5 data words"):
        UartTransport(port).transact(command(Op.READ, RegionId.WEIGHTS, 5, (2 << 16) | 3))
    with pytest.raises(TimeoutError, match="NOP region 0x00 count 0 .*0 of 4 bytes of the response header"):
        UartTransport(ScriptedPort([])).transact(command(Op.NOP))


def test_describe_unknown_opcode():
    assert describe_command(command(0x7E, 1, 2, 3, [0, 0])) == "opcode 0x7e region 0x01 count 2 arg 0x00000003"


def test_transport_needs_a_byte_port():
    with pytest.raises(TypeError, match="has no read"):
        UartTransport(type("WriteOnly", (), {"write": lambda self, b: None})())


def test_open_serial_gives_an_8n1_port_with_a_timeout():
    port = open_serial("loop://", 115200, timeout=0.1)
    try:
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits, port.timeout) == (115200, 8, "N", 1, 0.1)
        port.write(b"\x01\x02")
        assert port.read(4) == b"\x01\x02"  # two bytes, then the timeout
    finally:
        port.close()
    with pytest.raises(ValueError, match="baud"):
        open_serial("loop://", 0)
    with pytest.raises(ValueError, match="timeout"):
        open_serial("loop://", 9600, timeout=None)


def test_open_serial_without_pyserial_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)  # import serial -> ImportError
    with pytest.raises(ModuleNotFoundError, match="pip install 'pyserial>=3.5'"):
        open_serial("/dev/ttyUSB1", 115200)
