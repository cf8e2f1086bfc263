"""Performance counters: one 32-bit wrapping counter per named event, cleared together.

The core pulses ``inc[name]`` in every cycle the event holds (a phase, an engine's busy or stalled
signal, an event it processed); the host reads ``value[name]`` through the COUNTERS region. The
names and their order are :data:`spikeforge.rtl.protocol.COUNTERS`.

The event and clear inputs are registered first, together, so a count is the same as if they
were not, one cycle later: the events come from deep in the engines' control, and a 32-bit
increment should not follow them in the same cycle. A read sees every event up to two cycles
before it (the host reads counters long after a run).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PerfCounters"]

COUNTER_BITS = 32


class PerfCounters(wiring.Component):
    def __init__(self, names):
        names = tuple(names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise ValueError(f"PerfCounters: names must be distinct identifiers, got {names!r}")
        self.names = names
        super().__init__(
            {
                "inc": In(data.StructLayout({n: 1 for n in names})),
                "clear": In(1),
                "value": Out(data.StructLayout({n: COUNTER_BITS for n in names})),
            }
        )

    def elaborate(self, platform):
        m = Module()
        inc = {n: Signal(name=f"inc_{n}_q") for n in self.names}
        clear = Signal(name="clear_q")
        m.d.sync += [clear.eq(self.clear)] + [inc[n].eq(self.inc[n]) for n in self.names]
        for n in self.names:
            with m.If(clear):
                m.d.sync += self.value[n].eq(0)
            with m.Elif(inc[n]):
                m.d.sync += self.value[n].eq(self.value[n] + 1)
        return m
