"""FP engine: event-driven forward pass of one LIF layer, P neurons per cycle.

Per timestep (docs/arithmetic.md §5) the engine

1. **integrates**: for every input spike event ``i`` it walks the layer's neuron groups
   ``g = 0..G-1`` (G = ceil(N/P)), reading the P weights W[gP..gP+P-1, i] and adding them to the
   P synaptic accumulators of group g — one group per cycle, so the work is nnz(x[t]) * G cycles,
   independent of how many inputs did *not* spike;
2. on the end-of-timestep event, runs the **LIF step** over the G groups, one per cycle: leak,
   delayed reset, the single clamp, strict compare, surrogate; it writes the membrane and spike
   back, clears the accumulators, and emits one ``neuron_out`` payload per group (membranes,
   spike mask, surrogates) for the spike/BP memories and for the testbench.

Weights come from the core's weight memory through a read port with
:data:`~spikeforge.rtl.skewed_memory.READ_LATENCY` = 3 cycles of latency
(``weight_input``/``weight_group``/``weight_en`` → ``weight_data`` in lane order); the engine owns
its state memories (membrane + last spike, and the accumulators).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import arith
from .params import CoreParams
from .ram import CollisionWatch

__all__ = ["FpEngine", "spike_event_layout", "neuron_group_layout"]


def spike_event_layout(index_bits: int) -> data.StructLayout:
    """An input spike, or (``eot``) the end of a timestep; ``fresh`` on an eot starts a new sample."""
    return data.StructLayout({"index": unsigned(index_bits), "eot": 1, "fresh": 1})


def neuron_group_layout(p: CoreParams) -> data.StructLayout:
    return data.StructLayout(
        {
            "group": unsigned(p.group_bits),
            "membrane": data.ArrayLayout(signed(p.membrane_bits), p.lanes),
            "spikes": unsigned(p.lanes),
            "surrogate": data.ArrayLayout(unsigned(p.surrogate_bits), p.lanes),
        }
    )


class FpEngine(wiring.Component):
    def __init__(self, params: CoreParams):
        if not isinstance(params, CoreParams):
            raise TypeError(f"FpEngine needs CoreParams, got {type(params).__name__}")
        self.p = params
        self.collisions = CollisionWatch("fp")
        P = params.lanes
        super().__init__(
            {
                "spikes_in": In(stream.Signature(spike_event_layout(params.input_index_bits))),
                "neuron_out": Out(stream.Signature(neuron_group_layout(params))),
                # layer geometry, held stable while the engine runs and set two cycles before its
                # first event (the engine registers groups - 1)
                "groups": In(params.group_bits),
                "neurons": In(max(1, (params.max_neurons).bit_length())),
                # weight read port: data arrives READ_LATENCY (3) cycles after weight_en
                "weight_en": Out(1),
                "weight_input": Out(params.input_index_bits),
                "weight_group": Out(params.group_bits),
                "weight_data": In(data.ArrayLayout(signed(params.weight_bits), P)),
                # status for the performance counters
                "busy": Out(1),
                "stalled": Out(1),
                "event": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.lanes
        G = p.max_groups

        state_layout = data.StructLayout(
            {"membrane": data.ArrayLayout(signed(p.membrane_bits), P), "spikes": unsigned(P)}
        )
        acc_layout = data.ArrayLayout(signed(p.input_acc_bits), P)
        # the LIF stage reads a group's state and writes it back three cycles later; the next read
        # of that group is a timestep away (a group is issued once per timestep)
        m.submodules.state_mem = state_mem = self.collisions.memory(shape=state_layout, depth=G, init=[])
        spread = p.min_groups >= 2  # consecutive integrate items are different groups
        m.submodules.acc_mem = acc_mem = (self.collisions.memory if spread else Memory)(shape=acc_layout, depth=G, init=[])
        state_wr = state_mem.write_port()
        state_rd = state_mem.read_port()
        # read only in LIF: a read port left enabled would meet the writeback of group 0
        m.d.comb += state_rd.en.eq(0)
        self.collisions.watch(m, "fp_state", state_rd, state_wr)
        acc_wr = acc_mem.write_port()
        # the accumulator is read-modified-written one cycle apart: the next item's read comes in
        # the cycle of the write. With two or more groups it is another group's word (watched);
        # with one, transparency makes it see the value being written
        if spread:
            acc_rd = acc_mem.read_port()
            self.collisions.watch(m, "fp_acc", acc_rd, acc_wr)
        else:
            acc_rd = acc_mem.read_port(transparent_for=(acc_wr,))

        group = Signal(p.group_bits)  # group being issued
        fresh = Signal()
        # the integrate pipeline: issue (weight read requested) → i1 → i2 → i3 (the weights
        # arrive, rotated, and are registered; accumulator read of the same group) → i4 (add,
        # write). Each item reads its accumulator one cycle before writing it, so the next item's
        # read of that group meets the write on the transparent port.
        int1_valid, int2_valid, int3_valid, int4_valid = Signal(), Signal(), Signal(), Signal()
        m.d.comb += acc_rd.en.eq(int3_valid)  # the integrate's read (LIF and DRAIN read too)
        int1_group, int2_group, int3_group, int4_group = (
            Signal(p.group_bits, name=f"int{n}_group") for n in (1, 2, 3, 4))
        int4_w = Signal.like(self.weight_data)
        # stage 1 of the LIF pipeline
        lif_valid = Signal()
        lif_group = Signal(p.group_bits)

        last_group = Signal()
        # groups - 1 as a register (the geometry is held while the engine runs and set cycles
        # before its first event): the subtractor stays off the path into the ready logic
        last_index = Signal.like(group, name="last_group_index")
        m.d.sync += last_index.eq(self.groups - 1)
        m.d.comb += last_group.eq(group == last_index)

        # ---- integrate: accumulator += weights ---------------------------------------------------
        m.d.sync += [int2_valid.eq(int1_valid), int2_group.eq(int1_group),
                     int3_valid.eq(int2_valid), int3_group.eq(int2_group),
                     int4_valid.eq(int3_valid), int4_group.eq(int3_group), int4_w.eq(self.weight_data)]
        with m.If(int4_valid):
            m.d.comb += [acc_wr.en.eq(1), acc_wr.addr.eq(int4_group)]
            for k in range(P):
                m.d.comb += acc_wr.data[k].eq(acc_rd.data[k] + int4_w[k])
        m.d.sync += int1_valid.eq(0)

        # ---- LIF step datapath (combinational on the stage-1 words) ---------------------------
        out = self.neuron_out
        advance = Signal()
        m.d.comb += advance.eq(~out.valid | out.ready)
        lane_v = [Signal(signed(p.membrane_bits), name=f"l3_v_{k}") for k in range(P)]  # registered
        # four stages for the clock: L1 (words on the ports) leaks and resets the old membrane,
        # L2 adds the input and saturates, L3 fires and forms |v - threshold|, L4 forms the
        # surrogate from it, writes back and emits. The whole pipe moves on `advance`.
        l2_valid, l3_valid, l4_valid = Signal(), Signal(), Signal()
        l2_group, l3_group, l4_group = Signal(p.group_bits), Signal(p.group_bits), Signal(p.group_bits)
        l4_v = [Signal(signed(p.membrane_bits), name=f"l4_v_{k}") for k in range(P)]
        l4_s = [Signal(name=f"l4_s_{k}") for k in range(P)]
        l4_dist = [Signal(unsigned(p.membrane_bits + 1), name=f"l4_dist_{k}") for k in range(P)]
        lane_g = []  # the surrogates, formed in L4
        l2_base = [Signal(signed(p.membrane_bits + 2), name=f"l2_base_{k}") for k in range(P)]
        l2_acc = [Signal(signed(p.input_acc_bits), name=f"l2_acc_{k}") for k in range(P)]
        with m.If(advance):
            m.d.sync += [l2_valid.eq(lif_valid), l2_group.eq(lif_group), l3_valid.eq(l2_valid), l3_group.eq(l2_group),
                         l4_valid.eq(l3_valid), l4_group.eq(l3_group)]
        for k in range(P):
            base = self._lif_base(m, k, state_rd.data.membrane[k], state_rd.data.spikes[k], fresh)
            with m.If(advance):
                m.d.sync += [l2_base[k].eq(base), l2_acc[k].eq(acc_rd.data[k])]
            v = self._lif_integrate(m, k, l2_base[k], l2_acc[k])
            with m.If(advance):
                m.d.sync += lane_v[k].eq(v)
            fire, dist = self._lif_fire(m, k, lane_v[k], l3_group)
            with m.If(advance):
                m.d.sync += [l4_v[k].eq(lane_v[k]), l4_s[k].eq(fire), l4_dist[k].eq(dist)]
            lane_g.append(self._surrogate(m, k, l4_dist[k]))

        with m.If(l4_valid & advance):
            m.d.sync += [
                out.valid.eq(1),
                out.payload.group.eq(l4_group),
                out.payload.spikes.eq(Cat(*l4_s)),
            ]
            for k in range(P):
                m.d.sync += [out.payload.membrane[k].eq(l4_v[k]), out.payload.surrogate[k].eq(lane_g[k])]
            m.d.comb += [
                state_wr.en.eq(1),
                state_wr.addr.eq(l4_group),
                state_wr.data.spikes.eq(Cat(*l4_s)),
                acc_wr.en.eq(1),  # clear for the next timestep (never overlaps integration)
                acc_wr.addr.eq(l4_group),
                acc_wr.data.eq(0),
            ]
            for k in range(P):
                m.d.comb += state_wr.data.membrane[k].eq(l4_v[k])
        with m.Elif(advance):
            m.d.sync += out.valid.eq(0)

        # ---- control ---------------------------------------------------------------------------
        ev = self.spikes_in
        m.d.comb += [
            acc_rd.addr.eq(Mux(int3_valid, int3_group, group)),
            state_rd.addr.eq(group),
            self.weight_input.eq(ev.payload.index),
            self.weight_group.eq(group),
        ]
        with m.FSM():
            with m.State("INTEGRATE"):
                # ready never looks at valid (the stream contract allows it): the core's selects
                # in front of valid stay off the path into the skid buffer
                with m.If(~ev.payload.eot):
                    # one group per cycle; the event is consumed with its last group
                    m.d.comb += ev.ready.eq(last_group)
                    with m.If(ev.valid):
                        m.d.comb += [self.weight_en.eq(1), self.busy.eq(1), self.event.eq(last_group)]
                        m.d.sync += [int1_valid.eq(1), int1_group.eq(group)]
                        with m.If(last_group):
                            m.d.sync += group.eq(0)
                        with m.Else():
                            m.d.sync += group.eq(group + 1)
                with m.Else():
                    # sweep the groups once the last item is in i4 at most: its accumulator write
                    # lands this cycle, before the sweep's first read
                    m.d.comb += ev.ready.eq(~int1_valid & ~int2_valid & ~int3_valid)
                    with m.If(ev.valid):
                        m.d.comb += self.busy.eq(1)
                        with m.If(~int1_valid & ~int2_valid & ~int3_valid):
                            m.d.sync += fresh.eq(ev.payload.fresh)
                            m.next = "LIF"
            with m.State("LIF"):
                m.d.comb += self.busy.eq(1)
                m.d.comb += [state_rd.en.eq(advance), acc_rd.en.eq(advance)]
                with m.If(advance):
                    m.d.sync += [lif_valid.eq(1), lif_group.eq(group)]
                    with m.If(last_group):
                        m.d.sync += group.eq(0)
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += group.eq(group + 1)
                with m.Else():
                    m.d.comb += self.stalled.eq(1)
            with m.State("DRAIN"):
                # no reads: the last group's words stay on the ports for L1, and a read of group
                # 0 would meet the clearing writes of the last groups
                m.d.comb += self.busy.eq(1)
                with m.If(advance):
                    m.d.sync += lif_valid.eq(0)
                    # the last group moves L1 → L2 → L3 → L4, then L4 writes back as the FSM leaves
                    with m.If(~lif_valid & ~l2_valid & ~l3_valid):
                        m.next = "INTEGRATE"
                with m.Else():
                    m.d.comb += self.stalled.eq(1)
        self.collisions.drive(m)
        return m

    def _lif_base(self, m, k, v_prev_mem, s_prev_mem, fresh):
        """LIF stage L1, docs/arithmetic.md §5 steps 2-3: the leaked membrane after the reset."""
        p = self.p
        v_prev = Signal(signed(p.membrane_bits), name=f"vprev_{k}")
        s_prev = Signal(name=f"sprev_{k}")
        m.d.comb += [v_prev.eq(Mux(fresh, 0, v_prev_mem)), s_prev.eq(~fresh & s_prev_mem)]

        leak = arith.leak(m, v_prev, p.beta_q, p.beta_bits, p.leak_rounding, f"leak_{k}")

        base = Signal(signed(p.membrane_bits + 2), name=f"base_{k}")
        if p.reset == "subtract":
            m.d.comb += base.eq(Mux(s_prev, leak - p.threshold, leak))
        else:
            m.d.comb += base.eq(Mux(s_prev, 0, leak))
        return base

    def _lif_integrate(self, m, k, base, acc):
        """LIF stage L2, §5 step 4: add the input to the leaked membrane and saturate."""
        p = self.p
        wide = Signal(signed(max(p.membrane_bits, p.input_acc_bits + p.membrane_frac_bits) + 3), name=f"sum_{k}")
        m.d.comb += wide.eq(base + (acc << p.membrane_frac_bits))
        return arith.saturate(m, wide, p.membrane_min, p.membrane_max, p.membrane_bits, f"vsat_{k}")

    def _lif_fire(self, m, k, v_out, group):
        """LIF stage L3, §5 step 5: fire, and |v - threshold| for the surrogate (L4)."""
        p = self.p
        # lanes past the layer's last neuron never fire (their weights are zero anyway)
        lane_exists = Signal(name=f"exists_{k}")
        m.d.comb += lane_exists.eq(group * p.lanes + k < self.neurons)
        s_out = Signal(name=f"s_{k}")
        m.d.comb += s_out.eq(lane_exists & (v_out > p.threshold))
        dist = Signal(unsigned(p.membrane_bits + 1), name=f"dist_{k}")
        m.d.comb += dist.eq(Mux(v_out > p.threshold, v_out - p.threshold, p.threshold - v_out))
        return s_out, dist

    def _surrogate(self, m, k, dist):
        """LIF stage L4, §5 step 5: the surrogate gradient from |v - threshold|."""
        p = self.p
        g_out = Signal(p.surrogate_bits, name=f"g_{k}")
        if p.surrogate == "rect":
            m.d.comb += g_out.eq(dist < p.surrogate_width)
        else:
            shift = p.surrogate_width.bit_length() - 1 - p.surrogate_bits
            gmax = (1 << p.surrogate_bits) - 1
            raw = Signal(unsigned(p.membrane_bits + 1), name=f"graw_{k}")
            m.d.comb += raw.eq(Mux(dist < p.surrogate_width, (p.surrogate_width - dist) >> shift, 0))
            m.d.comb += g_out.eq(Mux(raw > gmax, gmax, raw))
        return g_out
