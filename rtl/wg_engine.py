"""WG engine: weight-gradient accumulation and the weight update of one layer, P lanes per cycle.

**Accumulate** (docs/arithmetic.md §6.3). The input spikes of the layer arrive timestep by
timestep on ``spikes_in`` (``eot`` closes a timestep). At the first spike of a timestep the engine
*scans* the G = ceil(rows/P) delta groups of that timestep once through the delta read port
(``delta_en``/``delta_group`` → ``delta_data`` the next cycle) and keeps only the non-zero groups,
with their deltas, in a small list memory. Every input spike ``i`` then costs one cycle per
non-zero group: a read-modify-write of the gradient column ``(i, gP..gP+P-1)`` in the skewed
gradient memory, ``grad += delta``. The work of a batch is therefore

    Σ_t nnz(x[t]) × (groups of δ[t] that are not all zero)  +  (G + 2) per timestep with spikes,

and a timestep without a single non-zero delta costs one cycle per spike. Which timestep's
deltas the port returns is the sequencer's business: it switches at each ``eot`` handshake (the
engine never reads deltas of a timestep after accepting its ``eot``, nor before accepting the
previous one).

**Update** (§6.4). An ``update`` pulse walks the matrix row-major (j = 0..rows-1, then h =
0..ceil(cols/P)-1) with row accesses of the gradient memory and of the external weight memory,
writes ``W' = sat_weight(W - round(grad / 2**lr_shift))`` and clears the gradient. Stochastic
rounding takes exactly one ``min(lr_shift, 16)``-bit draw per weight from the update LFSR, P per
cycle and ``cols mod P`` for the last group of a row, so the stream position is independent of P.

``lr_shift`` is latched with the ``update`` pulse and must be one of the values given at
elaboration (``lr_shifts``: by default the config's lr_shift and each decayed value; an engine
without a list takes any 0..48); ``shift_ok`` tells, and an ``update`` pulse while it is low is
ignored. Each supported value is a constant shift, so the rounding is wiring, a multiplexer and one
adder per lane instead of a 0..48 barrel shifter. Stochastic draws are exactly ``min(lr_shift, 16)``
bits (the contract takes the *next* k output bits per draw, so narrower draws cannot be cut from
wider ones): the LFSR has a draw network per width. The update is a pipeline (read; register;
rounded step; saturate; write) so that no stage holds more than one adder chain.
"""

from __future__ import annotations

from collections.abc import Iterable

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden.backend import update_seed
from spikeforge.golden.model import update_draw_bits

from . import arith
from .delay_line import DelayLine
from .fp_engine import spike_event_layout
from .lfsr import LfsrDraws
from .params import CoreParams
from .ram import CollisionWatch
from .skewed_memory import SkewedMemory, to_banks

__all__ = ["WgEngine", "MAX_LR_SHIFT"]

#: the largest lr_shift a config can reach (spikeforge.config: lr_shift + decays <= 48)
MAX_LR_SHIFT = 48


class WgEngine(wiring.Component):
    """Ports:

    * ``spikes_in`` -- input spike events {index, eot, fresh} (``fresh`` is ignored: the gradient
      accumulates over the whole batch);
    * ``rows``, ``cols`` -- the layer's fan_out and fan_in, held stable while ``busy``;
    * ``delta_en``, ``delta_group`` → ``delta_data`` -- read port of the current timestep's deltas;
    * ``update``, ``lr_shift`` → ``shift_ok`` -- start the update (a one-cycle pulse);
    * ``w_rd_*`` / ``w_wr_*`` -- a read and a write port of the layer's weight
      :class:`SkewedMemory`, same names and meaning as its ``rd_*`` / ``wr_*`` ports, the read
      side in bank order (``w_rd_banks``, the memory's ``rd_banks``): the update works elementwise,
      so it keeps the order the banks store and never rotates a gradient or a weight;
    * ``grad_rd_*`` -- a host read port of the gradient memory (multi-core reduction, debug),
      served while the engine is idle;
    * ``lfsr_load``, ``lfsr_seed``, ``lfsr_state`` -- the update LFSR (only with stochastic update
      rounding); with ``shared_lfsr`` instead ``draws`` (In) and ``draw_next``, ``draw_take``,
      ``draw_width`` (Out, one-hot over ``draw_widths``): the engine drives an :class:`LfsrDraws`
      (``width_onehot``) the core shares among its engines (they update one layer at a time, so
      one draw network serves all);
    * ``busy``, ``stalled`` (an offered input event waits: delta scan, update, pipeline drain),
      ``event`` (an input spike consumed).

    Parameters: ``lr_shifts`` -- lr_shift values stochastic rounding must support (ignored for
    the other modes); ``fan_ins`` -- the fan-ins of the layers this engine will update, to build
    LFSR advance networks only for the partial-group sizes ``fan_in mod P`` that occur (``None``:
    all of 1..P-1); ``lfsr_init_seed`` -- the update LFSR's state after reset is
    ``seed_state(lfsr_init_seed)``; ``grad_shape`` -- (fan_out, fan_in) of the largest layer the
    engine will update (default: the largest of the network), which sizes the gradient memory;
    ``distinct_indices`` -- the producer promises that no input index comes twice within one
    timestep (the spike scanner's bitmap walk cannot repeat one), so two events never touch the
    same gradient word before the pipe drains at eot, and the same-word hazard check (and its
    place on the path from the event's index to ``spikes_in.ready``) is left out;
    ``grad_layers`` -- [(fan_out, fan_in)] of several layers this one engine serves, one after
    another (the core's layers): the gradient memory keeps each layer's matrix apart
    (:class:`SkewedMemory` ``layers``), ``layer`` (In) says which one the engine works on (held
    while ``busy``, like ``rows``/``cols``) and ``grad_rd_layer`` which one the host port reads;
    ``single_port`` -- the gradient memory has one port per bank (iCE40 SPRAM, see
    :class:`SkewedMemory`): the engine touches it only every other cycle (accumulate and update
    at half rate), reads in one phase of that cadence and writes in the other (a write lands five
    cycles after its read, one more register than with two ports), and clears the memory after
    reset (state CLEAR, one row group per cycle, ``busy`` meanwhile), since SPRAM has no
    power-up contents.
    """

    def __init__(self, params: CoreParams, *, lr_shifts: Iterable[int] = (), fan_ins: Iterable[int] | None = None,
                 lfsr_init_seed: int = 1, grad_shape: tuple[int, int] | None = None, shared_lfsr: bool = False,
                 distinct_indices: bool = False, single_port: bool = False, grad_layers=None):
        if not isinstance(params, CoreParams):
            raise TypeError(f"WgEngine needs CoreParams, got {type(params).__name__}")
        P = params.lanes
        if P < 1 or P & (P - 1):
            raise ValueError(f"WgEngine: lanes must be a power of two, got {P}")
        shifts = tuple(lr_shifts)
        for s in shifts:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_LR_SHIFT:
                raise ValueError(f"WgEngine: lr_shifts entries must be integers in [0, {MAX_LR_SHIFT}], got {s!r}")
        self.distinct_indices = bool(distinct_indices)
        self.single_port = bool(single_port)
        self.stochastic = params.update_rounding == "stochastic"
        if self.stochastic and not shifts:
            raise ValueError("WgEngine: stochastic update rounding needs the lr_shift values to support (lr_shifts)")
        if fan_ins is None:
            short = tuple(range(1, P))
        else:
            fan_ins = tuple(fan_ins)
            for f in fan_ins:
                if isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= params.max_inputs:
                    raise ValueError(f"WgEngine: fan_ins entries must be integers in [1, {params.max_inputs}], got {f!r}")
            short = tuple(sorted({f % P for f in fan_ins} - {0}))
        if isinstance(lfsr_init_seed, bool) or not isinstance(lfsr_init_seed, int) or not 0 <= lfsr_init_seed < 1 << 32:
            raise ValueError(f"WgEngine: lfsr_init_seed must be a 32-bit unsigned integer, got {lfsr_init_seed!r}")
        self.p = params
        self.lr_shifts = shifts
        #: the lr_shift values an update accepts (``shift_ok``): the given ones; an engine without a
        #: list (floor / half rounding only) takes every 0..MAX_LR_SHIFT, at the area of a barrel
        self.supported_shifts = tuple(sorted(set(shifts))) if shifts else tuple(range(MAX_LR_SHIFT + 1))
        #: the update step is clamped to this many bits (exact: see _rounded_step)
        self.step_bits = params.weight_bits + 3
        self.draw_widths = tuple(sorted({update_draw_bits(s) for s in shifts if s > 0}))
        self.short_counts = short
        self.lfsr_init_seed = lfsr_init_seed
        #: an update LFSR (and its load/seed/state ports) only where stochastic rounding draws
        draws = bool(self.stochastic and self.draw_widths)
        #: an own LFSR (load/seed/state ports), or draws from one shared with other engines
        #: (``draws`` in; ``draw_next``/``draw_take``/``draw_width`` out, to drive it)
        self.has_lfsr = draws and not shared_lfsr
        self.shared_lfsr = draws and shared_lfsr
        if self.has_lfsr:
            lfsr_ports = {"lfsr_load": In(1), "lfsr_seed": In(32), "lfsr_state": Out(32)}
        elif self.shared_lfsr:
            lfsr_ports = {"draws": In(data.ArrayLayout(unsigned(max(self.draw_widths)), P)), "draw_next": Out(1),
                          "draw_take": Out(range(P + 1)), "draw_width": Out(max(1, len(self.draw_widths)))}
        else:
            lfsr_ports = {}
        # the gradient memory holds only the largest layer this engine updates: in a core with one
        # engine per layer, its own layer (`grad_shape`), not the largest layer of the network
        if grad_layers is not None:
            grad_layers = [tuple(s) for s in grad_layers]
            if grad_shape is not None or not grad_layers:
                raise ValueError("WgEngine: give grad_shape or grad_layers (a non-empty list), not both")
            grad_shape = (max(r for r, _ in grad_layers), max(c for _, c in grad_layers))
        self.grad_layers = grad_layers
        rows_max, cols_max = grad_shape if grad_shape is not None else (params.max_neurons, params.max_inputs)
        if not (1 <= rows_max <= params.max_neurons and 1 <= cols_max <= params.max_inputs):
            raise ValueError(f"WgEngine: grad_shape {grad_shape!r} must lie within "
                             f"({params.max_neurons}, {params.max_inputs})")
        self.grad_shape = (rows_max, cols_max)
        # writes registered (write_latency 1): the accumulate's hazard window covers s1..s4 for it;
        # single-port, registered twice, so that a write lands an odd number of cycles after its
        # read and the two phases of the every-other-cycle cadence never meet (the window stays
        # s1..s4: an item in s5 is in a cycle where nothing issues)
        self.grad = SkewedMemory(lanes=P, width=params.grad_bits, max_outputs=rows_max, max_inputs=cols_max,
                                 write_latency=2 if self.single_port else 1, single_port=self.single_port,
                                 layers=grad_layers)
        self.collisions = CollisionWatch("wg")
        self.collisions.include(self.grad.collisions)
        layer_ports = {"layer": In(range(len(grad_layers))), "grad_rd_layer": In(range(len(grad_layers)))} \
            if grad_layers else {}
        major_bits, group_bits = len(self.grad.rd_major), len(self.grad.rd_group)
        w_lanes = data.ArrayLayout(signed(params.weight_bits), P)
        super().__init__(
            {
                "spikes_in": In(stream.Signature(spike_event_layout(params.input_index_bits))),
                "rows": In(range(params.max_neurons + 1)),
                "cols": In(range(params.max_inputs + 1)),
                "delta_en": Out(1),
                "delta_group": Out(params.group_bits),
                "delta_data": In(data.ArrayLayout(signed(params.error_bits), P)),
                "update": In(1),
                "lr_shift": In(range(MAX_LR_SHIFT + 1)),
                "shift_ok": Out(1),
                "w_rd_en": Out(1), "w_rd_row": Out(1), "w_rd_major": Out(major_bits), "w_rd_group": Out(group_bits),
                "w_rd_banks": In(w_lanes),
                "w_wr_en": Out(1), "w_wr_row": Out(1), "w_wr_major": Out(major_bits), "w_wr_group": Out(group_bits),
                "w_wr_data": Out(w_lanes), "w_wr_mask": Out(P),
                "grad_rd_en": In(1), "grad_rd_row": In(1), "grad_rd_major": In(major_bits),
                "grad_rd_group": In(group_bits),
                "grad_rd_data": Out(data.ArrayLayout(signed(params.grad_bits), P)),
                "grad_rd_banks": Out(data.ArrayLayout(signed(params.grad_bits), P)),
                **lfsr_ports,
                **layer_ports,
                "busy": Out(1),
                "stalled": Out(1),
                "event": Out(1),
            }
        )

    @classmethod
    def from_config(cls, cfg: SpikeforgeConfig) -> "WgEngine":
        """The engine for a config: every lr_shift the decay schedule reaches, the config's fan-ins,
        and the update LFSR seeded as docs/arithmetic.md §3 says."""
        tr = cfg.training
        return cls(
            CoreParams.from_config(cfg),
            lr_shifts=tuple(tr.lr_shift + n for n in range(len(tr.lr_decay_epochs) + 1)),
            fan_ins=tuple(n_in for _, n_in in cfg.layer_shapes),
            lfsr_init_seed=update_seed(cfg),
        )

    # -----------------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.lanes
        log_p = P.bit_length() - 1
        G_max = p.max_groups
        m.submodules.grad = grad = self.grad
        ev = self.spikes_in
        # single-port: the gradient memory is touched only in cycles where may_touch is high
        may_touch = Const(1)
        if self.single_port:
            phase = Signal(name="port_phase")
            m.d.sync += phase.eq(~phase)
            may_touch = ~phase

        n_groups = Signal(p.group_bits)  # output groups of the layer
        # input groups of a row; a count, so one value more than the memory's group index holds
        n_hgroups = Signal(range(-(-p.max_inputs // P) + 1))
        tail = Signal(range(P))  # draws in the last group of a row, 0 = a full group
        m.d.comb += [
            n_groups.eq((self.rows + P - 1) >> log_p),
            n_hgroups.eq((self.cols + P - 1) >> log_p),
            tail.eq(self.cols & (P - 1)),
        ]

        # the host port by default; the engine's own accesses below take precedence
        m.d.comb += [
            grad.rd_en.eq(self.grad_rd_en), grad.rd_row.eq(self.grad_rd_row),
            grad.rd_major.eq(self.grad_rd_major), grad.rd_group.eq(self.grad_rd_group),
            self.grad_rd_data.eq(grad.rd_data), self.grad_rd_banks.eq(grad.rd_banks),
        ]
        layered = self.grad_layers is not None
        if layered:  # the engine's own reads and every write are of its current layer
            with m.If(self.grad_rd_en):
                m.d.comb += grad.rd_layer.eq(self.grad_rd_layer)
            with m.Else():
                m.d.comb += grad.rd_layer.eq(self.layer)
            m.d.comb += grad.wr_layer.eq(self.layer)

        # ---- non-zero delta groups of the current timestep, with their deltas ------------------
        entry = data.StructLayout({"group": unsigned(p.group_bits), "delta": data.ArrayLayout(signed(p.error_bits), P)})
        m.submodules.nz_list = nz_list = self.collisions.memory(shape=entry, depth=G_max, init=[])
        nz_wr = nz_list.write_port()
        nz_rd = nz_list.read_port()
        m.d.comb += nz_rd.en.eq(0)  # read only as an entry issues
        self.collisions.watch(m, "wg_nonzero", nz_rd, nz_wr)
        nz_count = Signal(range(G_max + 1))
        issue_idx = Signal(range(G_max + 1))  # list entry of the current spike
        issue_next = Signal(range(G_max + 2), init=1)  # issue_idx + 1, kept as a register
        at_first = Signal(init=1, name="issue_at_first")  # issue_idx == 0
        # compares the ready logic needs, kept as registers updated wherever their operands are
        # (the engine's ready feeds its skid buffer's valid: the compares stay off that path)
        nz_empty = Signal(init=1, name="nz_empty")  # nz_count == 0
        at_last = Signal(name="at_last_entry")  # issue_next == nz_count: the spike's last list entry
        scanned = Signal()  # nz_list holds the current timestep
        scan_group = Signal(p.group_bits)
        sc_valid = Signal()
        sc_group = Signal(p.group_bits)

        # sc: the δ word is on delta_data and tested; sc2: a non-zero group is filed (registered
        # first, so the test and the list's write enable do not share a cycle). The compact
        # layout files it in the sc cycle itself (SCAN_FILE then waits a cycle for nothing)
        sc2_valid = Signal()
        sc2_entry = Signal(entry)
        file_valid, file_entry = (Signal(name="sc_file"), Signal(entry, name="sc_entry")) if p.compact else (sc2_valid, sc2_entry)
        m.d.sync += [sc_valid.eq(0), sc2_valid.eq(0)]
        with m.If(sc_valid):
            live = Signal(P)
            for k in range(P):
                # lanes past the layer's last neuron are never counted nor written
                m.d.comb += live[k].eq((self.delta_data[k] != 0) & (sc_group * P + k < self.rows))
            if p.compact:
                m.d.comb += [file_valid.eq(live.any()), file_entry.group.eq(sc_group), file_entry.delta.eq(self.delta_data)]
            else:
                m.d.sync += [sc2_valid.eq(live.any()), sc2_entry.group.eq(sc_group), sc2_entry.delta.eq(self.delta_data)]
        with m.If(file_valid):
            m.d.comb += [nz_wr.en.eq(1), nz_wr.addr.eq(nz_count), nz_wr.data.eq(file_entry)]
            m.d.sync += [nz_count.eq(nz_count + 1), nz_empty.eq(0), at_last.eq(issue_next == nz_count + 1)]

        # ---- accumulate pipeline: issue (list read) → s1 (gradient read requested) → s2 (the
        # block RAM reads; the deltas rotated into bank order) → s3 (bank words registered in
        # the memory) → s4 (add, registered) → s5 (write). Bank order throughout: the 16-bit
        # deltas are rotated instead of the 32-bit gradients, twice. The block RAM reads a word
        # at the end of s2, and the write of an item issued earlier (offered in its s5, registered
        # in the memory) lands at the end of its s6, so the issue holds while an item in s1..s4
        # targets the same word: same input index and
        # same list entry (one timestep's entries are distinct groups; the list is only
        # rewritten after the pipe has drained at eot).
        s1_valid = Signal()
        s1_index = Signal(p.input_index_bits)
        s1_entry = Signal(range(G_max + 1))
        s2_valid = Signal()
        s2_index = Signal(p.input_index_bits)
        s2_entry = Signal(range(G_max + 1))
        s2_group = Signal(p.group_bits)
        s2_delta = Signal(data.ArrayLayout(signed(p.error_bits), P))
        s3_valid = Signal()
        s3_index = Signal(p.input_index_bits)
        s3_entry = Signal(range(G_max + 1))
        s3_group = Signal(p.group_bits)
        s3_delta = Signal(data.ArrayLayout(signed(p.error_bits), P))
        s4_valid = Signal()
        s4_major = Signal(p.input_index_bits)
        s4_entry = Signal(range(G_max + 1))
        s4_group = Signal(p.group_bits)
        s4_delta = Signal(data.ArrayLayout(signed(p.error_bits), P))
        s4_mask = Signal(P)
        s5_valid = Signal()
        s6_valid = Signal()
        s5_major = Signal(p.input_index_bits)
        s5_group = Signal(p.group_bits)
        s5_data = Signal(data.ArrayLayout(signed(p.grad_bits), P))
        s5_mask = Signal(P)
        s7_valid = Signal()  # single-port: the memory's second write register

        with m.If(s1_valid):
            m.d.comb += [grad.rd_en.eq(1), grad.rd_row.eq(0), grad.rd_major.eq(s1_index),
                         grad.rd_group.eq(nz_rd.data.group)]
        if not self.distinct_indices:  # list entries only matter to the hazard check
            m.d.sync += [s2_entry.eq(s1_entry), s3_entry.eq(s2_entry), s4_entry.eq(s3_entry)]
        if self.single_port:
            m.d.sync += s7_valid.eq(s6_valid)
        # one lane, the compact layout and no hazard check (distinct indices): the index, group
        # and δ go from s1 (the list entry on nz_rd) straight into block RAM delay lines, and only
        # the lane's "is a neuron of the layer" bit rides along in flip-flops
        lean = p.compact and P == 1 and self.distinct_indices
        m.d.sync += [s2_valid.eq(s1_valid), s3_valid.eq(s2_valid), s4_valid.eq(s3_valid), s5_valid.eq(s4_valid),
                     s5_mask.eq(s4_mask), s6_valid.eq(s5_valid)]
        if lean:
            m.submodules.a_line = a_line = DelayLine(unsigned(len(s1_index) + len(s5_group)), 4, "wg_a_line")
            m.submodules.s_line = s_line = DelayLine(unsigned(p.error_bits), 3, "wg_s_line")
            self.collisions.include(a_line.collisions)
            self.collisions.include(s_line.collisions)
            m.d.comb += [a_line.i.eq(Cat(s1_index, nz_rd.data.group)), Cat(s5_major, s5_group).eq(a_line.o),
                         s_line.i.eq(nz_rd.data.delta.as_value()), s4_delta.as_value().eq(s_line.o)]
            s2_live, s3_live = Signal(name="acc_live_s2"), Signal(name="acc_live_s3")
            m.d.sync += [s2_live.eq(nz_rd.data.group < self.rows), s3_live.eq(s2_live), s4_mask.eq(s3_live)]
        else:
            m.d.sync += [s2_index.eq(s1_index), s2_group.eq(nz_rd.data.group), s2_delta.eq(nz_rd.data.delta),
                         s3_index.eq(s2_index), s3_group.eq(s2_group)]
            if p.compact:  # the write address (s2's, three cycles on) through a block RAM
                m.submodules.a_line = a_line = DelayLine(unsigned(len(s2_index) + len(s2_group)), 3, "wg_a_line")
                self.collisions.include(a_line.collisions)
                m.d.comb += [a_line.i.eq(Cat(s2_index, s2_group)), Cat(s5_major, s5_group).eq(a_line.o)]
                if not self.distinct_indices:  # the hazard check looks at s4
                    m.d.sync += s4_major.eq(s3_index)
            else:
                m.d.sync += [s4_major.eq(s3_index), s4_group.eq(s3_group), s5_major.eq(s4_major), s5_group.eq(s4_group)]
            delta_banks = to_banks(m, "acc_delta", [s2_delta[k] for k in range(P)], s2_index)
            if p.compact:  # s2's deltas in bank order reach s4 through a block RAM
                m.submodules.s_line = s_line = DelayLine(unsigned(P * p.error_bits), 2, "wg_s_line")
                self.collisions.include(s_line.collisions)
                m.d.comb += [s_line.i.eq(Cat(*delta_banks)), s4_delta.as_value().eq(s_line.o)]
            else:
                m.d.sync += [s3_delta[b].eq(delta_banks[b]) for b in range(P)]
                m.d.sync += s4_delta.eq(s3_delta)
            s3_live = [Signal(name=f"acc_live_{k}") for k in range(P)]  # lane k is a neuron of the layer
            m.d.comb += [s3_live[k].eq(s3_group * P + k < self.rows) for k in range(P)]
            m.d.sync += s4_mask.eq(Cat(*to_banks(m, "acc_mask", s3_live, s3_index)))
        # exact: grad_bits is validated wide enough for error_bits x T x B
        m.d.sync += [s5_data[b].eq(grad.rd_banks[b] + s4_delta[b]) for b in range(P)]
        raw_hazard = Signal()  # the word about to be issued is still being updated in s1..s4
        if not self.distinct_indices:
            m.d.comb += raw_hazard.eq(Cat(*[v & (i == ev.payload.index) & (e == issue_idx) for v, i, e in (
                (s1_valid, s1_index, s1_entry), (s2_valid, s2_index, s2_entry), (s3_valid, s3_index, s3_entry),
                (s4_valid, s4_major, s4_entry))]).any())
        acc_busy = Signal()  # s6 (s7): the gradient memory's write registers (its write_latency)
        m.d.comb += acc_busy.eq(s1_valid | s2_valid | s3_valid | s4_valid | s5_valid | s6_valid | s7_valid)

        # ---- update datapath, in bank order: read requested (UPDATE state) → u1 the block RAMs
        # read → u1b the gradient cleared, the draws taken → u2 bank words (registered in the
        # memories), the draws rotated into bank order → u3 step base and rounding increment (or
        # draw and r') → u4 step → u5 saturated weight, written. The stages only exist for the
        # clock: each (row, group) is read once and written once, so nothing in flight can alias.
        shift = Signal(range(MAX_LR_SHIFT + 1))  # latched with the update pulse
        # and decoded there: the rounding selects its shifted gradient by one register per value
        shift_is = {v: Signal(name=f"shift_is_{v}") for v in self.supported_shifts}
        u1_valid = Signal()
        u1_row = Signal(len(grad.rd_major))
        u1_group = Signal(len(grad.rd_group))
        lanes_of = lambda bits: data.ArrayLayout(signed(bits), P)  # noqa: E731
        u2_valid = Signal()
        u2_grad, u2_w = grad.rd_banks, self.w_rd_banks  # registered in the memories
        u3_valid = Signal()
        # u3 holds the shifted gradient's low bits and whether it fits them (the clamp is
        # finished in u4, with the rounding increment's add)
        u3_low = Signal(lanes_of(self.step_bits))
        u3_fits = Signal(P)
        u3_neg = Signal(P)
        u3_sticky = Signal(P)  # half_even: bits below the half bit
        u3_inc = Signal(P)  # stochastic: draw < r_top
        u3_rtop = Signal(data.ArrayLayout(unsigned(16), P))
        u3_draw = Signal(data.ArrayLayout(unsigned(16), P))
        u3_w = Signal(lanes_of(p.weight_bits))
        u4_valid = Signal()
        u4_step = Signal(lanes_of(self.step_bits))
        u4_w = Signal(lanes_of(p.weight_bits))
        u5_valid = Signal()
        u5_w = Signal(lanes_of(p.weight_bits))
        u1b_valid = Signal()
        u_row = [Signal(len(grad.rd_major), name=f"u{n}_row") for n in ("1b", 2, 3, 4, 5)]
        u_group = [Signal(len(grad.rd_group), name=f"u{n}_group") for n in ("1b", 2, 3, 4, 5)]
        m.d.sync += [u1b_valid.eq(u1_valid), u2_valid.eq(u1b_valid), u3_valid.eq(u2_valid), u4_valid.eq(u3_valid), u5_valid.eq(u4_valid),
                     u_row[0].eq(u1_row), u_group[0].eq(u1_group)]
        if p.compact:
            # u5's address (u1's, four cycles on) through a block RAM; u2 keeps its register for the
            # draw rotation of a many-lane build, u3 and u4 carry no address
            m.submodules.u_line = u_line = DelayLine(unsigned(len(u1_row) + len(u1_group)), 4, "wg_u_line")
            self.collisions.include(u_line.collisions)
            m.d.comb += [u_line.i.eq(Cat(u1_row, u1_group)), Cat(u_row[-1], u_group[-1]).eq(u_line.o)]
            m.d.sync += [u_row[1].eq(u_row[0]), u_group[1].eq(u_group[0])]
        else:
            for n in range(1, len(u_row)):
                m.d.sync += [u_row[n].eq(u_row[n - 1]), u_group[n].eq(u_group[n - 1])]

        draws = lfsr_in = None
        if self.has_lfsr or self.shared_lfsr:
            if self.has_lfsr:
                lfsr = LfsrDraws(self.draw_widths, P, short_counts=self.short_counts, init_seed=self.lfsr_init_seed,
                                 width_onehot=True)
                m.submodules.lfsr = lfsr
                m.d.comb += [lfsr.load.eq(self.lfsr_load), lfsr.seed.eq(self.lfsr_seed), self.lfsr_state.eq(lfsr.state)]
                draws, nxt = lfsr.draws, lfsr.next
                width = lfsr.width if len(self.draw_widths) > 1 else None
                take = lfsr.take if self.short_counts else None
            else:
                draws, nxt, width, take = self.draws, self.draw_next, self.draw_width, self.draw_take
            lfsr_in = (nxt, take, width)  # driven below, once the update FSM exists
            u2_draw = Signal(data.ArrayLayout(unsigned(16), P))  # lane order, as the LFSR gives them
            m.d.sync += [u2_draw[k].eq(draws[k]) for k in range(P)]

        ok = Const(0)
        for v in self.supported_shifts:
            ok = ok | (self.lr_shift == v)
        m.d.comb += self.shift_ok.eq(ok)

        draw_banks = to_banks(m, "upd_draw", [u2_draw[k] for k in range(P)], u_row[1]) if draws is not None else None
        w_max, w_min = (1 << (p.weight_bits - 1)) - 1, -(1 << (p.weight_bits - 1))
        for k in range(P):  # k is a bank here
            low, fits, sticky, r_top = self._rounding_select(m, k, u2_grad[k], shift_is)
            m.d.sync += [u3_low[k].eq(low), u3_fits[k].eq(fits), u3_neg[k].eq(u2_grad[k][-1]), u3_w[k].eq(u2_w[k])]
            if sticky is not None:
                m.d.sync += u3_sticky[k].eq(sticky)
            if r_top is not None:  # the draw taken with this weight, compared next cycle
                m.d.sync += [u3_rtop[k].eq(r_top), u3_draw[k].eq(draw_banks[k] if draws is not None else 0)]
                m.d.comb += u3_inc[k].eq(u3_draw[k] < u3_rtop[k])
            step = self._rounded_step(m, k, u3_low[k], u3_fits[k], u3_neg[k], u3_sticky[k], u3_inc[k])
            m.d.sync += [u4_step[k].eq(step), u4_w[k].eq(u3_w[k])]
            diff = Signal(signed(self.step_bits + 1), name=f"upd_diff_{k}")
            m.d.comb += diff.eq(u4_w[k] - u4_step[k])
            m.d.sync += u5_w[k].eq(arith.saturate(m, diff, w_min, w_max, p.weight_bits, f"upd_w_{k}"))
        # the weight memory may be wider than this layer: lanes past fan_in are not ours
        upd_lanes, clr_lanes = Signal(P), Signal(P)
        for k in range(P):
            m.d.comb += [upd_lanes[k].eq(u_group[-1] * P + k < self.cols), clr_lanes[k].eq(u_group[0] * P + k < self.cols)]
        upd_mask = Cat(*to_banks(m, "upd_mask", list(upd_lanes), u_row[-1]))
        clr_mask = Cat(*to_banks(m, "clr_mask", list(clr_lanes), u_row[0]))

        m.d.comb += [self.w_wr_row.eq(1), self.w_wr_major.eq(u_row[-1]), self.w_wr_group.eq(u_group[-1]),
                     self.w_wr_data.eq(u5_w), self.w_wr_mask.eq(upd_mask), self.w_rd_row.eq(1),
                     self.w_wr_en.eq(u5_valid)]
        upd_row = Signal(len(grad.rd_major))  # the update's (and the power-up clear's) walk
        upd_group = Signal(len(grad.rd_group))
        clearing = Signal()  # single-port: the power-up clear writes a row group of zeros
        clear_layer = Signal(range(len(self.grad_layers or [0])), name="clear_layer")
        with m.If(u1b_valid):
            # the gradient is cleared the cycle after the block RAM read it (the accumulate path
            # may write again once the FSM is back in RUN, while u2..u5 still drain)
            m.d.comb += [grad.wr_en.eq(1), grad.wr_row.eq(1), grad.wr_major.eq(u_row[0]), grad.wr_group.eq(u_group[0]),
                         grad.wr_data.eq(0), grad.wr_mask.eq(clr_mask)]
        with m.Elif(s5_valid):
            m.d.comb += [grad.wr_en.eq(1), grad.wr_row.eq(0), grad.wr_major.eq(s5_major), grad.wr_group.eq(s5_group),
                         grad.wr_data.eq(s5_data), grad.wr_mask.eq(s5_mask)]
        with m.Elif(clearing):
            m.d.comb += [grad.wr_en.eq(1), grad.wr_row.eq(1), grad.wr_major.eq(upd_row), grad.wr_group.eq(upd_group),
                         grad.wr_data.eq(0), grad.wr_mask.eq((1 << P) - 1)]
            if layered:
                m.d.comb += grad.wr_layer.eq(clear_layer)
        m.d.sync += u1_valid.eq(0)

        # ---- control ---------------------------------------------------------------------------
        pending = Signal()  # an update was requested and has not started
        working = Signal()  # the offered event is being served this cycle
        m.d.comb += [
            self.delta_group.eq(scan_group),
            nz_rd.addr.eq(issue_idx),
            self.w_rd_major.eq(upd_row),
            self.w_rd_group.eq(upd_group),
        ]
        m.d.sync += s1_valid.eq(0)
        with m.FSM() as fsm:
            if self.single_port:
                with m.State("CLEAR"):
                    # every row group of every layer, whatever rows/cols say
                    m.d.comb += clearing.eq(1)
                    shapes = self.grad_layers or [self.grad_shape]
                    last_group, last_row = Signal(name="clear_last_group"), Signal(name="clear_last_row")
                    with m.Switch(clear_layer):
                        for l, (r, c) in enumerate(shapes):
                            with m.Case(l):
                                m.d.comb += [last_group.eq(upd_group == -(-c // P) - 1), last_row.eq(upd_row == r - 1)]
                    with m.If(last_group):
                        m.d.sync += [upd_group.eq(0), upd_row.eq(upd_row + 1)]
                        with m.If(last_row):
                            m.d.sync += [upd_row.eq(0), clear_layer.eq(clear_layer + 1)]
                            with m.If(clear_layer == len(shapes) - 1):
                                m.next = "RUN"
                    with m.Else():
                        m.d.sync += upd_group.eq(upd_group + 1)
            with m.State("RUN"):
                # ready never looks at valid (the stream contract allows it), so the core's
                # layer select in front of valid stays off the path into the skid buffer
                with m.If(pending & at_first):
                    # the last gradient write must land before the update reads the matrix
                    with m.If(~acc_busy):
                        m.d.sync += [pending.eq(0), upd_row.eq(0), upd_group.eq(0)]
                        with m.If((self.rows != 0) & (self.cols != 0)):
                            m.next = "UPDATE"
                with m.Elif(ev.payload.eot):
                    # the pipe drains first: the next scan rewrites the list entries, and the
                    # hazard check below only compares words of one timestep
                    m.d.comb += ev.ready.eq(~acc_busy)
                    with m.If(ev.valid & ~acc_busy):
                        m.d.comb += working.eq(1)
                        m.d.sync += scanned.eq(0)
                with m.Elif(~scanned):
                    with m.If(ev.valid):
                        m.d.sync += [scan_group.eq(0), nz_count.eq(0), nz_empty.eq(1), at_last.eq(0)]
                        with m.If(self.rows == 0):
                            m.d.sync += scanned.eq(1)
                        with m.Else():
                            m.next = "SCAN"
                with m.Elif(nz_empty):
                    m.d.comb += [ev.ready.eq(1), working.eq(ev.valid)]
                with m.Elif(~raw_hazard & may_touch):
                    m.d.comb += ev.ready.eq(at_last)  # this spike's last list entry
                    with m.If(ev.valid):
                        m.d.comb += [nz_rd.en.eq(1), working.eq(1)]
                        m.d.sync += [s1_valid.eq(1), s1_index.eq(ev.payload.index)]
                        if not self.distinct_indices:
                            m.d.sync += s1_entry.eq(issue_idx)
                        with m.If(at_last):
                            m.d.sync += [issue_idx.eq(0), issue_next.eq(1), at_first.eq(1), at_last.eq(nz_count == 1)]
                        with m.Else():
                            m.d.sync += [issue_idx.eq(issue_next), issue_next.eq(issue_next + 1), at_first.eq(0),
                                         at_last.eq(issue_next + 1 == nz_count)]
            with m.State("SCAN"):
                m.d.comb += self.delta_en.eq(1)
                m.d.sync += [sc_valid.eq(1), sc_group.eq(scan_group)]
                with m.If(scan_group == n_groups - 1):
                    m.next = "SCAN_LAST"
                with m.Else():
                    m.d.sync += scan_group.eq(scan_group + 1)
            with m.State("SCAN_LAST"):
                # the last group's deltas are being tested this cycle
                m.next = "SCAN_FILE"
            with m.State("SCAN_FILE"):
                # and filed in this one
                m.d.sync += scanned.eq(1)
                m.next = "RUN"
            with m.State("UPDATE"):
                with m.If(may_touch):
                    m.d.comb += [self.w_rd_en.eq(1), grad.rd_en.eq(1), grad.rd_row.eq(1), grad.rd_major.eq(upd_row),
                                 grad.rd_group.eq(upd_group)]
                    last_group = upd_group == n_hgroups - 1
                    m.d.sync += [u1_valid.eq(1), u1_row.eq(upd_row), u1_group.eq(upd_group)]
                    with m.If(last_group):
                        m.d.sync += [upd_group.eq(0), upd_row.eq(upd_row + 1)]
                        with m.If(upd_row == self.rows - 1):
                            m.next = "UPDATE_LAST"
                    with m.Else():
                        m.d.sync += upd_group.eq(upd_group + 1)
            with m.State("UPDATE_LAST"):
                m.next = "RUN"

        if lfsr_in is not None:
            # The LFSR controls are decided as a group is issued (UPDATE state) and delayed to act
            # while it is in u1b, so the LFSR's next-state select is driven by registers, not by
            # the end of a path through the core's layer select. Idle, all three are 0, so a core
            # that shares one LFSR among engines ORs their controls instead of multiplexing them.
            nxt, take, width = lfsr_in
            # one draw per weight, zero gradient or not (shift 0 takes no draws, as in the golden model)
            drawing = fsm.ongoing("UPDATE") & may_touch & (shift != 0)
            last = upd_group == n_hgroups - 1
            m.d.comb += nxt.eq(_delayed(m, drawing, 2, "draw_next"))
            if width is not None:
                # one-hot over draw_widths, decoded from the one-hot shift (no compare on the way)
                width_is = Cat(*[drawing & Cat(*[shift_is[v] for v in self.supported_shifts
                                                 if v > 0 and update_draw_bits(v) == w]).any()
                                 for w in self.draw_widths])
                m.d.comb += width.eq(_delayed(m, width_is, 2, "draw_width"))
            if take is not None:
                count = Mux(last & (tail != 0), tail, P) if self.short_counts else P
                m.d.comb += take.eq(_delayed(m, Mux(drawing, count, 0), 2, "draw_take"))

        with m.If(self.update & self.shift_ok):
            m.d.sync += [pending.eq(1), shift.eq(self.lr_shift)]
            m.d.sync += [shift_is[v].eq(self.lr_shift == v) for v in self.supported_shifts]

        m.d.comb += [
            self.event.eq(ev.valid & ev.ready & ~ev.payload.eot),
            self.stalled.eq(ev.valid & ~working),
            self.busy.eq(pending | ev.valid | acc_busy | sc_valid | sc2_valid | u1_valid | u1b_valid | u2_valid | u3_valid | u4_valid
                         | u5_valid | ~fsm.ongoing("RUN")),
        ]
        self.collisions.drive(m)
        return m

    def _rounding_select(self, m, k, x, shift_is):
        """round(x / 2**s) by the config's update rounding (docs/arithmetic.md §2), s a runtime shift
        out of ``supported_shifts`` given one-hot (``shift_is[v]``: s == v), first stage: returns
        ``(low, fits, sticky, r_top)`` for :meth:`_rounded_step` (``sticky``, ``r_top`` None where
        the mode has none).

        The step is *clamped* to ``step_bits`` = weight_bits + 3 bits. The clamp is exact for the
        update: a step of magnitude >= 2**(weight_bits+1) saturates W - step to the same rail as any
        larger one, and a clamped step is still that large. It keeps the rounding adder, the
        subtractor and the saturation compares weight-sized instead of gradient-sized.

        Each supported s is a constant shift (wiring); the shifted values' low bits, and whether
        each shifted value fits them (its bits above all equal to the sign, one reduction per s,
        in parallel), are multiplexed by an AND-OR over the one-hot select: no compare of s and no
        wide reduction behind the multiplexer.
        half_up / half_even: t = x >> (s-1) (x << 1 for s = 0) holds q and the half bit, clamped to
        c + 1 bits; stochastic: q = x >> s clamped to c bits, r' = (x mod 2^s) >> (s-k) with
        k = min(s, 16).
        """
        p = self.p
        mode = p.update_rounding
        gb = p.grad_bits
        c = self.step_bits - 1  # q in [-2^(c-1), 2^(c-1)-1]; q + 1 still fits step_bits
        half = mode in ("half_up", "half_even")
        bits = c + 1 if half else c

        def by_shift(value_of):  # the value for the shift in effect
            return arith.one_hot_select((sel, value_of(v)) for v, sel in shift_is.items())

        def shifted(v):
            if half:
                return x << 1 if v == 0 else x >> (v - 1)
            return x >> v

        def fits(v):
            val = shifted(v)
            if len(val) <= bits:
                return Const(1, 1)
            hi = val[bits - 1:]
            return ~hi.any() | hi.all()

        def low_bits(v):  # truncated, or sign-extended when the gradient is narrower than the step
            w = Signal(signed(bits), name=f"upd_low_{k}_s{v}")
            m.d.comb += w.eq(shifted(v))
            return w

        low = Signal(signed(bits), name=f"upd_low_{k}")
        fit = Signal(name=f"upd_fits_{k}")
        m.d.comb += [low.eq(by_shift(low_bits)), fit.eq(by_shift(fits))]
        sticky = r_top = None
        if mode == "half_even":
            sticky = Signal(name=f"upd_sticky_{k}")
            m.d.comb += sticky.eq(by_shift(
                lambda v: (x.as_unsigned()[:min(v - 1, gb)] != 0) if v >= 2 else Const(0, 1)))
        if mode == "stochastic":
            r_top = Signal(16, name=f"upd_rtop_{k}")

            def top_bits(v):
                kb = update_draw_bits(v)
                return (x >> (v - kb))[:kb] if kb else Const(0, 1)
            m.d.comb += r_top.eq(by_shift(top_bits))
        return low, fit, sticky, r_top

    def _rounded_step(self, m, k, low, fits, neg, sticky, draw_inc):
        """Second stage: the clamp finished (``low`` if it ``fits``, else the rail of the sign
        ``neg``) and the rounding increment added: the step, ``step_bits`` wide."""
        mode = self.p.update_rounding
        half = mode in ("half_up", "half_even")
        bits = self.step_bits if half else self.step_bits - 1  # as _rounding_select clamps
        clamped = Signal(signed(bits), name=f"upd_clamped_{k}")
        m.d.comb += clamped.eq(Mux(fits, low[:bits].as_signed(), Mux(neg, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)))
        if half:
            base = clamped >> 1
            inc = clamped[0] if mode == "half_up" else clamped[0] & (sticky | base[0])
            return base + inc
        if mode == "stochastic":
            return clamped + draw_inc
        return clamped  # floor

def _delayed(m, value, cycles: int, name: str):
    """``value`` through ``cycles`` registers."""
    for n in range(cycles):
        q = Signal(value.shape(), name=f"{name}_d{n + 1}")
        m.d.sync += q.eq(value)
        value = q
    return value
