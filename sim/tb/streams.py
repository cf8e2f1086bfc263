"""Stream drivers shared by the cocotb benches (Amaranth stream ports, flattened by Verilog
generation into ``<name>__valid``, ``__ready`` and ``__payload``).

Every driver coroutine resumes just after a rising edge, writes its outputs for the coming
cycle, waits for ReadOnly (all combinational logic settled) and samples the handshake there:
valid & ready seen in ReadOnly is a transfer at the next rising edge.
"""

from __future__ import annotations

import random

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["stream_port", "StreamSource"]


def stream_port(dut, name: str):
    """(valid, ready, payload) handles of a flattened Amaranth stream port."""
    return tuple(getattr(dut, f"{name}__{part}") for part in ("valid", "ready", "payload"))


class StreamSource:
    """Drives ``<name>__valid``/``__payload``; holds each item until it is taken. Before every
    item, idles (valid low) for a cycle with probability ``gap``, repeatedly."""

    def __init__(self, dut, name: str, layout, rng: random.Random, gap: float):
        self.clk = dut.clk
        self.valid, self.ready, self.payload = stream_port(dut, name)
        self.layout = layout
        self.rng = rng
        self.gap = gap
        self.valid.value = 0
        self.payload.value = 0

    async def send(self, items) -> None:
        for item in items:
            while self.rng.random() < self.gap:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = self.layout.const(item).as_bits()
            self.valid.value = 1
            while True:
                await ReadOnly()
                taken = int(self.ready.value) == 1  # 1-bit: Logic
                await RisingEdge(self.clk)
                if taken:
                    break
        self.valid.value = 0
