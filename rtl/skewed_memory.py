"""A P-bank matrix memory that reads and writes P elements per cycle along a row *or* a column.

The engines need a layer's matrix (weights, or weight gradients) in two directions:

* **column** access — fixed input ``i``, output neurons ``gP .. gP+P-1``: FP integration and WG
  accumulation walk the input spikes this way;
* **row** access — fixed output neuron ``j``, inputs ``hP .. hP+P-1``: BP's Wᵀδ and the row-major
  weight update walk the non-zero deltas / the rows this way.

Element (j, i) is stored in bank ``(i + j) mod P`` at address ``(j // P) * max_inputs + i``. In
either direction the P elements fall in P different banks, so one cycle serves them all; a barrel
rotation by ``i mod P`` (column) or ``j mod P`` (row) puts them in lane order. One copy of the
matrix, no transposed duplicate.

In both directions lane k of an access with major index ``major`` sits in bank
``(k + major) mod P``. Reads come in both orders: ``rd_data`` rotated into lanes, ``rd_banks`` as
stored. Writes come in bank order only: every writer in the core has a cheaper way to produce bank
order than a rotation of the word it writes (the WG engine rotates a 16-bit delta instead of a
32-bit gradient, its draws instead of its results; the host writes one element, a one-hot bank
mask; a gradient clear writes zeros), and a rotation the memory does not build costs nothing.

Reads take :data:`READ_LATENCY` = 3 cycles. The read request is registered on the way in: the
memory is shared by several requesters (FP, BP, WG, host) chosen by the core's sequencer, and
their multiplexer should not share a cycle with the address arithmetic and the block RAM's
address setup. The bank outputs are registered before the rotation: a block RAM's clock-to-out
is most of a 100 MHz cycle on its own (5.8 ns for an ECP5 DP16KD without its output register,
which Yosys' ECP5 memory library does not use), so the rotation and whatever the reader does with
the word go into the next cycle.

Writes land ``write_latency`` cycles after they are offered: 0 (the default) writes in the cycle of
``wr_en``; 1 registers the write request first, for the same reason as the read request (the
memories take their writes from several sources chosen by a multiplexer, and the address
arithmetic should not share a cycle with it). A registered write is visible to a read issued in
the next cycle, not to one issued in the same cycle: a read-modify-write user has to allow for it
(the WG accumulate's hazard window covers one more stage; the weights are never read right after
a write of the same word). A latency of 2 registers the request twice.

``single_port=True`` gives every bank one address for reads and writes, the shape of an iCE40
SPRAM (Yosys infers SB_SPRAM256KA only for a memory whose read and write share the address and
never act in the same cycle). A write landing in a cycle takes the port; a read whose block RAM
cycle meets a landing write is lost, so the user must keep them apart (the WG engine alternates).
``rw_conflict`` is a sticky flag for simulation that such a collision happened. SPRAM has no
power-up contents: a single-port memory without ``init`` starts, in simulation, with a poison
pattern instead of zeros, so a user that forgets to clear it fails its tests; the iCE40 flow drops
the pattern (see spikeforge.fpga.synth).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import times_const
from .ram import CollisionWatch

__all__ = ["SkewedMemory", "skew_address", "read_matrix", "to_banks", "READ_LATENCY", "POISON", "SINGLE_PORT_ATTR",
           "single_port", "single_port_memory_args"]

READ_LATENCY = 3  # cycles from rd_en to rd_data / rd_banks
#: a single-port memory's contents after reset in simulation (low ``width`` bits, as signed)
POISON = 0x5A5A5A5A5A5A5A5A
#: Verilog attribute on every single-port bank
SINGLE_PORT_ATTR = "spikeforge_single_port"


def _poison(width: int) -> int:
    """The poison pattern as a signed ``width``-bit value."""
    v = POISON & ((1 << width) - 1)
    return v - (1 << width) if v >> (width - 1) else v


def single_port_memory_args(single: bool, shape, depth: int) -> dict:
    """``Memory`` keyword arguments for a plain memory of P-lane words (``shape`` an
    ``ArrayLayout``): zeros, or, single-port, the poison in every lane and the marker the iCE40
    flow maps to SPRAM (see :class:`SkewedMemory`)."""
    if not single:
        return {"init": []}
    return {"init": [[_poison(shape.elem_shape.width)] * shape.length] * depth, "attrs": {SINGLE_PORT_ATTR: 1}}


def single_port(m, name: str, wp, rp):
    """Proxies for a write port ``wp`` and a read port ``rp`` of one memory that share one
    address, the shape of an SPRAM: a write takes the port, a read in the same cycle is lost (the
    caller never does both). Returns (write proxy: en, addr, data; read proxy: en, addr, data)."""
    # (a SkewedMemory bank's write enable includes its mask bit: a masked-off bank still reads)
    wr = SimpleNamespace(en=Signal(name=f"{name}_wr_en"), addr=Signal(len(wp.addr), name=f"{name}_wr_addr"),
                         data=Signal(wp.data.shape(), name=f"{name}_wr_data"))
    rd = SimpleNamespace(en=Signal(name=f"{name}_rd_en"), addr=Signal(len(rp.addr), name=f"{name}_rd_addr"),
                         data=rp.data)
    port_addr = Signal(len(wp.addr), name=f"{name}_port_addr")
    m.d.comb += [port_addr.eq(Mux(wr.en, wr.addr, rd.addr)), wp.addr.eq(port_addr), rp.addr.eq(port_addr),
                 wp.en.eq(wr.en), wp.data.eq(wr.data), rp.en.eq(rd.en & ~wr.en)]
    return wr, rd


def read_matrix(ctx, smem: "SkewedMemory", rows: int, cols: int) -> list[list[int]]:
    """Simulation helper: the stored matrix, element (j, i) at [j][i] (after elaboration)."""
    out = []
    for j in range(rows):
        row = []
        for i in range(cols):
            bank, addr = skew_address(j, i, smem.lanes, smem.max_inputs)
            row.append(ctx.get(smem.banks[bank].data[addr]))
        out.append(row)
    return out


def skew_address(j: int, i: int, lanes: int, max_inputs: int) -> tuple[int, int]:
    """(bank, address) of element (j, i): the layout, for host loaders and tests."""
    return (i + j) % lanes, (j // lanes) * max_inputs + i


class SkewedMemory(wiring.Component):
    """Ports (read and write may run in different directions):

    ``rd_en``, ``rd_row`` (0 = column, 1 = row), ``rd_major`` (i for column, j for row),
    ``rd_group`` (g or h) → ``rd_data`` (P lanes, lane k = element gP+k / hP+k)
    :data:`READ_LATENCY` cycles later, held until the next read arrives; reads may issue every
    cycle; lanes past the matrix edge read as 0. ``rd_banks`` is the same read before the rotation
    (bank b = lane (b - major) mod P): a reader of one element picks its bank directly, a reader
    that works elementwise works in bank order.
    ``wr_en``, ``wr_row``, ``wr_major``, ``wr_group``, ``wr_data``, ``wr_mask``: data and mask in
    bank order (bank b = lane (b - major) mod P; :func:`to_banks` rotates lanes into it); banks
    whose element lies past the matrix edge are not written.
    """

    def __init__(self, *, lanes: int, width: int, max_outputs: int, max_inputs: int, init=None,
                 write_latency: int = 0, single_port: bool = False, layers=None):
        if write_latency not in (0, 1, 2):
            self._MustUse__silence = True
            raise ValueError(f"SkewedMemory: write_latency must be 0, 1 or 2, got {write_latency!r}")
        self.write_latency = write_latency
        self.single_port = bool(single_port)
        for name, v in (("lanes", lanes), ("width", width), ("max_outputs", max_outputs), ("max_inputs", max_inputs)):
            if not isinstance(v, int) or v < 1:
                self._MustUse__silence = True  # a refused construction is not an unused design
                raise ValueError(f"SkewedMemory: {name} must be a positive integer, got {v!r}")
        if lanes & (lanes - 1):
            self._MustUse__silence = True
            raise ValueError(f"SkewedMemory: lanes must be a power of two (the rotation is a barrel), got {lanes}")
        self.lanes, self.width = lanes, width
        self.max_outputs, self.max_inputs = max_outputs, max_inputs
        self.groups_out = -(-max_outputs // lanes)
        # layered: several matrices one after another in each bank, layer l at base_l with its
        # own row stride (its fan-in); the ports then take the layer (rd_layer, wr_layer)
        if layers is not None:
            layers = [tuple(s) for s in layers]
            if not layers or any(len(s) != 2 or not all(isinstance(v, int) and v >= 1 for v in s) for s in layers) \
                    or any(r > max_outputs or c > max_inputs for r, c in layers) \
                    or (init and (not isinstance(init, (list, tuple)) or len(init) != len(layers))):
                self._MustUse__silence = True
                raise ValueError(f"SkewedMemory: layers must be (rows, cols) pairs within ({max_outputs}, "
                                 f"{max_inputs}), init a list of one {{(j, i): value}} per layer; got {layers!r}")
            self.layers = []
            base = 0
            for r, c in layers:
                self.layers.append((r, c, base))
                base += -(-r // lanes) * c
            self.depth = base
        else:
            self.layers = [(max_outputs, max_inputs, 0)]
            self.depth = self.groups_out * max_inputs
        self.layered = layers is not None
        # a layered memory with two ports keeps each layer in block RAMs of its own (a stacked
        # one would be deeper than one block RAM, and its cascade multiplexer would sit between
        # the block RAM and the bank register); single-port ones stack (each SPRAM is 256 kbit)
        self.split = self.layered and not self.single_port
        self.collisions = CollisionWatch("skewed")
        self._init = init  # optional {(j, i): value}; layered: a list of them, one per layer
        major_bits = max(1, ceil_log2(max(max_inputs, max_outputs)))
        group_bits = max(1, ceil_log2(max(self.groups_out, -(-max_inputs // lanes))))
        lanes_t = data.ArrayLayout(signed(width), lanes)
        super().__init__(
            {
                "rd_en": In(1), "rd_row": In(1), "rd_major": In(major_bits), "rd_group": In(group_bits),
                "rd_data": Out(lanes_t),
                "rd_banks": Out(lanes_t),
                "wr_en": In(1), "wr_row": In(1), "wr_major": In(major_bits), "wr_group": In(group_bits),
                "wr_data": In(lanes_t), "wr_mask": In(lanes),
                **({"rd_layer": In(range(len(self.layers))), "wr_layer": In(range(len(self.layers)))}
                   if self.layered else {}),
            }
        )

    def _layer_init(self, b: int, l: int) -> list[int]:
        """Bank b's words of layer l (from its own address 0)."""
        rows, cols, _ = self.layers[l]
        words = [0] * (-(-rows // self.lanes) * cols)
        inits = (self._init if self.layered else [self._init]) if self._init else []
        for (j, i), v in ((inits[l] if l < len(inits) else None) or {}).items():
            bank, addr = skew_address(j, i, self.lanes, cols)
            if bank == b:
                words[addr] = v
        return words

    def _bank_init(self, b: int) -> list[int]:
        if self.single_port and not self._init:
            return [_poison(self.width)] * self.depth
        return [w for l in range(len(self.layers)) for w in self._layer_init(b, l)]

    def _lane_map(self, m, prefix, row, major, group, layer=None):
        """The rotation amount ``major mod P``, and per bank its address and whether its element
        exists (in a layered memory, of the matrix ``layer``: each layer's map is formed and the
        layer's picked per bank).

        Everything that does not depend on the bank is formed once: the row-mode base
        ``(j // P) * max_inputs + hP``, the column-mode address ``g * max_inputs + i`` (the same in
        every bank) and the group-level edge tests. Per bank only the lane ``(b - rot) mod P`` is
        added, and the edge test ``xP + lane < N`` becomes ``x < N // P``, or ``x == N // P`` and
        ``lane < N mod P`` (a compare of two small constants-and-lanes, no carry chain per bank).
        """
        P = self.lanes
        lg = ceil_log2(P)
        rot = Signal(range(P), name=f"{prefix}_rot")
        m.d.comb += rot.eq(major[:lg] if P > 1 else 0)
        maps = [self._layer_map(m, prefix if not self.layered else f"{prefix}_l{l}", row, major, group, rot, MO, MI,
                                0 if self.split else base)
                for l, (MO, MI, base) in enumerate(self.layers)]
        if not self.layered:
            return rot, maps[0]
        if self.split:
            return rot, maps  # per layer: the caller has one block RAM per layer and bank
        out = []
        for b in range(P):
            addr = Signal(range(self.depth), name=f"{prefix}_addr{b}")
            ok = Signal(name=f"{prefix}_ok{b}")
            with m.Switch(layer):
                for l, lm in enumerate(maps):
                    with m.Case(l):
                        m.d.comb += [addr.eq(lm[b][0]), ok.eq(lm[b][1])]
            out.append((addr, ok))
        return rot, out

    def _layer_map(self, m, prefix, row, major, group, rot, MO, MI, base):
        """Per bank (address, element exists) of the matrix (MO x MI) stored from ``base`` on."""
        P = self.lanes
        depth = -(-MO // P) * MI if self.split else self.depth  # of the block RAMs addressed
        lg = ceil_log2(P)
        major_hi = major >> lg  # j // P (row mode)
        row_base = Signal(range(depth + P), name=f"{prefix}_row_base")
        col_addr = Signal(range(depth + MI), name=f"{prefix}_col_addr")
        def plus(x, c):  # no adder for a zero base (Verilator flags constant-zero operands)
            return x + c if c else x

        m.d.comb += col_addr.eq(plus(times_const(group, MI) + major, base))
        aligned = MI % P == 0 and base % P == 0
        if aligned:  # the base is a multiple of P: the lane is its low bits, no adder per bank
            m.d.comb += row_base[lg:].eq(plus(times_const(major_hi, MI // P) + group, base // P))
        else:
            m.d.comb += row_base.eq(plus(times_const(major_hi, MI) + (group << lg), base))

        def below(limit: int, tag: str):
            """(group * P + lane < limit) as a function of lane, the group part formed once."""
            full, rest = divmod(limit, P)  # constant parts left out: Verilator flags them
            lt = Signal(name=f"{prefix}_{tag}_lt")
            m.d.comb += lt.eq(group < full if full else 0)
            if rest == 0:
                return lambda lane: lt
            eq = Signal(name=f"{prefix}_{tag}_eq")
            m.d.comb += eq.eq(group == full)
            return lambda lane: lt | (eq & (lane < rest))

        in_row, in_col = below(MI, "in"), below(MO, "out")
        major_in, major_out = Signal(name=f"{prefix}_major_in"), Signal(name=f"{prefix}_major_out")
        m.d.comb += [major_in.eq(major < MI), major_out.eq(major < MO)]
        out = []
        for b in range(P):
            lane = Signal(range(P), name=f"{prefix}_lane{b}")
            addr = Signal(range(depth), name=f"{prefix}_addr{b}" if not self.layered else f"{prefix}_a{b}")
            ok = Signal(name=f"{prefix}_ok{b}" if not self.layered else f"{prefix}_k{b}")
            m.d.comb += lane.eq((b + P - rot)[:lg] if P > 1 else 0)
            with m.If(row):  # fixed j = major, inputs hP + lane
                m.d.comb += [addr.eq(row_base | lane if aligned else row_base + lane),
                             ok.eq(in_row(lane) & major_out)]
            with m.Else():  # fixed i = major, outputs gP + lane
                m.d.comb += [addr.eq(col_addr), ok.eq(in_col(lane) & major_in)]
            out.append((addr, ok))
        return out

    def elaborate(self, platform):
        m = Module()
        P = self.lanes
        # the read pipeline: rd_* → (request register) req_* → (block RAM) rd_en_d →
        # (bank register) → rd_data
        req_en, req_row = Signal(name="rd_req_en"), Signal(name="rd_req_row")
        req_major = Signal(len(self.rd_major), name="rd_req_major")
        req_group = Signal(len(self.rd_group), name="rd_req_group")
        m.d.sync += req_en.eq(self.rd_en)
        with m.If(self.rd_en):
            m.d.sync += [req_row.eq(self.rd_row), req_major.eq(self.rd_major), req_group.eq(self.rd_group)]
        req_layer = None
        if self.layered:
            req_layer = Signal.like(self.rd_layer, name="rd_req_layer")
            with m.If(self.rd_en):
                m.d.sync += req_layer.eq(self.rd_layer)
        rd_rot, rd_map = self._lane_map(m, "rd", req_row, req_major, req_group, req_layer)
        wr = SimpleNamespace(en=self.wr_en, row=self.wr_row, major=self.wr_major, group=self.wr_group,
                             data=self.wr_data, mask=self.wr_mask)
        if self.layered:
            wr.layer = self.wr_layer
        for n in range(self.write_latency):
            src = wr
            wr = SimpleNamespace(**{k: Signal.like(v, name=f"wr_req{n}_{k}") for k, v in vars(src).items()})
            m.d.sync += wr.en.eq(src.en)
            with m.If(src.en):
                m.d.sync += [getattr(wr, k).eq(getattr(src, k)) for k in vars(src) if k != "en"]
        _, wr_map = self._lane_map(m, "wr", wr.row, wr.major, wr.group, getattr(wr, "layer", None))
        rd_en_d = Signal()
        m.d.sync += rd_en_d.eq(req_en)
        rd_rot_d, rd_rot_q = Signal(range(P), name="rd_rot_d"), Signal(range(P), name="rd_rot_q")
        with m.If(req_en):
            m.d.sync += rd_rot_d.eq(rd_rot)
        with m.If(rd_en_d):
            m.d.sync += rd_rot_q.eq(rd_rot_d)
        bank_data = []
        self.banks = []  # kept for simulation-time inspection (tests read the stored matrix)
        layer_q = None
        if self.split:  # the layer of the read whose words the bank registers hold
            layer_d = Signal.like(self.rd_layer, name="rd_layer_d")
            layer_q = Signal.like(self.rd_layer, name="rd_layer_q")
            with m.If(req_en):
                m.d.sync += layer_d.eq(req_layer)
            with m.If(rd_en_d):
                m.d.sync += layer_q.eq(layer_d)
        for b in range(P):
            ok_d = Signal(name=f"rd_ok_d{b}")
            bank_q = Signal(signed(self.width), name=f"rd_bank_q{b}")
            if self.split:
                words = []
                ok = Signal(name=f"rd_ok{b}")
                with m.Switch(req_layer):
                    for l in range(len(self.layers)):
                        with m.Case(l):
                            m.d.comb += ok.eq(rd_map[l][b][1])
                mems = []
                for l in range(len(self.layers)):
                    mem = self.collisions.memory(shape=signed(self.width), depth=len(self._layer_init(b, l)),
                                                 init=self._layer_init(b, l))
                    mems.append(mem)
                    m.submodules[f"bank{b}_layer{l}"] = mem
                    rp, wp = mem.read_port(), mem.write_port()
                    self.collisions.watch(m, f"bank{b}_layer{l}", rp, wp)
                    m.d.comb += [rp.en.eq(req_en), rp.addr.eq(rd_map[l][b][0]), wp.addr.eq(wr_map[l][b][0]),
                                 wp.en.eq(wr.en & (wr.layer == l) & wr_map[l][b][1] & wr.mask[b]), wp.data.eq(wr.data[b])]
                    words.append(rp.data)
                self.banks.append(mems)
            else:
                # the marker lets the iCE40 flow find the memories bound for SPRAM (spikeforge.fpga.synth)
                attrs = {SINGLE_PORT_ATTR: 1} if self.single_port else None
                mem = self.collisions.memory(shape=signed(self.width), depth=self.depth, init=self._bank_init(b), attrs=attrs)
                self.banks.append(mem)
                m.submodules[f"bank{b}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                self.collisions.watch(m, f"bank{b}", rp, wp)
                if self.single_port:  # one address; a landing write takes the port
                    wp, rp = single_port(m, f"bank{b}", wp, rp)
                addr, ok = rd_map[b]
                waddr, wok = wr_map[b]
                m.d.comb += [rp.en.eq(req_en), rp.addr.eq(addr), wp.addr.eq(waddr),
                             wp.en.eq(wr.en & wok & wr.mask[b]), wp.data.eq(wr.data[b])]
                words = [rp.data]
            with m.If(req_en):
                m.d.sync += ok_d.eq(ok)
            # an element past the matrix edge reads as 0: written as the register's synchronous
            # reset, so the block RAM's output (and its cascade multiplexer, in a memory deeper
            # than one block) feeds the register's data input with no gate in between. Split
            # layers are registered each and selected after the registers.
            regs = []
            for l, w in enumerate(words):
                q = bank_q if len(words) == 1 else Signal(signed(self.width), name=f"rd_bank_q{b}_layer{l}")
                with m.If(rd_en_d & ~ok_d):
                    m.d.sync += q.eq(0)
                with m.Elif(rd_en_d):
                    m.d.sync += q.eq(w)
                regs.append(q)
            if len(regs) > 1:
                with m.Switch(layer_q):
                    for l, q in enumerate(regs):
                        with m.Case(l):
                            m.d.comb += bank_q.eq(q)
            bank_data.append(bank_q)
        if self.single_port:
            self.rw_conflict = Signal(name="rw_conflict")  # simulation only: a read lost to a write
            with m.If(req_en & wr.en):
                m.d.sync += self.rw_conflict.eq(1)
        for b in range(P):
            m.d.comb += self.rd_banks[b].eq(bank_data[b])
        lanes = _rotate(m, "rd_lane", bank_data, rd_rot_q, toward_lanes=True)
        for k in range(P):
            m.d.comb += self.rd_data[k].eq(lanes[k])
        self.collisions.drive(m)
        return m


def to_banks(m, name, items, major):
    """``items`` (one per lane, for an access with major index ``major``) in bank order:
    out[b] = items[(b - major) mod P], P = len(items) a power of two."""
    P = len(items)
    if P == 1:
        return list(items)
    rot = Signal(range(P), name=f"{name}_rot")
    m.d.comb += rot.eq(major)  # major mod P (the assignment truncates; a narrow major extends)
    return _rotate(m, name, items, rot, toward_lanes=False)


def _rotate(m, name, items, rot, *, toward_lanes: bool):
    """A log-depth barrel rotation of ``items`` by the runtime amount ``rot`` (log2 P stages of
    2:1 multiplexers instead of a P:1 multiplexer per output, which Yosys builds from if-chains).

    toward_lanes: out[k] = items[(k + rot) mod P] (banks → lanes, the read side);
    otherwise out[b] = items[(b - rot) mod P] (lanes → banks, the write side).
    """
    P = len(items)
    cur = list(items)
    for s in range(P.bit_length() - 1):
        step = 1 << s
        nxt = []
        for k in range(P):
            src = (k + step) % P if toward_lanes else (k - step) % P
            v = Signal(len(cur[k]), name=f"{name}_s{s}_{k}")
            m.d.comb += v.eq(Mux(rot[s], cur[src], cur[k]))
            nxt.append(v)
        cur = nxt
    return cur
