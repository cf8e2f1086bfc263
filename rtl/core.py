"""The spikeforge core, forward half: encoder → per-layer FP over all timesteps → readout.

Layers run one after another on one FP engine (layer-major, as the golden model): for layer l and
timestep t the spike scanner turns the previous layer's spike bitmap (the encoder's for l = 0)
into events; the FP engine's ``neuron_out`` groups are written to the layer's spike and surrogate
memories (the per-timestep BP storage of docs/arithmetic.md §6.5) and, for the last layer, fed
to the readout.

Backward half (``train`` after the forward pass): for l = L-1 down to 0 and t = T-1 down to 0,
a feeder streams (ε[t], g[t], s[t]) of layer l into the BP engine; δ[t] goes to a one-timestep
delta buffer and ε'[t] to the error memory of layer l-1; then the scanner replays the layer's
input spikes at t into the WG engine (one for all layers), which accumulates δ x into the
layer's gradients. ``update`` runs the engine's row-major update layer after layer, the update
LFSR's stream continuing from one layer to the next.

Host side: the core's control and element-access ports are the core side of
:class:`~spikeforge.rtl.host.HostInterface` (same names); :class:`~spikeforge.rtl.top.Top` joins
the two. The access ports reach every region of docs/host-protocol.md while the core is idle:
registers (info, config, status, performance counters) and memories (pixels, weights, gradients,
spike bitmaps, the output layer's membranes).
"""

from __future__ import annotations

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden.backend import update_seed

from .arith import round_shift, saturate, times_const
from .bp_engine import BpEngine, delta_group_layout
from .bp_engine import group_bits as bp_group_bits
from .encoder import Encoder
from .fp_engine import FpEngine, neuron_group_layout, spike_event_layout
from .counters import PerfCounters
from .host import READ_GAP, READ_LATENCY
from .lfsr import LfsrDraws
from .params import CoreParams
from .ram import CollisionWatch
from .protocol import COUNTERS, CONFIG_FIELDS, RUN_BACKWARD, RUN_FORWARD, RUN_SPIKES, Error, Op, RegionId, info_words
from .readout import Readout
from .skewed_memory import SkewedMemory, single_port, single_port_memory_args
from .skid_buffer import SkidBuffer
from .spike_scanner import SpikeScanner
from .wg_engine import MAX_LR_SHIFT, WgEngine

__all__ = ["Core"]


class Core(wiring.Component):
    """``role``: None for a one-core accelerator; a :class:`~spikeforge.rtl.slice_role.SliceRole`
    makes this core part of a multi-core accelerator (``cfg`` is then the network of what the core
    holds: one slice of a layer, whole consecutive layers, or the end of one layer and the start of
    the next): it gains the interconnect ports ``spike_send``/``spike_receive`` and
    ``error_send``/``error_receive`` (docs/multicore.md)."""

    def __init__(self, cfg: SpikeforgeConfig, weights_init: list[dict] | None = None, role=None):
        self.cfg = cfg
        self.role = role
        self.p = p = CoreParams.from_config(cfg)
        L = cfg.network.layers
        self.n_layers = len(L) - 1
        self.T = cfg.network.timesteps
        #: samples whose per-timestep state the core holds (a slice core of a pipelined multi-core top)
        self.banks = role.buffers if role is not None else 1
        P = p.lanes
        #: each LIF layer's inputs: the layer below, or (on a core holding the end of one layer and
        #: the start of the next) the whole layer below where the core holds only its end
        self.fan_ins = cfg.network.fan_ins
        self.in_groups = [-(-f // P) for f in self.fan_ins]  # input groups of each layer
        self.out_groups = [-(-n // P) for n in L[1:]]  # neuron groups of each layer
        #: words per timestep of spike bitmap k: the inputs of layer k (k < n), the last layer's outputs (k = n)
        self.bitmap_groups = [*self.in_groups, self.out_groups[-1]]
        #: single-port large memories (iCE40 SPRAM): one memory per kind, every layer in it
        self.single_port = cfg.hardware.large_memories == "single_port"
        #: the memories marked no_rw_check, here and in the engines (rtl/ram.py)
        self.collisions = CollisionWatch("core")
        if self.single_port:
            # one layered memory for every layer's weights (the engines use one layer at a time);
            # written twice registered, so the update's writes land in the other phase of its
            # every-other-cycle cadence than its reads (see WgEngine single_port)
            shared = SkewedMemory(lanes=P, width=p.weight_bits, max_outputs=max(L[1:]), max_inputs=max(self.fan_ins),
                                  init=weights_init, write_latency=2, single_port=True,
                                  layers=cfg.layer_shapes)
            self.weights = [shared] * self.n_layers
        else:
            self.weights = [
                # writes registered: nothing reads a weight in the cycle after it is written
                SkewedMemory(lanes=P, width=p.weight_bits, max_outputs=L[l + 1], max_inputs=self.fan_ins[l],
                             init=(weights_init[l] if weights_init else None), write_latency=1)
                for l in range(self.n_layers)
            ]
        super().__init__(
            {
                # control, from the host interface
                "run": In(1), "run_train": In(1), "run_spikes": In(1), "run_update": In(1),
                "sample_set": In(1), "label": In(max(1, ceil_log2(L[-1]))), "seed": In(32), "clear_counters": In(1),
                "core_idle": Out(1), "prediction": Out(8),
                # element access (READ_LATENCY cycles from acc_rd to acc_rdata), idle only
                "acc_region": In(8), "acc_row": In(16), "acc_col": In(16),
                "acc_rd": In(1), "acc_wr": In(1), "acc_wdata": In(32), "acc_rdata": Out(32),
                "chk_op": In(8), "chk_region": In(8), "chk_error": Out(8),
                "error_code": In(8), "error_opcode": In(8), "error_count": In(16),
                # trace ports (testbenches): every neuron_out payload and every δ group, with the layer
                "obs_valid": Out(1),
                "obs_layer": Out(max(1, ceil_log2(self.n_layers))),
                "obs": Out(neuron_group_layout(p)),
                "bp_obs_valid": Out(1),
                "bp_obs_layer": Out(max(1, ceil_log2(self.n_layers))),
                "bp_obs": Out(delta_group_layout(p, bp_group_bits(p))),
                # sticky, for simulation (nothing reads it on an FPGA): a read of a memory marked
                # no_rw_check met a write of its address (rtl/ram.py)
                "rw_collision": Out(1),
                **self._network_ports(),
            }
        )

    def _network_ports(self) -> dict:
        if self.role is None:
            return {}
        from .noc import flit_layout

        r = self.role
        return {"spike_send": Out(stream.Signature(flit_layout(r.spike_width))),
                "spike_receive": In(stream.Signature(flit_layout(r.spike_width))),
                "error_send": Out(stream.Signature(flit_layout(r.error_width))),
                "error_receive": In(stream.Signature(flit_layout(r.error_width)))}

    def elaborate(self, platform):
        m = Module()
        cfg, p = self.cfg, self.p
        P, T, L = p.lanes, self.T, cfg.network.layers
        log_p = P.bit_length() - 1
        m.submodules.fp = fp = FpEngine(p)
        self.collisions.include(fp.collisions)
        for w in dict.fromkeys(self.weights):  # the single-port build shares one memory
            self.collisions.include(w.collisions)
        m.submodules.readout = readout = Readout(cfg)
        self.collisions.include(readout.collisions)
        if self.single_port:
            m.submodules.weights = self.weights[0]
        else:
            for l, w in enumerate(self.weights):
                m.submodules[f"weights{l}"] = w
        enc = Encoder(lanes=P, inputs=L[0], timesteps=T, pixel_bits=cfg.formats.pixel_bits)
        m.submodules.encoder = enc
        m.submodules.pixels = pixels = self.collisions.memory(shape=enc.px_data.shape(), depth=self.in_groups[0], init=[])
        px_wr, px_rd = pixels.write_port(granularity=1), pixels.read_port()
        self.collisions.watch(m, "pixels", px_rd, px_wr)
        m.d.comb += [px_rd.en.eq(enc.px_en), px_rd.addr.eq(enc.px_group), enc.px_data.eq(px_rd.data),
                     enc.seed.eq(self.seed)]

        # spike bitmaps: index 0 = encoder output, index l+1 = output of LIF layer l; a slice core
        # holds one block of T timesteps per sample in flight (`banks`): the forward pass writes
        # bank fp_bank, the backward pass reads bank bp_bank
        B = self.banks
        fp_bank = Signal(range(B), name="fp_bank")
        bp_bank = Signal(range(B), name="bp_bank")
        # a lagging core's first layer runs its backward pass a sample behind the second's (the
        # SliceRole's `lag`): that layer has its own backward bank
        lag = self.role is not None and self.role.lag
        bp_bank_lo = Signal(range(B), name="bp_bank_lo") if lag else bp_bank
        bp_banks = [bp_bank_lo] + [bp_bank] * (self.n_layers - 1)
        spike_mems = [self.collisions.memory(shape=P, depth=B * T * g, init=[]) for g in self.bitmap_groups]
        surr_mems = [self.collisions.memory(shape=P * p.surrogate_bits, depth=B * T * g, init=[]) for g in self.out_groups]
        for k, mem in enumerate(spike_mems):
            m.submodules[f"spikes{k}"] = mem
        for k, mem in enumerate(surr_mems):
            m.submodules[f"surrogates{k + 1}"] = mem
        # bit-granular on the input bitmap (the host may write single input spikes) and on any
        # bitmap a spike inbox fills (one spike per flit)
        fed = self._inbox_fed()
        spike_wr = [mem.write_port(granularity=1) if k == 0 or fed[k] else mem.write_port()
                    for k, mem in enumerate(spike_mems)]
        spike_rd = [mem.read_port() for mem in spike_mems]
        surr_wr = [mem.write_port() for mem in surr_mems]
        # read ports are enabled only where a reader is (an idle port left reading would meet
        # the writes: see rtl/ram.py); the same for every no_rw_check memory below
        m.d.comb += [rp.en.eq(0) for rp in spike_rd]
        for k, (rp, wp) in enumerate(zip(spike_rd, spike_wr)):
            self.collisions.watch(m, f"spikes{k}", rp, wp)
        m.d.comb += [spike_wr[0].en.eq(Cat(enc.spk_en for _ in range(P))),
                     spike_wr[0].addr.eq(self._in_bank(enc.spk_addr, fp_bank, self.bitmap_groups[0])),
                     spike_wr[0].data.eq(enc.spk_data)]
        net = self._network(m, spike_wr, fp_bank, bp_banks)
        # the output layer's membranes of every timestep, for the host (the FP engine keeps only
        # the latest timestep)
        m.submodules.membranes = mem_trace = self.collisions.memory(shape=data.ArrayLayout(signed(p.membrane_bits), P),
                                                                    depth=T * self.out_groups[-1], init=[])
        mt_wr, mt_rd = mem_trace.write_port(), mem_trace.read_port()
        m.d.comb += mt_rd.en.eq(0)
        self.collisions.watch(m, "membranes", mt_rd, mt_wr)

        depth_max = B * max(T * g for g in self.bitmap_groups)
        # a slice core's engines handle few neuron groups per event: the scanner must read a word
        # per cycle to keep up (the one-core accelerator keeps the plain one, for its logic cells)
        m.submodules.scanner = scan = SpikeScanner(lanes=P, max_words=max(self.bitmap_groups), depth=depth_max,
                                                   index_bits=p.input_index_bits, queue=self.role is not None)
        # the scanner's events pass a skid buffer, then a second one per consumer (the FP engine,
        # the WG engine): a consumer's ready only reaches its own buffer's output register, and
        # the select between the buffers looks at registered readies. Nothing reaches back into
        # the scanner.
        ev_layout = spike_event_layout(p.input_index_bits)
        m.submodules.events = events_buf = SkidBuffer(ev_layout)
        wiring.connect(m, scan.events, events_buf.i)
        events = events_buf.o
        m.submodules.fp_events = fp_events = SkidBuffer(ev_layout)
        m.submodules.wg_events = wg_events = SkidBuffer(ev_layout)
        wiring.connect(m, fp_events.o, fp.spikes_in)
        layer = Signal(range(self.n_layers + 1))
        backward = Signal()  # BP/WG phase: the scanner feeds WG, weights are read by row
        t = Signal(range(T + 1))
        out_t = Signal(range(T + 1))  # timesteps whose last group has left the FP engine
        out_g = Signal(range(max(self.out_groups) + 1))

        # the scanner reads the bitmap feeding the current layer; the FP engine reads its weights.
        # The FP engine's layer geometry comes from registers (a cycle behind `layer`: the first
        # event of a layer arrives several cycles after the layer changes), so the layer select
        # stays off the engine's ready path.
        fp_groups = Signal(len(fp.groups), name="fp_groups")
        fp_neurons = Signal(len(fp.neurons), name="fp_neurons")
        m.d.comb += [fp.groups.eq(fp_groups), fp.neurons.eq(fp_neurons)]
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += [spike_rd[l].en.eq(scan.rd_en), spike_rd[l].addr.eq(scan.rd_addr),
                             scan.rd_data.eq(spike_rd[l].data)]
                m.d.sync += [fp_groups.eq(self.out_groups[l]), fp_neurons.eq(L[l + 1])]
                w = self._weights_of(m, l)
                with m.If(~backward):
                    m.d.comb += [w.rd_en.eq(fp.weight_en), w.rd_row.eq(0), w.rd_major.eq(fp.weight_input),
                                 w.rd_group.eq(fp.weight_group)]
                m.d.comb += fp.weight_data.eq(w.rd_data)
        # scanner events go to the FP engine going forward, to the WG engine going backward
        m.d.comb += [fp_events.i.payload.eq(events.payload), wg_events.i.payload.eq(events.payload)]
        with m.If(~backward):
            m.d.comb += [fp_events.i.valid.eq(events.valid), events.ready.eq(fp_events.i.ready)]
        with m.Else():
            m.d.comb += [wg_events.i.valid.eq(events.valid), events.ready.eq(wg_events.i.ready)]

        # FP output: to this layer's spike/surrogate memories, the readout, the observation port
        # (and the spike outbox of a slice core, which may hold the engine back)
        out = fp.neuron_out
        last_layer = layer == self.n_layers - 1
        m.d.comb += out.ready.eq(1)
        for l, ob in enumerate(net.spike_out):
            if ob is not None:
                with m.If(layer == l):  # this layer's spikes go on to the next layer's cores
                    m.d.comb += [ob.items.valid.eq(out.valid), out.ready.eq(ob.items.ready),
                                 ob.items.payload.group.eq(out.payload.group),
                                 ob.items.payload.spikes.eq(out.payload.spikes), ob.t.eq(out_t)]
        out_fire = out.valid & out.ready
        with m.If(out_fire):
            for l in range(self.n_layers):
                with m.If(layer == l):
                    g = self.out_groups[l]
                    addr = self._in_bank(times_const(out_t, g) + out.payload.group, fp_bank, g)
                    m.d.comb += [surr_wr[l].en.eq(1), surr_wr[l].addr.eq(addr),
                                 surr_wr[l].data.eq(out.payload.surrogate.as_value())]
                    if not fed[l + 1]:  # (an inbox-fed bitmap gets this core's spikes back from the network)
                        m.d.comb += [spike_wr[l + 1].en.eq(1), spike_wr[l + 1].addr.eq(addr),
                                     spike_wr[l + 1].data.eq(out.payload.spikes)]
            m.d.comb += [mt_wr.en.eq(last_layer), mt_wr.addr.eq(times_const(out_t, self.out_groups[-1]) + out.payload.group),
                         mt_wr.data.eq(out.payload.membrane)]
        m.d.comb += [readout.neuron_in.valid.eq(out_fire & last_layer), readout.neuron_in.payload.eq(out.payload),
                     self.obs_valid.eq(out_fire), self.obs_layer.eq(layer), self.obs.eq(out.payload)]
        layer_groups = Signal(range(max(self.out_groups) + 1))
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += layer_groups.eq(self.out_groups[l])
        with m.If(out_fire):
            with m.If(out_g == layer_groups - 1):
                m.d.sync += [out_g.eq(0), out_t.eq(out_t + 1)]
            with m.Else():
                m.d.sync += out_g.eq(out_g + 1)

        in_groups = Signal(range(max(self.in_groups) + 1))
        bwd_bank = Mux(layer == 0, bp_bank_lo, bp_bank) if lag else bp_bank  # the current layer's
        scan_bank = Mux(backward, bwd_bank, fp_bank) if B > 1 else 0
        for l in range(self.n_layers):
            with m.If(layer == l):
                # t * groups per layer as shift-adds: the group counts are constants
                g = self.in_groups[l]
                m.d.comb += [in_groups.eq(g), scan.base.eq(self._in_bank(times_const(t, g), scan_bank, g))]
        m.d.comb += [scan.words.eq(in_groups), scan.fresh.eq(t == 0)]

        training = Signal()
        label = Signal.like(readout.label)
        m.d.comb += readout.label.eq(label)
        lr_shift = Signal(32, init=cfg.training.lr_shift)  # CONFIG.lr_shift, checked at UPDATE
        bwd = self._backward(m, readout, events, wg_events, spike_mems, surr_mems, spike_wr, surr_wr, layer, backward, t,
                             lr_shift, net, bwd_bank)

        # ---- sequencer ------------------------------------------------------------------------
        sample_loaded = Signal()
        spikes_loaded = Signal()
        batch_samples = Signal(range(p.max_batch + 1))
        decided_now = Signal()
        phase = {name: Signal(name=f"phase_{name}") for name in ("encode", "fp", "bp", "wg", "update")}
        # the waits below look at the engines through registers: "drained" as it was last cycle.
        # Drained is absorbing (nothing restarts an engine but the sequencer), so last cycle's
        # view is late by a cycle, never wrong -- except in the cycle after a start, when it
        # still shows the engine idle from before: a start clears it.
        bp_drained, wg_drained = Signal(), Signal()
        bp_deltas = Signal()  # the timestep's δ are all in the δ buffer: WG may start
        # BP is through the timestep; at a layer's end (t = 0), its last errors have left too
        bp_through = Signal()
        rounded = bwd["rounded"]
        m.d.comb += bp_through.eq(bp_drained & ((t != 0) | rounded) if rounded is not None else bp_drained)
        enc_start = Signal()  # a registered pulse: the run decision does not reach into the encoder
        decide = Signal()  # the same for the readout's decision
        m.d.sync += [enc_start.eq(0), decide.eq(0)]
        m.d.comb += [enc.start.eq(enc_start), readout.decide.eq(decide)]
        m.d.sync += [bp_drained.eq(bwd["bp"].done & bwd["feed_idle"] & ~bwd["bp"].start),
                     bp_deltas.eq(bwd["bp"].deltas_out & ~bwd["bp"].delta_out.valid & ~bwd["bp"].start),
                     wg_drained.eq(scan.done & ~bwd["wg_busy"] & ~scan.start & ~bwd["update_start"])]
        # a slice core's samples in flight: forward pass done, backward pass not yet (TRAIN with
        # RUN_FORWARD / RUN_BACKWARD runs the halves apart, so samples pipeline through the cores)
        pipelined = self.role is not None
        in_flight = Signal(range(self.banks + 1), name="in_flight")
        forward_only = Signal()  # this run stops after its forward pass (RUN_FORWARD)
        releasing = Signal(range(self.banks), name="releasing")  # the input bitmap bank to clear
        if lag:
            # samples whose second layer's backward pass is done and first layer's not
            lagging = Signal(range(self.banks + 1), name="lagging")
            whole_run = Signal()  # a whole TRAIN (forward and backward of one sample): nothing lags

        def next_bank(bank):
            return Mux(bank == self.banks - 1, 0, bank + 1) if self.banks > 1 else bank

        n = self.n_layers
        spike_in, spike_out, error_in, error_out = net.spike_in, net.spike_out, net.error_in, net.error_out

        def per_layer(boxes, attr):
            """``attr`` of the current layer's box (0 for a layer without one)."""
            v = Signal(name=f"{type(next(b for b in boxes if b is not None)).__name__}_{attr}")
            for l, box in enumerate(boxes):
                if box is not None:
                    with m.If(layer == l):
                        m.d.comb += v.eq(getattr(box, attr))
            return v

        def into_layer(l, state):
            """Start layer ``l``'s forward pass: collect its input spikes first if the network brings them."""
            m.d.sync += [layer.eq(l), t.eq(0), out_t.eq(0), out_g.eq(0)]
            m.next = "COLLECT" if spike_in[l] is not None else state

        def backward_from_top():
            """Into the backward pass of the sample in bank bp_bank, from the last layer's T-1."""
            m.d.sync += [backward.eq(1), layer.eq(n - 1), t.eq(T - 1)]
            m.next = "EPS_WAIT" if error_in[n - 1] is not None else "BP_START"

        def backward_done():
            """The backward pass of the sample in bank bp_bank (a lagging core's first layer: in
            bank bp_bank_lo) is over: its state is free (the bank moves on in the cycle the end
            marker, stamped with the bank, is sent)."""
            m.d.sync += backward.eq(0)
            if pipelined:
                m.d.sync += [bp_bank_lo.eq(next_bank(bp_bank_lo)), in_flight.eq(in_flight - 1)]
            if lag:
                m.d.sync += lagging.eq(lagging - 1)

        def forward_done():
            """The forward pass of the sample in bank fp_bank is over (the prediction is out)."""
            m.d.comb += decided_now.eq(1)
            if pipelined:
                m.d.sync += fp_bank.eq(next_bank(fp_bank))
            with m.If(training):
                m.d.sync += batch_samples.eq(batch_samples + 1)
                if pipelined:
                    m.d.sync += in_flight.eq(in_flight + 1)
                    with m.If(forward_only):
                        m.next = "IDLE"
                    with m.Else():
                        backward_from_top()
                else:
                    backward_from_top()
            with m.Else():
                if pipelined:  # nothing comes back for an inferred sample: its state is free now
                    m.d.sync += bp_bank.eq(next_bank(bp_bank))
                if lag:
                    m.d.sync += bp_bank_lo.eq(next_bank(bp_bank_lo))
                if any_spike_in:
                    m.d.sync += releasing.eq(fp_bank)
                    m.next = "RELEASE"
                else:
                    m.next = "IDLE"

        any_spike_in = any(ib is not None for ib in spike_in)
        with m.FSM():
            if cfg.hardware.large_memories == "single_port":
                with m.State("POWER_UP"):
                    # the WG engine clears its single-port gradient memory (no power-up
                    # contents); the host takes no command until the core is idle
                    with m.If(wg_drained):
                        m.next = "IDLE"
            with m.State("IDLE"):
                m.d.comb += self.core_idle.eq(1)
                with m.If(self.run_update):
                    m.d.sync += [layer.eq(0), batch_samples.eq(0), bwd["updating"].eq(1)]
                    m.next = "UPDATE"
                if pipelined:  # the backward half of the oldest sample in flight (checked: there is one)
                    with m.Elif(self.run & self.run_train & ((self.chk_region & RUN_BACKWARD) != 0)):
                        if lag:
                            m.d.sync += whole_run.eq(0)
                            with m.If(in_flight != lagging):
                                backward_from_top()
                            with m.Else():  # every sample's second layer is done: the lagging first layer alone
                                m.d.sync += [backward.eq(1), layer.eq(0), t.eq(T - 1)]
                                m.next = "EPS_WAIT"
                        else:
                            backward_from_top()
                with m.Elif(self.run):
                    if pipelined:
                        m.d.sync += forward_only.eq((self.chk_region & RUN_FORWARD) != 0)
                    if lag:
                        m.d.sync += whole_run.eq((self.chk_region & RUN_FORWARD) == 0)
                    m.d.comb += readout.clear.eq(1)
                    m.d.sync += [training.eq(self.run_train), label.eq(self.label)]
                    if spike_in[0] is not None:  # a later layer's slice: inputs from the spike network
                        into_layer(0, "SCAN")
                    else:
                        with m.If(self.run_spikes):
                            into_layer(0, "SCAN")
                        with m.Else():
                            m.d.sync += enc_start.eq(1)
                            m.next = "ENCODE"
            if any_spike_in:
                with m.State("COLLECT"):  # every core of the layer below has sent its end marker
                    m.d.comb += phase["fp"].eq(1)
                    with m.If(per_layer(spike_in, "complete")):
                        m.next = "SCAN"
            with m.State("ENCODE"):
                m.d.comb += phase["encode"].eq(1)
                with m.If(enc.done & ~enc_start):  # the encoder sees its start in this state's first cycle
                    m.d.sync += [layer.eq(0), t.eq(0), out_t.eq(0), out_g.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):
                m.d.comb += phase["fp"].eq(1)
                with m.If(t == T):
                    # every timestep scanned: wait for the FP engine to finish the layer
                    with m.If(out_t == T):
                        for l in range(n):
                            with m.If(layer == l):
                                if spike_out[l] is not None:  # the next layer's cores go on
                                    m.d.comb += spike_out[l].end.eq(1)
                                    m.next = "FP_FLUSH"
                                elif l == n - 1:
                                    m.d.sync += decide.eq(1)
                                    m.next = "DECIDE"
                                else:  # the next layer is here, whole: its inputs are this layer's spikes
                                    into_layer(l + 1, "SCAN")
                with m.Elif(scan.done):
                    m.d.comb += scan.start.eq(1)
                    m.d.sync += t.eq(t + 1)
            with m.State("DECIDE"):
                m.d.comb += phase["fp"].eq(1)
                with m.If(readout.decided & ~decide):  # the readout sees decide in this state's first cycle
                    m.d.sync += self.prediction.eq(readout.prediction)
                    forward_done()
            if any(ob is not None for ob in spike_out):
                with m.State("FP_FLUSH"):  # the end marker is out: this layer's forward pass is over
                    m.d.comb += phase["fp"].eq(1)
                    with m.If(per_layer(spike_out, "idle")):
                        for l in range(n):
                            if spike_out[l] is not None:
                                with m.If(layer == l):
                                    if l == n - 1:
                                        forward_done()
                                    else:  # (its spikes come back to this core through the network)
                                        into_layer(l + 1, "SCAN")
            if any(ib is not None for ib in error_in):
                with m.State("EPS_WAIT"):  # the layer above's partial sums, every end marker in
                    m.d.comb += phase["bp"].eq(1)
                    with m.If(per_layer(error_in, "complete")):
                        for l, ib in enumerate(error_in):
                            if ib is not None:
                                with m.If(layer == l):
                                    m.d.comb += ib.finish.eq(1)
                        m.d.comb += bwd["eps_clear"].eq(1)
                        m.next = "EPS_FILL"
                with m.State("EPS_FILL"):  # rounded once, into the error memory BP reads
                    m.d.comb += phase["bp"].eq(1)
                    with m.If(bwd["eps_last"]):
                        m.next = "BP_START"
            if any_spike_in:
                with m.State("RELEASE"):
                    # the input bitmaps' bank is read for the last time: the inboxes clear it for the
                    # sample `banks` later while the core goes on. The end marker may leave at once:
                    # the layer below's next spikes for this bank can arrive during the clear, but
                    # an inbox takes no flit until it is over. (It is over long before the next
                    # release; the wait is for form.)
                    clearing = Cat(*[ib.clearing for ib in spike_in if ib is not None]).any()
                    with m.If(~clearing):
                        for ib in spike_in:
                            if ib is not None:
                                m.d.comb += [ib.release.eq(1), ib.release_bank.eq(releasing)]
                        with m.If(backward):  # the end of a backward pass
                            backward_done()
                            if error_out[0] is not None:  # the layer below's cores may round now
                                m.d.comb += error_out[0].end.eq(1)
                                m.next = "BP_FLUSH"
                            else:
                                m.next = "IDLE"
                        with m.Else():
                            m.next = "IDLE"
            with m.State("BP_START"):
                m.d.comb += [phase["bp"].eq(1), bwd["bp"].start.eq(1), bwd["bp"].first.eq(t == T - 1),
                             bwd["bp"].propagate.eq((layer != 0) | (error_out[0] is not None)),
                             bwd["feed_start"].eq(1)]
                m.next = "BP_WAIT"
            with m.State("BP_WAIT"):
                m.d.comb += phase["bp"].eq(1)
                with m.If(bp_deltas):
                    m.d.comb += scan.start.eq(1)
                    m.next = "BP_WG"
            with m.State("BP_WG"):
                # WG accumulates at the input spikes with this timestep's δ while BP still
                # propagates them (it reads weights and its own accumulators, WG the δ buffer and
                # the gradients: nothing shared); BP's next timestep rewrites the δ buffer, so it
                # waits for both. The phase is BP's while it runs, WG's once it alone is left.
                m.d.comb += [phase["bp"].eq(~bp_through), phase["wg"].eq(bp_through)]
                with m.If(bp_through & wg_drained):
                    with m.If(t == 0):
                        with m.If(layer == 0):
                            if any_spike_in:
                                m.d.sync += releasing.eq(bp_bank_lo)
                                m.next = "RELEASE"
                            elif error_out[0] is not None:  # the layer below's cores may round now
                                backward_done()
                                m.d.comb += error_out[0].end.eq(1)
                                m.next = "BP_FLUSH"
                            else:
                                backward_done()
                                m.next = "IDLE"
                        for l in range(1, n):
                            with m.If(layer == l):
                                if error_out[l] is not None:  # the layer below takes its errors from the network
                                    m.d.comb += error_out[l].end.eq(1)
                                    m.next = "BP_FLUSH"
                                else:
                                    m.d.sync += [layer.eq(l - 1), t.eq(T - 1)]
                                    m.next = "BP_START"
                    with m.Else():
                        m.d.sync += t.eq(t - 1)
                        m.next = "BP_START"
            if any(ob is not None for ob in error_out):
                with m.State("BP_FLUSH"):  # the end marker is out: the cores below may round
                    m.d.comb += phase["bp"].eq(1)
                    with m.If(per_layer(error_out, "idle")):
                        with m.If(layer == 0):
                            m.next = "IDLE"
                        with m.Else():  # (its partial sums for this core's own slice come back through the network)
                            m.d.sync += [layer.eq(layer - 1), t.eq(T - 1)]
                            m.next = "EPS_WAIT" if any(ib is not None for ib in error_in[:-1]) else "BP_START"
                            if lag:
                                # the second layer's pass is over; the first layer's runs for the
                                # sample before (its partial sums from every core of the second
                                # layer are in by now), or none is waiting and this half is over
                                m.d.sync += [bp_bank.eq(next_bank(bp_bank)), lagging.eq(lagging + 1)]
                                with m.If((lagging == 0) & ~whole_run):
                                    m.d.sync += backward.eq(0)
                                    m.next = "IDLE"
            with m.State("UPDATE"):
                m.d.comb += [phase["update"].eq(1), bwd["update_start"].eq(1)]
                m.next = "UPDATE_WAIT"
            with m.State("UPDATE_WAIT"):
                m.d.comb += phase["update"].eq(1)
                with m.If(wg_drained):
                    with m.If(layer == n - 1):
                        m.d.sync += bwd["updating"].eq(0)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += layer.eq(layer + 1)
                        m.next = "UPDATE"

        # ---- performance counters -------------------------------------------------------------
        # the host reads one element per READ_GAP cycles at most: the pending counts are sized for it
        m.submodules.counters = counters = PerfCounters(COUNTERS, read_gap=READ_GAP)
        wg_here = bwd["wg_here"]
        accumulating = Signal()  # registered, like the engines' signals it qualifies
        m.d.sync += accumulating.eq(backward & ~bwd["updating"])
        events = {
            "cycles": 1, "encode_cycles": phase["encode"], "fp_cycles": phase["fp"], "bp_cycles": phase["bp"],
            "wg_cycles": phase["wg"], "update_cycles": phase["update"],
            "fp_busy": fp.busy, "fp_stalled": fp.stalled, "fp_events": fp.event,
            "bp_busy": bwd["bp"].busy, "bp_stalled": bwd["bp"].stalled, "bp_events": bwd["bp"].event,
            "wg_busy": accumulating & wg_here.busy, "wg_stalled": accumulating & wg_here.stalled,
            "wg_events": accumulating & wg_here.event,
            "samples_inferred": decided_now & ~training,
            "samples_trained": decided_now & training,
            "updates": self.run_update & self.core_idle,
        }
        m.d.comb += counters.clear.eq(self.clear_counters)
        for name, sig in events.items():
            m.d.comb += counters.inc[name].eq(sig)

        # ---- host access: state checks, registers, memories -----------------------------------
        state = SimpleNamespace(sample_loaded=sample_loaded, spikes_loaded=spikes_loaded, batch_samples=batch_samples,
                                lr_shift=lr_shift, in_flight=in_flight)
        mems = SimpleNamespace(px_wr=px_wr, px_rd=px_rd, spike_wr=spike_wr, spike_rd=spike_rd, mt_rd=mt_rd)
        self._host(m, state, mems, bwd, counters)
        self.collisions.drive(m)
        m.d.comb += self.rw_collision.eq(self.collisions.rw_collision)
        return m

    def _host(self, m, state, mems, bwd, counters):
        """Checks for the host interface and the element-access mux (docs/host-protocol.md):
        ``state`` holds the sequencer's registers the host sees, ``mems`` the memory ports it
        shares with the engines (used only while the core is idle)."""
        cfg, p = self.cfg, self.p
        P, T, L, n = p.lanes, self.T, cfg.network.layers, self.n_layers
        log_p = P.bit_length() - 1
        lr_shift = state.lr_shift
        wg = bwd["wg"]

        # state and argument checks of a command that passed the header checks
        # a later layer's slice takes its inputs from the spike network, not from pixels
        inputs_from_network = self.role is not None and self.role.network_inputs
        with m.Switch(self.chk_op):
            if self.role is not None:
                self._check_run(m, state, inputs_from_network, wg)
            else:
                with m.Case(Op.INFER, Op.TRAIN):
                    with m.If(self.chk_region > 1):
                        m.d.comb += self.chk_error.eq(Error.BAD_ARG)
                    with m.Elif(self.chk_region[0] & ~state.spikes_loaded):
                        m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
                    with m.Elif(~self.chk_region[0] & ~state.sample_loaded):
                        m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
                    with m.Elif((self.chk_op == Op.TRAIN) & (state.batch_samples == p.max_batch)):
                        m.d.comb += self.chk_error.eq(Error.WRONG_STATE)  # the gradient memory holds one batch
                with m.Case(Op.UPDATE):
                    with m.If(state.batch_samples == 0):
                        m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
                    with m.Elif((lr_shift > MAX_LR_SHIFT) | ~wg.shift_ok):
                        m.d.comb += self.chk_error.eq(Error.BAD_ARG)
            with m.Case(Op.WRITE):
                # weights under a pending batch would make the update mix two models
                with m.If((self.chk_region >= RegionId.WEIGHTS) & (self.chk_region < RegionId.WEIGHTS + n)
                          & (state.batch_samples != 0)):
                    m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
        # pixels being (re)written are no sample until a SAMPLE completes: a refused SAMPLE (or a
        # bare WRITE to PIXELS) leaves nothing INFER/TRAIN could run on with a stale label/seed
        with m.If(self.sample_set):
            m.d.sync += state.sample_loaded.eq(1)
        with m.Elif(self.acc_wr & (self.acc_region == RegionId.PIXELS)):
            m.d.sync += state.sample_loaded.eq(0)

        # Host accesses take one register stage here. The host's acc_* are registers already, but
        # the region decode and each memory's address arithmetic sat between them and the memory
        # ports (and the ports' multiplexers with the engines). Now every memory sees a registered
        # region hit and registered address parts; reads and writes both take the cycle.
        # (sized to what the memories take: the host checked the address and the value)
        row = Signal(range(max(*L[1:], T)), name="acc_row_q")
        col = Signal(16, name="acc_col_q")
        wr, rd = Signal(name="acc_wr_q"), Signal(name="acc_rd_q")
        region = Signal(8, name="acc_region_q")
        wdata = Signal(max(cfg.formats.pixel_bits, p.weight_bits), name="acc_wdata_q")
        lane = Signal(range(P), name="acc_lane_q")
        m.d.sync += [row.eq(self.acc_row), col.eq(self.acc_col), wr.eq(self.acc_wr), rd.eq(self.acc_rd),
                     region.eq(self.acc_region), wdata.eq(self.acc_wdata), lane.eq(self.acc_col)]  # col mod P
        group = col >> log_p
        lane_mask = Signal(P, name="acc_lane_mask_q")
        bank = Signal(range(P), name="acc_bank_q")  # row-mode element (row, col): bank (lane + row) mod P
        m.d.sync += [lane_mask.eq(Const(1, P) << self.acc_col[:log_p] if P > 1 else 1),
                     bank.eq((self.acc_col + self.acc_row)[:log_p] if P > 1 else 0)]
        hits = {}

        def hit(region_id):
            """acc_region == region_id, registered with the rest of the access"""
            if region_id not in hits:
                hits[region_id] = Signal(name=f"acc_hit_{int(region_id)}")
                m.d.sync += hits[region_id].eq(self.acc_region == region_id)
            return hits[region_id]

        def row_major_addr(groups_per_row, name):
            """row * groups_per_row + col // P of a plain memory, registered with the access"""
            q = Signal(range(self.T * groups_per_row), name=f"acc_addr_{name}")  # in range: the host checked
            m.d.sync += q.eq(times_const(self.acc_row, groups_per_row) + (self.acc_col >> log_p))
            return q

        # the read's region and lane, for the cycle the memories answer
        r_region = Signal(8)
        r_lane = Signal(range(P))
        r_col = Signal(16)
        # weights and gradients are read in row mode (major = row): the element of lane `lane`
        # sits in bank (lane + row) mod P, picked straight from the banks (no rotation on this path)
        r_bank = Signal(range(P))
        with m.If(rd):
            m.d.sync += [r_region.eq(region), r_lane.eq(lane), r_col.eq(col), r_bank.eq(bank)]
        # The answer is assembled three cycles after the access register, when every region's
        # element is in a register, ORed in two registered halves and registered into acc_rdata:
        # READ_LATENCY = 6. The plain
        # memories answer at +1; their words are registered and the element picked and
        # registered again (+3). The SkewedMemories' banks are registered words at +3. The
        # register regions (INFO, CONFIG, STATUS) pick their word at +1, the hit one
        # is taken at +2 (`words_q2`, zero for any other region) and carried along. Each memory region's hit is a registered one-hot bit, so the last
        # stage is a bank select and an OR. No block RAM output feeds a multiplexer directly.
        r2_lane, r2_bank, r2_region, r3_bank = Signal(range(P)), Signal(range(P)), Signal(8), Signal(range(P))
        m.d.sync += [r2_lane.eq(r_lane), r2_bank.eq(r_bank), r2_region.eq(r_region), r3_bank.eq(r2_bank)]
        words_q2 = Signal(32)  # the register regions' word at +2 (0 for a memory region)
        mem_reads = []  # (the region ids the element answers for, element at +3)

        def held(word):  # call outside any m.If: the register loads every cycle
            q = Signal(word.shape())
            m.d.sync += q.eq(word)
            return q

        # With one lane (the small-FPGA layout) the read path keeps only the registers that hold
        # an element (memory outputs, counters, bank words): everything after them is logic up to
        # acc_rdata. The answer is then ready before READ_LATENCY and stays put (the host holds
        # the address, nothing it reads changes while the core is idle), so the host samples the
        # same word; the pipeline registers are for the clock of the many-lane builds.
        staged = held if P > 1 else (lambda word: word)

        # a plain memory's element at +3. With lanes, the word is read at +1, registered, its
        # element picked and registered. With one lane there is nothing to pick: the memory is
        # read at +2 instead (the host holds the address through the read) and its output is
        # the element, with no registers on the way
        if P > 1:
            plain_rd = rd

            def plain_element(word):
                return held(element(held(word), r2_lane))
        else:
            plain_rd = Signal(name="acc_rd_late")
            m.d.sync += plain_rd.eq(rd)

            def plain_element(word):
                return element(word, 0)

        def element(word, index):
            # element `index` of a P-lane word (element views or plain bits); signed elements
            # extend, wider ones truncate: reads return 32 bits (host-protocol §10)
            sel = Signal(signed(32), name="element_sel")
            for k in range(P):
                with m.If(index == k):
                    m.d.comb += sel.eq(word[k])
            return sel

        reg_words = []

        def words(region_id, items):
            # +1: in each region, one word of every four picked by the column's low bits (the host
            # checked the column is in range) and registered, with the region's hit; +2: the word
            # of those picked by the column's high bits, if the region is hit
            rid = int(region_id)
            sel_bits = max(1, ceil_log2(len(items)))
            quads = [items[i:i + 4] for i in range(0, len(items), 4)]
            picked = []
            for q, quad in enumerate(quads):
                pick = Signal(32, name=f"word_pick_{rid}_{q}")
                with m.Switch(r_col[:min(2, sel_bits)]):
                    for i, item in enumerate(quad):
                        with m.Case(i):
                            m.d.comb += pick.eq(item)
                picked.append(staged(pick))
            word = picked[0]
            if len(quads) > 1:
                hi = staged(r_col[2:sel_bits])
                word = Signal(32, name=f"word_sel_{rid}")
                with m.Switch(hi):
                    for q, pq in enumerate(picked):
                        with m.Case(q):
                            m.d.comb += word.eq(pq)
            hit = Signal(name=f"word_hit_{rid}")
            m.d.sync += hit.eq(r_region == region_id)
            reg_words.append(Mux(hit, word, 0))

        words(RegionId.INFO, [Const(w, 32) for w in info_words(cfg)])
        upd_lfsr = bwd["update_lfsr"]
        words(RegionId.CONFIG, [lr_shift, upd_lfsr.state if upd_lfsr is not None else Const(0, 32)])  # 0: no LFSR
        flags = Cat(state.sample_loaded, state.spikes_loaded, counters.overflow)
        words(RegionId.STATUS, [flags, self.error_code, self.error_opcode, self.error_count, self.prediction,
                                state.batch_samples])
        m.d.comb += words_q2.eq(staged(reduce(operator.or_, reg_words)))
        # the register regions are written straight from the host's access registers (no memory
        # port, no address arithmetic)
        config_wr = self.acc_wr & (self.acc_region == RegionId.CONFIG)
        with m.If(config_wr & (self.acc_col == CONFIG_FIELDS.index("lr_shift"))):
            m.d.sync += lr_shift.eq(self.acc_wdata)
        if upd_lfsr is not None:  # without one, writes to update_lfsr_state are accepted and ignored
            with m.If(config_wr & (self.acc_col == CONFIG_FIELDS.index("update_lfsr_state"))):
                m.d.comb += bwd["host_lfsr_load"].eq(1)

        # performance counters: a RAM behind the counter bank, answering at +3
        m.d.comb += [counters.rd_en.eq(rd & hit(RegionId.COUNTERS)), counters.rd_index.eq(col)]
        mem_reads.append(((RegionId.COUNTERS,), counters.rd_data))

        # pixels
        px_wr, px_rd = mems.px_wr, mems.px_rd
        with m.If(hit(RegionId.PIXELS)):
            m.d.comb += [px_wr.en.eq(Mux(wr, lane_mask, 0)), px_wr.addr.eq(group)]
            for k in range(P):
                m.d.comb += px_wr.data[k].eq(wdata)
            with m.If(plain_rd):
                m.d.comb += [px_rd.en.eq(1), px_rd.addr.eq(group)]
        px_q = plain_element(px_rd.data)
        mem_reads.append(((RegionId.PIXELS,), px_q))

        # membranes of the output layer: row t, column j
        mt_rd = mems.mt_rd
        m.d.comb += [mt_rd.en.eq(plain_rd & hit(RegionId.MEMBRANES)),
                     mt_rd.addr.eq(row_major_addr(self.out_groups[-1], "membranes"))]
        mt_q = plain_element(mt_rd.data)
        mem_reads.append(((RegionId.MEMBRANES,), mt_q))

        # spike bitmaps: row t, column neuron
        for k, (srd, swr) in enumerate(zip(mems.spike_rd, mems.spike_wr)):
            here = hit(RegionId.SPIKES + k)
            spk_addr = row_major_addr(self.bitmap_groups[k], f"spikes{k}")
            with m.If(here & plain_rd):
                m.d.comb += [srd.en.eq(1), srd.addr.eq(spk_addr)]
            srd_q = plain_element(srd.data)
            mem_reads.append(((RegionId.SPIKES + k,), srd_q))
            if k == 0:
                with m.If(here & wr):
                    m.d.comb += [swr.en.eq(lane_mask), swr.addr.eq(spk_addr),
                                 swr.data.eq(Cat(wdata[0] for _ in range(P)))]
                    m.d.sync += state.spikes_loaded.eq(1)

        # weights (row access: fixed output j = row, inputs hP.. with h = col // P) and gradients
        for l in range(n):
            with m.If(hit(RegionId.WEIGHTS + l)):
                w = self._weights_of(m, l)
                with m.If(rd):
                    m.d.comb += [w.rd_en.eq(1), w.rd_row.eq(1), w.rd_major.eq(row), w.rd_group.eq(group)]
                with m.If(wr):
                    # one element: its bank (lane + row) mod P, the value offered to every bank
                    m.d.comb += [w.wr_en.eq(1), w.wr_row.eq(1), w.wr_major.eq(row), w.wr_group.eq(group),
                                 w.wr_mask.eq(Const(1, P) << bank)]
                    for k in range(P):
                        m.d.comb += w.wr_data[k].eq(wdata)
            with m.If(hit(RegionId.GRADIENTS + l) & rd):
                m.d.comb += [wg.grad_rd_en.eq(1), wg.grad_rd_row.eq(1), wg.grad_rd_major.eq(row),
                             wg.grad_rd_group.eq(group), wg.grad_rd_layer.eq(l)]
        # one element per memory, hit by every region it holds: each weight memory (one for all
        # layers with single-port memories) and the one WG engine's gradients
        weight_regions: dict[int, tuple] = {}
        for l, w in enumerate(self.weights):
            weight_regions.setdefault(id(w), (w, []))[1].append(RegionId.WEIGHTS + l)
        for w, ids in weight_regions.values():
            mem_reads.append((tuple(ids), element(w.rd_banks, r3_bank)))
        mem_reads.append((tuple(RegionId.GRADIENTS + l for l in range(n)), element(wg.grad_rd_banks, r3_bank)))

        # the hit elements are ORed in two halves, each registered, then the halves: a one-level
        # OR of a dozen 32-bit terms behind the element selects was the design's longest path
        terms = [words_q2]
        for region_ids, elem in mem_reads:
            hit = Signal(name=f"read_hit_{int(region_ids[0])}")
            m.d.sync += hit.eq(Cat(*[r2_region == r for r in region_ids]).any())
            terms.append(Mux(hit, elem, 0))
        half = (len(terms) + 1) // 2
        halves = [staged(reduce(operator.or_, part)) for part in (terms[:half], terms[half:])]
        m.d.sync += self.acc_rdata.eq(halves[0] | halves[1])

    def _check_run(self, m, state, inputs_from_network, wg):
        """INFER/TRAIN checks of a slice core (inside the host check's switch on the opcode): the
        flags RUN_FORWARD / RUN_BACKWARD split TRAIN into its halves; at most ``banks`` samples
        (one on the output core: its readout holds one sample's counts) are in flight, and INFER,
        a whole TRAIN and UPDATE need none."""
        p = self.p
        limit = 1 if self.role.output else self.banks
        flags = self.chk_region
        backward_only = flags == RUN_BACKWARD
        spikes_ok = not inputs_from_network and self.banks == 1  # host-written spikes sit in bank 0
        known = (flags == 0) | ((self.chk_op == Op.TRAIN) & ((flags == RUN_FORWARD) | backward_only))
        if spikes_ok:
            known |= flags == RUN_SPIKES
        with m.Case(Op.INFER, Op.TRAIN):
            with m.If(~known):
                m.d.comb += self.chk_error.eq(Error.BAD_ARG)
            with m.Elif(backward_only):
                with m.If(state.in_flight == 0):
                    m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
            with m.Elif((flags == RUN_SPIKES) & ~state.spikes_loaded):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
            with m.Elif(Const(0) if inputs_from_network else (flags != RUN_SPIKES) & ~state.sample_loaded):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
            with m.Elif(Mux(flags == RUN_FORWARD, state.in_flight == limit, state.in_flight != 0)):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)  # no free bank / samples still in flight
            with m.Elif((self.chk_op == Op.TRAIN) & (state.batch_samples == p.max_batch)):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)  # the gradient memory holds one batch
        with m.Case(Op.UPDATE):
            with m.If(state.batch_samples == 0):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)
            with m.Elif(state.in_flight != 0):
                m.d.comb += self.chk_error.eq(Error.WRONG_STATE)  # a backward pass is still to come
            with m.Elif((state.lr_shift > MAX_LR_SHIFT) | ~wg.shift_ok):
                m.d.comb += self.chk_error.eq(Error.BAD_ARG)

    def _inbox_fed(self) -> list[bool]:
        """For each spike bitmap: a spike inbox fills it (the layer's inputs come from the network)."""
        links = self.role.links if self.role is not None else ()
        return [k < len(links) and links[k].spike_senders > 0 for k in range(self.n_layers + 1)]

    def _network(self, m, spike_wr, fp_bank, bp_banks) -> SimpleNamespace:
        """A slice core's inboxes and outboxes, one of each kind per layer at most (lists of
        ``n_layers``, None where a layer meets its neighbour on this core or has none; all None on
        a one-core accelerator). The spike inboxes write the layers' input bitmaps here; the FP
        engine feeds the spike outboxes, and the error side is wired in :meth:`_backward`."""
        from .inbox import ErrorInbox, ErrorOutbox, SpikeInbox, SpikeOutbox

        n = self.n_layers
        net = SimpleNamespace(spike_in=[None] * n, spike_out=[None] * n, error_in=[None] * n, error_out=[None] * n)
        r = self.role
        if r is None:
            return net
        cfg, p, T = self.cfg, self.p, self.T
        P, L = p.lanes, cfg.network.layers
        for l, link in enumerate(r.links):
            if link.spike_senders:
                m.submodules[f"spike_inbox{l}"] = net.spike_in[l] = ib = SpikeInbox(
                    T, self.fan_ins[l], P, link.spike_senders, banks=r.buffers)
                m.d.comb += ib.bank.eq(fp_bank)
                with m.If(ib.wr_en.any()):  # (on the first layer's bitmap, the encoder is idle while the inbox collects)
                    m.d.comb += [spike_wr[l].en.eq(ib.wr_en), spike_wr[l].addr.eq(ib.wr_addr),
                                 spike_wr[l].data.eq(ib.wr_data)]
            if link.spike_dst is not None:
                m.submodules[f"spike_outbox{l}"] = net.spike_out[l] = ob = SpikeOutbox(
                    P, T, link.layer_neurons, link.lo, self.out_groups[l], link.spike_dst, r.core, banks=r.buffers,
                    buffer=self.out_groups[l])
                if r.buffers > 1:
                    m.d.comb += ob.bank.eq(fp_bank)
            if link.error_senders:
                m.submodules[f"error_inbox{l}"] = net.error_in[l] = ei = ErrorInbox(
                    T, L[l + 1], r.acc_bits, p.error_bits, p.error_shift, p.error_rounding, link.error_senders,
                    index_neurons=link.error_index_neurons, banks=r.buffers, lanes=P)
                m.d.comb += ei.bank.eq(bp_banks[l])
            if link.error_owners is not None:
                # a timestep's partial sums leave the BP engine as a burst, one input group per cycle;
                # buffered, they go out while the engine works on the next timestep
                m.submodules[f"error_outbox{l}"] = net.error_out[l] = eo = ErrorOutbox(
                    P, r.acc_bits, T, list(link.error_owners), r.core, banks=r.buffers, buffer=self.in_groups[l])
                if r.buffers > 1:
                    m.d.comb += eo.bank.eq(bp_banks[l])
        for l in range(1, n):  # a boundary is local on both sides or on the network on both sides
            assert (net.spike_in[l] is None) == (net.spike_out[l - 1] is None) == (net.error_in[l - 1] is None) \
                == (net.error_out[l] is None), f"core {r.core}: layers {l - 1} and {l} meet half locally"
        # the spike network carries the spikes of every layer whose next layer has cores elsewhere
        # (or is a slice on this core: it comes back); a flit's tag says which layer sent it
        tags = [link.layer for link in r.links]
        self._from_network(m, self.spike_receive, r.spike_width, r.tag_bits,
                           [(ib.flits, tags[l] - 1) for l, ib in enumerate(net.spike_in) if ib is not None])
        self._onto_network(m, self.spike_send, r.spike_width, r.tag_bits,
                           [(ob.flits, tags[l]) for l, ob in enumerate(net.spike_out) if ob is not None])
        self._from_network(m, self.error_receive, r.error_width, r.tag_bits,
                           [(ei.flits, tags[l] + 1) for l, ei in enumerate(net.error_in) if ei is not None])
        self._onto_network(m, self.error_send, r.error_width, r.tag_bits,
                           [(eo.flits, tags[l]) for l, eo in enumerate(net.error_out) if eo is not None])
        return net

    @staticmethod
    def _from_network(m, port, width: int, tag_bits: int, boxes: list) -> None:
        """A network's deliveries to the inboxes: by the sending layer in the flit's tag (the top
        ``tag_bits`` of its data) when there are several; none are addressed to a core without."""
        if not boxes:
            m.d.comb += port.ready.eq(0)
            return
        tag = port.payload.data[width - tag_bits:] if tag_bits else 0
        for flits, sender in boxes:
            mine = (tag == sender) if len(boxes) > 1 else 1
            size = len(flits.payload.as_value())
            m.d.comb += [flits.valid.eq(port.valid & mine), flits.payload.eq(port.payload.data[:size])]
            with m.If(mine):
                m.d.comb += port.ready.eq(flits.ready)

    @staticmethod
    def _onto_network(m, port, width: int, tag_bits: int, boxes: list) -> None:
        """Outboxes' flits onto a network port (whose data may be wider than a flit's), the layer
        in the tag. The core's layers send one after another (each outbox is idle before the next
        layer starts), so the first with a flit has the port."""
        if not boxes:
            m.d.comb += port.valid.eq(0)
            return
        taken = Const(0)
        for flits, layer in boxes:
            with m.If(flits.valid & ~taken):
                data = flits.payload.data | (Const(layer, tag_bits) << (width - tag_bits) if tag_bits else 0)
                m.d.comb += [port.valid.eq(1), flits.ready.eq(port.ready), port.payload.src.eq(flits.payload.src),
                             port.payload.dst_lo.eq(flits.payload.dst_lo), port.payload.dst_hi.eq(flits.payload.dst_hi),
                             port.payload.data.eq(data)]
            taken = taken | flits.valid

    def _in_bank(self, addr, bank, groups: int):
        """``addr`` in ``bank``'s block of a per-sample memory of T * groups words per sample
        (``addr`` itself with one bank: the one-core design has none)."""
        return addr + times_const(bank, self.T * groups) if self.banks > 1 else addr

    def _weights_of(self, m, l):
        """Layer l's weight memory; in the layered (single-port) one, the accesses the caller
        makes under its current condition are of layer l."""
        w = self.weights[l]
        if self.single_port:
            m.d.comb += [w.rd_layer.eq(l), w.wr_layer.eq(l)]
        return w

    def _backward(self, m, readout, events, wg_events, spike_mems, surr_mems, spike_wr, surr_wr, layer, backward, t,
                  lr_shift, net, bp_bank):
        """BP engine, feeder, error memories, delta buffer and the WG engine (one for all layers)."""
        cfg, p = self.cfg, self.p
        P, T, L, n = p.lanes, self.T, cfg.network.layers, self.n_layers
        in_groups, out_groups = self.in_groups, self.out_groups
        # a slice above the first layer sends unrounded partial sums; the cores below round them
        # a multi-core core puts out a timestep's errors while its next timestep runs (two
        # accumulator banks); the one-core build keeps one bank, for its clock target
        m.submodules.bp = bp = BpEngine(p, partial=any(eo is not None for eo in net.error_out),
                                        overlap=self.role is not None and not p.compact)
        self.collisions.include(bp.collisions)
        shifts = [cfg.training.lr_shift_at(e) for e in range(cfg.training.epochs)]
        # one WG engine for every layer: the layers accumulate and update one after another, so
        # one datapath serves them all; its gradient memory keeps each layer's matrix apart.
        # distinct_indices: its events come from the spike scanner, which never repeats an index
        # within a timestep
        wg = WgEngine(p, lr_shifts=sorted(set(shifts)), fan_ins=list(self.fan_ins), grad_layers=cfg.layer_shapes,
                      shared_lfsr=True, distinct_indices=True, single_port=cfg.hardware.large_memories == "single_port")
        m.submodules.wg = wg
        self.collisions.include(wg.collisions)
        # the update LFSR: the layers update one after another (layer 0 first, as the contract's
        # draw order says), so the stream simply continues from layer to layer
        update_lfsr = None
        if wg.shared_lfsr:
            update_lfsr = LfsrDraws(wg.draw_widths, P, short_counts=wg.short_counts, init_seed=update_seed(cfg),
                                    width_onehot=True)
            m.submodules.update_lfsr = update_lfsr
        lanes_e = data.ArrayLayout(signed(p.error_bits), P)
        # error into layer l from layer l+1 on this core (both whole here), every timestep: BP of
        # layer l+1 writes, of layer l reads (layers below another core's slices get theirs from an inbox)
        local = [l for l in range(n - 1) if net.error_in[l] is None]
        eps_wr, eps_rd = {}, {}
        for l in local:
            depth = T * out_groups[l]
            m.submodules[f"errors{l}"] = mem = self.collisions.memory(
                shape=lanes_e, depth=depth, **single_port_memory_args(self.single_port, lanes_e, depth))
            eps_wr[l], eps_rd[l] = mem.write_port(), mem.read_port()
            m.d.comb += eps_rd[l].en.eq(0)
            self.collisions.watch(m, f"errors{l}", eps_rd[l], eps_wr[l])
            if self.single_port:  # BP of layer l+1 writes, of layer l reads: never in the same cycle
                eps_wr[l], eps_rd[l] = single_port(m, f"errors{l}", eps_wr[l], eps_rd[l])
        m.submodules.delta_buf = delta_buf = self.collisions.memory(shape=lanes_e, depth=max(out_groups), init=[])
        d_wr, d_rd = delta_buf.write_port(), delta_buf.read_port()
        self.collisions.watch(m, "delta_buf", d_rd, d_wr)
        surr_rd = [mem.read_port() for mem in surr_mems]
        spk_rd = [mem.read_port() for mem in spike_mems[1:]]  # output spikes of layer l, for BP
        m.d.comb += [rp.en.eq(0) for rp in surr_rd + spk_rd + [d_rd]]
        for l, rp in enumerate(surr_rd):
            self.collisions.watch(m, f"surrogates{l + 1}", rp, surr_wr[l])
        for l, rp in enumerate(spk_rd):
            self.collisions.watch(m, f"spikes{l + 1}_bp", rp, spike_wr[l + 1])

        # a layer below another core's slices: its errors of every timestep, rounded once by its
        # error inbox (t-major, a group at a time), written before its BP starts (one memory for
        # every such layer of the core: their backward passes run one after another)
        eps_clear, eps_last = Signal(), Signal()
        inboxes = [(l, ei) for l, ei in enumerate(net.error_in) if ei is not None]
        if inboxes:
            depth = T * max(out_groups[l] for l, _ in inboxes)
            m.submodules.errors_in = eps_in = self.collisions.memory(shape=lanes_e, depth=depth, init=[])
            eps_in_wr = eps_in.write_port(granularity=1)  # one lane (element) at a time
            eps_in_rd = eps_in.read_port()
            m.d.comb += eps_in_rd.en.eq(0)
            self.collisions.watch(m, "errors_in", eps_in_rd, eps_in_wr)
            filled = Signal(range(depth + 1))
            with m.If(eps_clear):
                m.d.sync += filled.eq(0)
            for l, ei in inboxes:
                eps = ei.eps
                m.d.comb += eps.ready.eq(1)
                with m.If(eps.valid):  # one group of P errors per cycle (only the finishing inbox has any)
                    m.d.comb += [eps_in_wr.en.eq((1 << P) - 1),
                                 eps_in_wr.addr.eq(times_const(eps.payload.t, out_groups[l]) + eps.payload.group),
                                 eps_last.eq(filled == T * out_groups[l] - 1)]
                    for k in range(P):
                        m.d.comb += eps_in_wr.data[k].eq(eps.payload.values[k])
                    m.d.sync += filled.eq(filled + 1)

        # ---- feeder: (ε, g, s) of layer `layer` at timestep t, one group per cycle ----
        feed_start = Signal()
        active = Signal()
        fe_g = Signal(range(max(out_groups) + 1))
        fe_valid = Signal()
        err_q = Signal(lanes_e)
        G = Signal(range(max(out_groups) + 1))
        for l in range(n):
            with m.If(layer == l):
                m.d.comb += [G.eq(out_groups[l]), bp.groups.eq(out_groups[l]), bp.in_groups.eq(in_groups[l])]
        ein = bp.error_in
        adv = Signal()
        m.d.comb += adv.eq(active & (~fe_valid | ein.ready))
        # the error/surrogate/spike read address of layer l+1 at timestep t, group fe_g: a counter
        # (t * groups + fe_g, started at feed_start), not a layer select and an adder in front of
        # the block RAMs
        addr = Signal(range(T * max(out_groups) + 1))
        t_base = Signal.like(addr)
        # the layer's output spikes sit in the next layer's input bitmap; where an inbox fills that
        # bitmap (the next layer is a slice here, the whole layer below its input), at the groups
        # of this core's slice of the layer
        fed = self._inbox_fed()
        offsets = [self.role.links[l].lo // P if fed[l + 1] else 0 for l in range(n)]
        apart = any(fed[1:])  # (elsewhere the spikes sit where the surrogates do: one address for both)
        spk_addr = Signal(range(T * max(self.bitmap_groups[1:]) + 1)) if apart else addr
        spk_base = Signal.like(spk_addr)
        for l in range(n):
            with m.If(layer == l):
                m.d.comb += t_base.eq(times_const(t, out_groups[l]))
                if apart:
                    m.d.comb += spk_base.eq(times_const(t, self.bitmap_groups[l + 1]) + offsets[l])
        m.d.comb += [readout.err_group.eq(fe_g), ein.valid.eq(fe_valid)]
        for l in range(n):
            with m.If(layer == l):
                state_addr = self._in_bank(addr, bp_bank, out_groups[l])  # the sample's forward state
                m.d.comb += [surr_rd[l].en.eq(adv), surr_rd[l].addr.eq(state_addr), spk_rd[l].en.eq(adv),
                             spk_rd[l].addr.eq(self._in_bank(spk_addr, bp_bank, self.bitmap_groups[l + 1])),
                             ein.payload.surrogate.eq(surr_rd[l].data), ein.payload.spikes.eq(spk_rd[l].data)]
                if l in eps_rd:  # the layer above is here
                    m.d.comb += [eps_rd[l].en.eq(adv), eps_rd[l].addr.eq(addr), ein.payload.error.eq(eps_rd[l].data)]
                elif net.error_in[l] is not None:  # the layer above has slices on other cores
                    m.d.comb += [eps_in_rd.en.eq(adv), eps_in_rd.addr.eq(addr), ein.payload.error.eq(eps_in_rd.data)]
                else:
                    m.d.comb += ein.payload.error.eq(err_q)
        with m.If(feed_start):
            m.d.sync += [active.eq(1), fe_g.eq(0), fe_valid.eq(0), addr.eq(t_base)]
            if apart:
                m.d.sync += spk_addr.eq(spk_base)
        with m.Elif(adv):
            m.d.sync += [fe_valid.eq(fe_g < G), err_q.eq(readout.err_data)]
            with m.If(fe_g < G):
                m.d.sync += [fe_g.eq(fe_g + 1), addr.eq(addr + 1)]
                if apart:
                    m.d.sync += spk_addr.eq(spk_addr + 1)
            with m.Else():
                m.d.sync += active.eq(0)

        # ---- BP outputs: δ to the buffer (and observers), ε' to the previous layer's memory ----
        # (a slice's partial sums to the error outbox instead, which may hold the engine back)
        eps_into_core = bp.error_out.payload.delta  # ε' for the layer below on this core
        m.d.comb += [bp.delta_out.ready.eq(1), bp.error_out.ready.eq(1)]
        # the timestep the error out is putting out: with overlap, the core is a timestep on by
        # then, so it is latched as BP hands the bank over; and a layer's backward pass is over
        # only once its last errors have left (`rounded`, registered like the other waits)
        t_err, rounded = t, None
        if bp.overlap:
            t_err, rounded = Signal.like(t, name="t_err"), Signal(name="bp_rounded")
            with m.If(bp.round_start):
                m.d.sync += t_err.eq(t)
            m.d.sync += rounded.eq(~bp.rounding & ~bp.round_start)
        if bp.partial:
            # a layer whose layer below has slices elsewhere sends partial sums to their cores; a
            # layer above a whole layer here rounds and saturates them here, as the one-core BP
            # engine does
            for l, eo in enumerate(net.error_out):
                if eo is None:
                    continue
                items = eo.items
                with m.If(layer == l):
                    m.d.comb += [items.valid.eq(bp.error_out.valid), bp.error_out.ready.eq(items.ready)]
                m.d.comb += [items.payload.group.eq(bp.error_out.payload.group), eo.t.eq(t_err)]
                for k in range(P):  # sign-extended to the network's width
                    m.d.comb += items.payload.delta[k].eq(bp.error_out.payload.delta[k])
            if eps_wr:
                emin, emax = -(1 << (p.error_bits - 1)), (1 << (p.error_bits - 1)) - 1
                eps_into_core = Signal(lanes_e)
                for k in range(P):
                    r = round_shift(m, bp.error_out.payload.delta[k], p.error_shift, p.error_rounding, f"eps_r_{k}")
                    m.d.comb += eps_into_core[k].eq(saturate(m, r, emin, emax, p.error_bits, f"eps_s_{k}"))
        m.d.comb += [d_wr.en.eq(bp.delta_out.valid), d_wr.addr.eq(bp.delta_out.payload.group),
                     d_wr.data.eq(bp.delta_out.payload.delta)]
        m.d.comb += [self.bp_obs_valid.eq(bp.delta_out.valid), self.bp_obs_layer.eq(layer),
                     self.bp_obs.eq(bp.delta_out.payload)]
        # t * groups of the layer below, registered: t and the layer are set at BP_START, and BP
        # emits its first ε' several cycles later (with overlap: taken as BP hands the bank over)
        eps_base = Signal(range(T * max([out_groups[l] for l in local] or [1]) + 1))
        for l in local:
            latch = (layer == l + 1) & bp.round_start if bp.overlap else layer == l + 1
            with m.If(latch):
                m.d.sync += eps_base.eq(times_const(t, out_groups[l]))
        for l in range(1, n):
            if l - 1 not in eps_wr:
                continue
            with m.If(layer == l):
                m.d.comb += [eps_wr[l - 1].en.eq(bp.error_out.valid),
                             eps_wr[l - 1].addr.eq(eps_base + bp.error_out.payload.group),
                             eps_wr[l - 1].data.eq(eps_into_core)]

        # ---- weights: BP reads rows while going backward, the WG engine updates its layer ----
        update_start = Signal()
        # in UPDATE or UPDATE_WAIT, as a register the FSM sets and clears with those states: it
        # selects the weight ports' update side, a path too long behind the state decode
        updating = Signal()
        wg_busy = Signal()
        # the counters' view of the engine, registered first (a count may land a cycle late; the
        # engine's busy logic is deep enough without the counter behind it)
        wg_here = SimpleNamespace(**{name: Signal(name=f"wg_here_{name}") for name in ("busy", "stalled", "event")})
        for name, sig in vars(wg_here).items():
            m.d.sync += sig.eq(getattr(wg, name))
        host_lfsr_load = Signal()
        if update_lfsr is not None:
            # the host's write lands a cycle later, from registers: the write's decode stays off
            # the LFSR's next-state multiplexer (nothing reads the state that soon after)
            lfsr_load_q = Signal(name="lfsr_load_q")
            lfsr_seed_q = Signal(32, name="lfsr_seed_q")
            m.d.sync += [lfsr_load_q.eq(host_lfsr_load), lfsr_seed_q.eq(self.acc_wdata)]
            m.d.comb += [update_lfsr.load.eq(lfsr_load_q), update_lfsr.seed.eq(lfsr_seed_q)]
        # the engine's layer and geometry are registers (a cycle behind `layer`: an engine starts
        # several cycles after the layer changes), so the layer select stays off its paths
        wg_layer = Signal(range(n), name="wg_layer")
        wg_rows = Signal.like(wg.rows, name="wg_rows")
        wg_cols = Signal.like(wg.cols, name="wg_cols")
        wiring.connect(m, wg_events.o, wg.spikes_in)
        m.d.comb += [wg.layer.eq(wg_layer), wg.rows.eq(wg_rows), wg.cols.eq(wg_cols), wg.lr_shift.eq(lr_shift),
                     wg.delta_data.eq(d_rd.data)]
        with m.If(backward):
            m.d.comb += [d_rd.en.eq(wg.delta_en), d_rd.addr.eq(wg.delta_group)]
        with m.If(updating):
            m.d.comb += wg.update.eq(update_start)
        for l in range(n):
            with m.If(layer == l):
                w = self._weights_of(m, l)
                m.d.sync += [wg_layer.eq(l), wg_rows.eq(L[l + 1]), wg_cols.eq(self.fan_ins[l])]
                with m.If(backward):
                    m.d.comb += [w.rd_en.eq(bp.w_rd_en), w.rd_row.eq(1), w.rd_major.eq(bp.w_rd_major),
                                 w.rd_group.eq(bp.w_rd_group), bp.w_rd_data.eq(w.rd_data)]
                with m.If(updating):
                    m.d.comb += [w.rd_en.eq(wg.w_rd_en), w.rd_row.eq(wg.w_rd_row), w.rd_major.eq(wg.w_rd_major),
                                 w.rd_group.eq(wg.w_rd_group), wg.w_rd_banks.eq(w.rd_banks),
                                 w.wr_en.eq(wg.w_wr_en), w.wr_row.eq(wg.w_wr_row), w.wr_major.eq(wg.w_wr_major),
                                 w.wr_group.eq(wg.w_wr_group), w.wr_data.eq(wg.w_wr_data), w.wr_mask.eq(wg.w_wr_mask)]
        if update_lfsr is not None:
            m.d.comb += wg.draws.eq(update_lfsr.draws)
        # an event offered to the engine counts as busy (the engine's own buffer is its spikes_in:
        # in its busy; the shared one counts going backward)
        m.d.comb += wg_busy.eq(wg.busy | (events.valid & backward))
        if update_lfsr is not None:
            # the engine's draw controls are registers and 0 unless it is updating
            m.d.comb += update_lfsr.next.eq(wg.draw_next)
            if len(update_lfsr.widths) > 1:
                m.d.comb += update_lfsr.width.eq(wg.draw_width)
            if update_lfsr.short_counts:
                m.d.comb += update_lfsr.take.eq(wg.draw_take)
        return {"bp": bp, "feed_start": feed_start, "feed_idle": ~active & ~fe_valid, "wg_busy": wg_busy,
                "update_start": update_start, "updating": updating, "wg": wg, "update_lfsr": update_lfsr,
                "wg_here": wg_here, "host_lfsr_load": host_lfsr_load, "eps_clear": eps_clear, "eps_last": eps_last,
                "rounded": rounded}
