"""The on-chip interconnect between cores: two lossless chains of routers.

Cores sit in layer order (spikeforge/mapper.py), so every message goes one way along the chain:

- the *spike* network carries spike events from a core to the cores of the next layer, which
  have the same or higher indices (``direction=+1``);
- the *error* network carries error partial sums to the cores of the layer below, which have the
  same or lower indices (``direction=-1``).

A flit names its sender and a destination range ``[dst_lo, dst_hi]`` of cores; a router hands a
copy to its own core when its index is in the range and passes the flit on while the range extends
beyond it, so one flit multicasts to a whole layer group. A core may address itself (when it
holds both layers).

Contract (proved in ``tests/test_noc_formal.py``, exercised with random stalls on every link in
``tests/test_noc.py``):

- every flit reaches every core of its range exactly once and no other core;
- flits from one sender reach one receiver in the order they were sent; flits of different
  senders may interleave (receivers add what they get, and an end marker from each sender closes
  a phase, so order across senders does not matter);
- backpressure (valid/ready on every link) never drops a flit: a flit moves only when every
  output it needs has room, and it is copied to all of them in the same cycle;
- a flit whose range is empty, reversed, or behind its sender is a core bug: it is counted in the
  sticky ``misroute`` flag instead of blocking the chain.

Deadlock freedom: each network is a chain with one direction, so its waits form no cycle as long
as every core keeps accepting its ``deliver`` stream (the cores' inboxes only write memories).
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["flit_layout", "StreamFifo", "ChainRouter", "ChainNetwork", "Interconnect", "CORE_ID_BITS"]

CORE_ID_BITS = 5  # up to 20 cores (32 addressable)


def flit_layout(data_width: int) -> data.StructLayout:
    if data_width < 1:
        raise ValueError(f"flit data width must be >= 1, got {data_width}")
    return data.StructLayout({
        "src": unsigned(CORE_ID_BITS),
        "dst_lo": unsigned(CORE_ID_BITS),
        "dst_hi": unsigned(CORE_ID_BITS),
        "data": unsigned(data_width),
    })


class StreamFifo(wiring.Component):
    """A first-in first-out queue of ``depth`` (a power of two) registers with stream ports.

    ``level`` is the number of items held. Reads come straight from the register array, so an item
    written in one cycle can leave in the next."""

    def __init__(self, shape, depth: int):
        if depth < 1 or depth & (depth - 1):
            self._MustUse__silence = True  # refused, so not an elaboratable anyone forgot to use
            raise ValueError(f"FIFO depth must be a power of two >= 1, got {depth}")
        self._shape, self.depth = shape, depth
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })
        k = max(1, (depth - 1).bit_length())
        self._entries = Array(Signal(shape, name=f"entry{n}") for n in range(depth))
        self._wp = Signal(k + 1, name="wp")  # one bit more than the address: full and empty differ
        self._rp = Signal(k + 1, name="rp")

    @property
    def formal_view(self):
        """(entries, read pointer): the proofs in sim/formal.py assert what is stored."""
        return self._entries, self._rp

    def elaborate(self, platform):
        m = Module()
        k = max(1, (self.depth - 1).bit_length())
        entries, wp, rp = self._entries, self._wp, self._rp
        m.d.comb += [
            self.level.eq(wp - rp),
            self.i.ready.eq(self.level != self.depth),
            self.o.valid.eq(self.level != 0),
            self.o.payload.eq(entries[rp[:k]] if self.depth > 1 else entries[0]),
        ]
        with m.If(self.i.valid & self.i.ready):
            slot = entries[wp[:k]] if self.depth > 1 else entries[0]
            m.d.sync += slot.eq(self.i.payload)
            m.d.sync += wp.eq(wp + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += rp.eq(rp + 1)
        return m


class ChainRouter(wiring.Component):
    """Router ``position`` of an ``n``-node chain: inputs from the previous node (``upstream``) and
    from its core (``send``); outputs to the next node (``downstream``) and to its core
    (``deliver``), each behind a FIFO of ``depth``. One flit moves per cycle; the two inputs take
    turns when both can move (round robin), so neither starves."""

    def __init__(self, data_width: int, position: int, n: int, direction: int = +1, depth: int = 2):
        if direction not in (+1, -1) or not 0 <= position < n <= (1 << CORE_ID_BITS):
            self._MustUse__silence = True  # refused, so not an elaboratable anyone forgot to use
            if direction not in (+1, -1):
                raise ValueError(f"direction must be +1 or -1, got {direction}")
            raise ValueError(f"router position {position} outside a chain of {n}")
        self.layout = flit_layout(data_width)
        self.position, self.n, self.direction, self.depth = position, n, direction, depth
        sig = stream.Signature(self.layout)
        super().__init__({
            "upstream": In(sig),
            "send": In(sig),
            "downstream": Out(sig),
            "deliver": Out(sig),
            "misroute": Out(1),
        })
        self._down = StreamFifo(self.layout, depth)
        self._mine = StreamFifo(self.layout, depth)

    @property
    def formal_view(self):
        """The router's two FIFOs, for the conservation proof in sim/formal.py."""
        return {"down": self._down, "deliver": self._mine}

    def _needs(self, m: Module, flit, name: str, checked: bool):
        """(to my core, further along the chain, malformed) for one flit. Only flits from the
        router's own core are checked: one that passed its sender's router is well formed."""
        k = self.position
        lo, hi = flit.dst_lo, flit.dst_hi
        local = Signal(name=f"{name}_local")
        onward = Signal(name=f"{name}_onward")
        bad = Signal(name=f"{name}_bad")
        last = self.n - 1 if self.direction > 0 else 0
        m.d.comb += local.eq((lo <= k) & (k <= hi))
        if self.direction > 0:
            m.d.comb += onward.eq((hi > k) & (k != last))
            behind = lo < k
        else:
            m.d.comb += onward.eq((lo < k) & (k != last))
            behind = hi > k
        if checked:
            m.d.comb += bad.eq((lo > hi) | (hi >= self.n) | behind)
        return local, onward, bad

    def elaborate(self, platform):
        m = Module()
        m.submodules.down_fifo = down = self._down
        m.submodules.deliver_fifo = mine = self._mine
        wiring.connect(m, down.o, wiring.flipped(self.downstream))
        wiring.connect(m, mine.o, wiring.flipped(self.deliver))

        inputs = [self.upstream, self.send]
        can, needs = [], []
        for j, inp in enumerate(inputs):
            local, onward, bad = self._needs(m, inp.payload, ("up", "send")[j], checked=j == 1)
            ok = Signal(name=f"can{j}")
            # a malformed flit needs no output: it is taken (and flagged) as soon as it is offered
            m.d.comb += ok.eq(inp.valid & (bad | ((~local | mine.i.ready) & (~onward | down.i.ready))))
            can.append(ok)
            needs.append((local & ~bad, onward & ~bad, bad))

        turn = Signal()  # which input wins when both can move
        pick = Signal()  # the input granted this cycle (0 upstream, 1 send)
        m.d.comb += pick.eq(can[1] & (~can[0] | turn))
        grant = can[0] | can[1]
        with m.If(grant & can[0] & can[1]):
            m.d.sync += turn.eq(~pick)
        for j, inp in enumerate(inputs):
            m.d.comb += inp.ready.eq(grant & (pick == j))
        # the granted input's needs and payload
        local = Mux(pick, needs[1][0], needs[0][0])
        onward = Mux(pick, needs[1][1], needs[0][1])
        bad = Mux(pick, needs[1][2], needs[0][2])
        payload = Signal(self.layout)
        m.d.comb += payload.eq(Mux(pick, self.send.payload, self.upstream.payload))
        m.d.comb += [
            mine.i.payload.eq(payload),
            down.i.payload.eq(payload),
            mine.i.valid.eq(grant & local),
            down.i.valid.eq(grant & onward),
        ]
        with m.If(grant & bad):
            m.d.sync += self.misroute.eq(1)
        return m


class ChainNetwork(wiring.Component):
    """``n`` routers in a chain; ``send_k`` / ``deliver_k`` are core k's ports."""

    def __init__(self, data_width: int, n: int, direction: int = +1, depth: int = 2):
        self.layout = flit_layout(data_width)
        self.n, self.direction, self.depth, self.data_width = n, direction, depth, data_width
        sig = stream.Signature(self.layout)
        ports = {}
        for k in range(n):
            ports[f"send_{k}"] = In(sig)
            ports[f"deliver_{k}"] = Out(sig)
        ports["misroute"] = Out(1)
        super().__init__(ports)

    def send(self, k: int):
        return getattr(self, f"send_{k}")

    def deliver(self, k: int):
        return getattr(self, f"deliver_{k}")

    def elaborate(self, platform):
        m = Module()
        routers = []
        for k in range(self.n):
            r = ChainRouter(self.data_width, k, self.n, self.direction, self.depth)
            m.submodules[f"router{k}"] = r
            routers.append(r)
            wiring.connect(m, wiring.flipped(self.send(k)), r.send)
            wiring.connect(m, r.deliver, wiring.flipped(self.deliver(k)))
        # chain order: upstream of router k is router k-1 (spikes) or k+1 (errors)
        order = routers if self.direction > 0 else routers[::-1]
        for a, b in zip(order, order[1:]):
            wiring.connect(m, a.downstream, b.upstream)
        m.d.comb += [order[0].upstream.valid.eq(0), order[-1].downstream.ready.eq(0)]
        flags = [r.misroute for r in routers]
        m.d.comb += self.misroute.eq(Cat_or(flags))
        return m


def Cat_or(bits):
    from functools import reduce
    from operator import or_

    return reduce(or_, bits)


class Interconnect(wiring.Component):
    """The two networks of an ``n``-core accelerator: spikes toward higher core indices, error
    partial sums toward lower ones."""

    def __init__(self, n: int, spike_width: int, error_width: int, depth: int = 2):
        self.spikes = ChainNetwork(spike_width, n, +1, depth)
        self.errors = ChainNetwork(error_width, n, -1, depth)
        self.n = n
        super().__init__({"misroute": Out(2)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.spikes = self.spikes
        m.submodules.errors = self.errors
        m.d.comb += self.misroute.eq(Cat(self.spikes.misroute, self.errors.misroute))
        return m


class StallLink(wiring.Component):
    """A one-flit stage on a link that stalls at random, for verification only (``MultiCoreTop``
    with ``link_stalls``): in a cycle drawn as a stall it takes no flit, and it offers a held flit
    only when not stalled -- but once offered, the flit stays valid until taken (the stream rules),
    so the stage holds traffic back without ever withdrawing it. ``percent`` of the cycles are
    stalls on each side, drawn from a 16-bit LFSR started at ``seed`` (each link its own)."""

    def __init__(self, width: int, percent: int, seed: int):
        if not 0 <= percent < 100:
            self._MustUse__silence = True  # refused: not an elaboratable anyone forgot to use
            raise ValueError(f"link stalls are a percentage of cycles, 0..99, got {percent}")
        self.percent, self.seed = percent, (seed % 0xFFFF) + 1  # never the all-zero state
        layout = flit_layout(width)
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(16, init=self.seed)
        # x^16 + x^14 + x^13 + x^11 + 1 (maximal), shifted once per cycle
        m.d.sync += lfsr.eq(Cat(lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10], lfsr[:15]))
        limit = self.percent * 128 // 100
        stall_in, stall_out = lfsr[:7] < limit, lfsr[8:15] < limit
        full, offered = Signal(), Signal()
        held = Signal.like(self.i.payload)
        m.d.comb += [self.i.ready.eq(~full & ~stall_in), self.o.payload.eq(held),
                     self.o.valid.eq(full & (offered | ~stall_out))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [full.eq(0), offered.eq(0)]
        with m.Elif(self.o.valid):
            m.d.sync += offered.eq(1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [full.eq(1), held.eq(self.i.payload)]
        return m

