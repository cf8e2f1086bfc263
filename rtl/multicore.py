"""Several cores training a network together over the interconnect (:class:`MultiCoreTop`), and
the forward-only stage that came first (:class:`MultiCoreForward`).

:class:`MultiCoreTop` is the multi-core accelerator: one :class:`~spikeforge.rtl.core.Core` per
piece of the placement (``spikeforge.mapper.place_pipeline``: one slice, whole consecutive layers,
or the end of one layer and the start of the next), each behind its own host interface
(``cmd_k`` / ``rsp_k``: docs/host-protocol.md, the core's own regions), joined by the spike and
error networks of rtl/noc.py. A core is the one-core design computing the network of what it
holds, with the inboxes and outboxes of its :class:`~spikeforge.rtl.slice_role.SliceRole`:

    host ─► core 0 (L1[0:32]) ─┐ spikes          errors ┌─ core 5 (L2[..]) ◄─ host
    host ─► core 1 (L1[32:64]) ┴─► spike network ─► ... ─┘ ◄─ error network ◄─ ...

The host starts every core with one TRAIN (INFER) per sample: the first layer's cores encode
the pixels, the others wait for their input spikes; the output layer's cores decide and start
the backward pass; each core below the output layer waits for its error partial sums, rounds them
once, and runs BP and WG on its slice. With ``hardware.sample_buffers`` > 1 each core holds that
many samples' state and the host sends each core its own stream of forward and backward halves
(TRAIN with RUN_FORWARD / RUN_BACKWARD), so samples pipeline through the cores
(docs/multicore.md, "Samples in flight"). UPDATE is per core, after the host has written the core's
jumped update-LFSR state (docs/arithmetic.md §7.1).

The forward-only stage, kept for its per-timestep tests: of the multi-core accelerator (docs/multicore.md, "Plan"): each core
holds one slice of a layer and runs its forward pass with the same engines as the one-core
design (spike scanner, FP engine); spikes travel between cores as flits:

    input bitmap ─► scanner ─► FP engine ─► neuron groups ─► SpikeOutbox ─► spike network
         ▲                                                                       │
         └──────────────── SpikeInbox ◄──── (the next layer's cores) ◄───────────┘

A slice of the first LIF layer reads the sample's input bitmap (written by the host side; here a
memory the caller fills). A slice of a later layer clears its bitmap, collects the previous
layer's spikes and starts when every slice of that layer has sent its end marker. Training
(BP, WG, update over the error network) is the next stage.

Limits of this stage: one slice per core (the mapper's placement must give each core one slice),
one sample per run (``start``), the weights in each core's memory at elaboration.
"""

from __future__ import annotations

import torch
from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikeforge.config import SpikeforgeConfig
from spikeforge.mapper import Placement, Slice

from .fp_engine import FpEngine
from .inbox import SpikeInbox, SpikeOutbox, spike_flit_layout
from .noc import ChainNetwork, flit_layout
from .params import CoreParams
from .spike_scanner import SpikeScanner

__all__ = ["ForwardSlice", "MultiCoreForward", "MultiCoreTop", "default_placement", "slice_config"]


def slice_config(cfg: SpikeforgeConfig, s: Slice) -> SpikeforgeConfig:
    """The one-layer network a slice computes: its layer's inputs, its own neurons."""
    return cfg.replace(network={"layers": [s.fan_in, s.neurons]}, hardware={"neuron_cost": ()})


class ForwardSlice(wiring.Component):
    """One core's forward datapath for one slice. ``inbox`` is None for a first-layer slice
    (its bitmap comes from ``input_bitmap``); ``outbox`` is None for an output-layer slice (its
    neuron groups are only observed on ``neuron_out``)."""

    def __init__(self, cfg: SpikeforgeConfig, s: Slice, core: int, weights: torch.Tensor,
                 senders: int | None, next_cores: tuple[int, int] | None, layer_neurons_below: int,
                 input_bitmap: list[int] | None = None):
        from spikeforge.sim.amaranth_bench import fp_weight_words

        self.cfg, self.slice, self.core = cfg, s, core
        self.scfg = slice_config(cfg, s)
        self.p = p = CoreParams.from_config(self.scfg)
        T, P = cfg.network.timesteps, p.lanes
        self.in_words = -(-s.fan_in // P)
        self.fp = FpEngine(p)
        self.scanner = SpikeScanner(lanes=P, max_words=self.in_words, depth=T * self.in_words,
                                    index_bits=p.input_index_bits)
        self.bitmap = Memory(shape=P, depth=T * self.in_words, init=input_bitmap or [])
        self.wmem = Memory(shape=P * p.weight_bits, depth=p.max_inputs * p.max_groups, init=fp_weight_words(p, weights))
        self.inbox = SpikeInbox(T, layer_neurons_below, P, senders) if senders else None
        self.outbox = (SpikeOutbox(P, T, cfg.network.layers[s.layer + 1], s.lo, p.max_groups, next_cores, core)
                       if next_cores else None)
        ports = {"start": In(1), "done": Out(1), "neuron_out_valid": Out(1)}
        flit = spike_flit_layout(T, layer_neurons_below if senders else 1)
        ports["receive"] = In(stream.Signature(flit_layout(flit.size)))
        if self.outbox is not None:
            ports["send"] = Out(stream.Signature(self.outbox.flit))
        super().__init__(ports)

    def elaborate(self, platform):
        from spikeforge.sim.amaranth_bench import connect_fp_weights

        m = Module()
        p, T = self.p, self.cfg.network.timesteps
        m.submodules.fp, m.submodules.scanner = fp, sc = self.fp, self.scanner
        m.submodules.bitmap, m.submodules.wmem = self.bitmap, self.wmem
        connect_fp_weights(m, fp, self.wmem, p)
        rd = self.bitmap.read_port()
        m.d.comb += [rd.en.eq(sc.rd_en), rd.addr.eq(sc.rd_addr), sc.rd_data.eq(rd.data)]
        wiring.connect(m, sc.events, fp.spikes_in)
        m.d.comb += [fp.groups.eq(p.max_groups), fp.neurons.eq(self.slice.neurons)]

        if self.inbox is not None:
            m.submodules.inbox = ib = self.inbox
            wr = self.bitmap.write_port(granularity=1)
            m.d.comb += [wr.addr.eq(ib.wr_addr), wr.en.eq(ib.wr_en), wr.data.eq(ib.wr_data),
                         ib.flits.valid.eq(self.receive.valid), self.receive.ready.eq(ib.flits.ready),
                         ib.flits.payload.eq(self.receive.payload.data)]
        else:
            m.d.comb += self.receive.ready.eq(0)

        # the FP engine's groups leave through the outbox (or are only observed), counted per t
        G = p.max_groups
        out_groups = Signal(range(T * G + 1))
        t_out = Signal(range(T + 1))
        g_out = Signal(range(G + 1))
        no = fp.neuron_out
        if self.outbox is not None:
            m.submodules.outbox = ob = self.outbox
            m.d.comb += [ob.items.valid.eq(no.valid), no.ready.eq(ob.items.ready),
                         ob.items.payload.group.eq(no.payload.group), ob.items.payload.spikes.eq(no.payload.spikes),
                         ob.t.eq(t_out)]
            wiring.connect(m, ob.flits, wiring.flipped(self.send))
        else:
            m.d.comb += no.ready.eq(1)
        m.d.comb += self.neuron_out_valid.eq(no.valid & no.ready)
        with m.If(no.valid & no.ready):
            m.d.sync += out_groups.eq(out_groups + 1)
            with m.If(g_out == G - 1):
                m.d.sync += [g_out.eq(0), t_out.eq(t_out + 1)]
            with m.Else():
                m.d.sync += g_out.eq(g_out + 1)

        # sequencer: (collect the inputs,) scan each timestep, wait for the last group, end marker
        t = Signal(range(T + 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [t.eq(0), out_groups.eq(0), t_out.eq(0), g_out.eq(0)]
                    m.next = "COLLECT" if self.inbox is not None else "SCAN"
            with m.State("COLLECT"):
                with m.If(self.inbox.complete if self.inbox is not None else 1):
                    m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(t == T):
                    m.next = "DRAIN"
                with m.Elif(sc.done):
                    m.d.comb += [sc.start.eq(1), sc.base.eq(t * self.in_words), sc.words.eq(self.in_words),
                                 sc.fresh.eq(t == 0)]
                    m.d.sync += t.eq(t + 1)
                    m.next = "SCAN_WAIT"
            with m.State("SCAN_WAIT"):  # the scanner has taken the start
                m.next = "SCAN"
            with m.State("DRAIN"):
                with m.If(out_groups == T * G):
                    if self.outbox is not None:
                        m.d.comb += self.outbox.end.eq(1)
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                with m.If(self.outbox.idle if self.outbox is not None else 1):
                    if self.inbox is not None:  # the bitmap is read: cleared for the next sample
                        m.d.comb += self.inbox.release.eq(1)
                    m.next = "RELEASE"
            with m.State("RELEASE"):
                with m.If(~self.inbox.clearing if self.inbox is not None else 1):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.start):
                    m.next = "IDLE"
        return m


class MultiCoreForward(wiring.Component):
    """The forward pass of ``cfg``'s network on the cores of ``placement`` (one slice each),
    joined by the spike network. ``start`` runs one sample whose input spikes are ``inputs``
    (T, N_in) 0/1; ``done`` when every core has finished."""

    def __init__(self, cfg: SpikeforgeConfig, placement: Placement, weights: list[torch.Tensor], inputs: torch.Tensor,
                 depth: int = 2):
        if any(len(held) != 1 for held in placement.cores):
            self._MustUse__silence = True  # refused: not an elaboratable anyone forgot to use
            raise ValueError("MultiCoreForward runs one slice per core; this placement gives a core "
                             f"{max(len(h) for h in placement.cores)} slices:\n{placement.describe()}")
        self.cfg, self.placement = cfg, placement
        T, P = cfg.network.timesteps, cfg.hardware.lanes
        n = placement.n_cores
        L = cfg.network.layers
        self.slices: list[ForwardSlice] = []
        words = -(-L[0] // P)
        bitmap = [sum(int(inputs[t, w * P + k]) << k for k in range(P) if w * P + k < L[0])
                  for t in range(T) for w in range(words)]
        for c, (s,) in enumerate(placement.cores):
            below = placement.cores_of_layer(s.layer - 1) if s.layer > 0 else []
            above = placement.cores_of_layer(s.layer + 1) if s.layer + 1 < len(L) - 1 else []
            self.slices.append(ForwardSlice(
                cfg, s, c, weights[s.layer][s.lo:s.hi], senders=len(below) or None,
                next_cores=(min(above), max(above)) if above else None, layer_neurons_below=L[s.layer],
                input_bitmap=bitmap if s.layer == 0 else None))
        width = max(sl.outbox.flit_data.size for sl in self.slices if sl.outbox is not None) if n > 1 else 1
        self.network = ChainNetwork(width, n, +1, depth)
        super().__init__({"start": In(1), "done": Out(1), "misroute": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.network = net = self.network
        for c, sl in enumerate(self.slices):
            m.submodules[f"core{c}"] = sl
            m.d.comb += sl.start.eq(self.start)
            if sl.outbox is not None:
                send = net.send(c)
                m.d.comb += [send.valid.eq(sl.send.valid), sl.send.ready.eq(send.ready),
                             send.payload.src.eq(sl.send.payload.src), send.payload.dst_lo.eq(sl.send.payload.dst_lo),
                             send.payload.dst_hi.eq(sl.send.payload.dst_hi), send.payload.data.eq(sl.send.payload.data)]
            else:
                m.d.comb += net.send(c).valid.eq(0)
            dl = net.deliver(c)
            m.d.comb += [sl.receive.valid.eq(dl.valid), dl.ready.eq(sl.receive.ready),
                         sl.receive.payload.eq(dl.payload)]
        all_done = 1
        for sl in self.slices:
            all_done = all_done & sl.done
        m.d.comb += [self.done.eq(all_done), self.misroute.eq(net.misroute)]
        return m


def default_placement(cfg: SpikeforgeConfig) -> Placement:
    """The placement a ``MultiCoreTop`` of ``cfg`` runs: the neurons cut at lane groups so that the
    busiest core has the least work (``hardware.neuron_cost``; ``spikeforge.mapper.place_pipeline``):
    a core holds one slice, whole consecutive layers, or the end of one layer and the start of the next."""
    from spikeforge.mapper import place_pipeline

    hw = cfg.hardware
    return place_pipeline(cfg.network.layers, hw.cores, hw.core_neurons, hw.core_synapses, align=hw.lanes,
                          neuron_cost=hw.neuron_cost or None)


class MultiCoreTop(wiring.Component):
    """``cfg``'s network on the cores of ``placement`` (default: :func:`default_placement` on
    ``hardware.cores``). Ports: ``cmd_k`` / ``rsp_k`` of each core's host
    interface, ``misroute`` (spike network, error network: a core addressed a flit wrongly) and
    ``rw_collision`` (any core's no_rw_check memories, for simulation).

    ``link_stalls`` (verification only, 0 in a real build): every link between a core and a
    network, both ways on both networks, passes a :class:`~spikeforge.rtl.noc.StallLink` that
    stalls that percentage of cycles at random."""

    def __init__(self, cfg: SpikeforgeConfig, placement: Placement | None = None, depth: int = 2,
                 link_stalls: int = 0):
        from .bp_engine import accumulator_bits
        from .core import Core
        from .host import HostInterface
        from .noc import Interconnect
        from .protocol import regions
        from .slice_role import core_config, roles_of

        hw = cfg.hardware
        self.cfg = cfg
        self.link_stalls = link_stalls
        self.placement = placement or default_placement(cfg)
        acc_bits = accumulator_bits(CoreParams.from_config(cfg))  # the whole network's widest W^T delta sum
        self.roles = roles_of(self.placement, cfg.network.timesteps, acc_bits, hw.sample_buffers, hw.lanes)
        self.slice_cfgs = [core_config(cfg, held) for held in self.placement.cores]
        self.cores = [Core(scfg, role=r) for scfg, r in zip(self.slice_cfgs, self.roles)]
        self.hosts = [HostInterface(regions(scfg), n_inputs=scfg.network.layers[0], n_outputs=scfg.network.layers[-1],
                                    wait_for_idle=hw.large_memories == "single_port") for scfg in self.slice_cfgs]
        r0 = self.roles[0]
        self.network = Interconnect(self.placement.n_cores, r0.spike_width, r0.error_width, depth)
        ports = {}
        for k in range(self.placement.n_cores):
            ports[f"cmd_{k}"] = In(stream.Signature(32))
            ports[f"rsp_{k}"] = Out(stream.Signature(32))
        super().__init__({**ports, "misroute": Out(2), "rw_collision": Out(1)})

    def elaborate(self, platform):
        from .top import _CORE_DRIVES, _HOST_DRIVES

        m = Module()
        m.submodules.network = net = self.network
        collisions = []
        for k, (core, host) in enumerate(zip(self.cores, self.hosts)):
            m.submodules[f"core{k}"] = core
            m.submodules[f"host{k}"] = host
            wiring.connect(m, wiring.flipped(getattr(self, f"cmd_{k}")), host.cmd)
            wiring.connect(m, host.rsp, wiring.flipped(getattr(self, f"rsp_{k}")))
            m.d.comb += [getattr(core, n).eq(getattr(host, n)) for n in _HOST_DRIVES]
            m.d.comb += [getattr(host, n).eq(getattr(core, n)) for n in _CORE_DRIVES]
            links = [(core.spike_send, net.spikes.send(k)), (net.spikes.deliver(k), core.spike_receive),
                     (core.error_send, net.errors.send(k)), (net.errors.deliver(k), core.error_receive)]
            for j, (src, dst) in enumerate(links):
                if self.link_stalls:
                    from .noc import StallLink

                    width = self.roles[0].spike_width if j < 2 else self.roles[0].error_width
                    m.submodules[f"stall{k}_{j}"] = gate = StallLink(width, self.link_stalls, seed=4 * k + j)
                    wiring.connect(m, src, gate.i)
                    src = gate.o
                wiring.connect(m, src, dst)
            collisions.append(core.rw_collision)
        m.d.comb += [self.misroute.eq(net.misroute), self.rw_collision.eq(Cat(*collisions).any())]
        return m
