"""The spikeforge core, forward half: encoder → per-layer FP over all timesteps → readout.

Layers run one after another on one FP engine (layer-major, as the golden model): for layer l and
timestep t the spike scanner turns the previous layer's spike bitmap (the encoder's for l = 0)
into events; the FP engine's ``neuron_out`` groups are written to the layer's spike and surrogate
memories (the per-timestep BP storage of docs/arithmetic.md §6.5) and, for the last layer, fed
to the readout.

Status: inference only. BP, WG, the update sequence and the host interface attach here next;
until then weights and pixels are loaded through the memories' write ports (``weights``
SkewedMemory per layer, ``pixels`` memory) by the test harness.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig

from .encoder import Encoder
from .fp_engine import FpEngine, neuron_group_layout
from .params import CoreParams
from .readout import Readout
from .skewed_memory import SkewedMemory
from .spike_scanner import SpikeScanner

__all__ = ["Core"]


class Core(wiring.Component):
    def __init__(self, cfg: SpikeforgeConfig, weights_init: list[dict] | None = None):
        self.cfg = cfg
        self.p = p = CoreParams.from_config(cfg)
        L = cfg.network.layers
        self.n_layers = len(L) - 1
        self.T = cfg.network.timesteps
        P = p.lanes
        self.groups = [-(-n // P) for n in L]  # groups of every layer, inputs included
        self.weights = [
            SkewedMemory(lanes=P, width=p.weight_bits, max_outputs=L[l + 1], max_inputs=L[l],
                         init=(weights_init[l] if weights_init else None))
            for l in range(self.n_layers)
        ]
        super().__init__(
            {
                "start": In(1),  # run inference on the loaded pixels
                "seed": In(32),  # encoder seed of the sample
                "px_wr_en": In(1),
                "px_wr_group": In(max(1, ceil_log2(self.groups[0]))),
                "px_wr_data": In(data.ArrayLayout(unsigned(cfg.formats.pixel_bits), P)),
                "done": Out(1),
                "prediction": Out(max(1, ceil_log2(L[-1]))),
                # observation port for tests: every neuron_out payload, with its layer
                "obs_valid": Out(1),
                "obs_layer": Out(max(1, ceil_log2(self.n_layers))),
                "obs": Out(neuron_group_layout(p)),
                "fp_busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg, p = self.cfg, self.p
        P, T, L = p.lanes, self.T, cfg.network.layers
        m.submodules.fp = fp = FpEngine(p)
        m.submodules.readout = readout = Readout(cfg)
        for l, w in enumerate(self.weights):
            m.submodules[f"weights{l}"] = w
        enc = Encoder(lanes=P, inputs=L[0], timesteps=T, pixel_bits=cfg.formats.pixel_bits)
        m.submodules.encoder = enc
        m.submodules.pixels = pixels = Memory(shape=enc.px_data.shape(), depth=self.groups[0], init=[])
        px_wr, px_rd = pixels.write_port(), pixels.read_port()
        m.d.comb += [px_wr.en.eq(self.px_wr_en), px_wr.addr.eq(self.px_wr_group), px_wr.data.eq(self.px_wr_data),
                     px_rd.en.eq(enc.px_en), px_rd.addr.eq(enc.px_group), enc.px_data.eq(px_rd.data),
                     enc.seed.eq(self.seed)]

        # spike bitmaps: index 0 = encoder output, index l+1 = output of LIF layer l
        spike_mems = [Memory(shape=P, depth=T * g, init=[]) for g in self.groups]
        surr_mems = [Memory(shape=P * p.surrogate_bits, depth=T * g, init=[]) for g in self.groups[1:]]
        for k, mem in enumerate(spike_mems):
            m.submodules[f"spikes{k}"] = mem
        for k, mem in enumerate(surr_mems):
            m.submodules[f"surrogates{k + 1}"] = mem
        spike_wr = [mem.write_port() for mem in spike_mems]
        spike_rd = [mem.read_port() for mem in spike_mems]
        surr_wr = [mem.write_port() for mem in surr_mems]
        m.d.comb += [spike_wr[0].en.eq(enc.spk_en), spike_wr[0].addr.eq(enc.spk_addr), spike_wr[0].data.eq(enc.spk_data)]

        depth_max = max(T * g for g in self.groups)
        m.submodules.scanner = scan = SpikeScanner(lanes=P, max_words=max(self.groups), depth=depth_max,
                                                   index_bits=p.input_index_bits)
        layer = Signal(range(self.n_layers + 1))
        t = Signal(range(T + 1))
        out_t = Signal(range(T + 1))  # timesteps whose last group has left the FP engine
        out_g = Signal(range(max(self.groups) + 1))

        # the scanner reads the bitmap feeding the current layer; the FP engine reads its weights
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += [spike_rd[l].en.eq(scan.rd_en), spike_rd[l].addr.eq(scan.rd_addr),
                             scan.rd_data.eq(spike_rd[l].data), fp.groups.eq(self.groups[l + 1]),
                             fp.neurons.eq(L[l + 1])]
                w = self.weights[l]
                m.d.comb += [w.rd_en.eq(fp.weight_en), w.rd_row.eq(0), w.rd_major.eq(fp.weight_input),
                             w.rd_group.eq(fp.weight_group), fp.weight_data.eq(w.rd_data)]
        wiring.connect(m, scan.events, fp.spikes_in)

        # FP output: to this layer's spike/surrogate memories, the readout, the observation port
        out = fp.neuron_out
        m.d.comb += out.ready.eq(1)
        last_layer = layer == self.n_layers - 1
        with m.If(out.valid):
            for l in range(self.n_layers):
                with m.If(layer == l):
                    g = self.groups[l + 1]
                    addr = out_t * g + out.payload.group
                    m.d.comb += [spike_wr[l + 1].en.eq(1), spike_wr[l + 1].addr.eq(addr),
                                 spike_wr[l + 1].data.eq(out.payload.spikes),
                                 surr_wr[l].en.eq(1), surr_wr[l].addr.eq(addr),
                                 surr_wr[l].data.eq(out.payload.surrogate.as_value())]
        m.d.comb += [readout.neuron_in.valid.eq(out.valid & last_layer), readout.neuron_in.payload.eq(out.payload),
                     self.obs_valid.eq(out.valid), self.obs_layer.eq(layer), self.obs.eq(out.payload),
                     self.fp_busy.eq(fp.busy)]
        layer_groups = Signal(range(max(self.groups) + 1))
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += layer_groups.eq(self.groups[l + 1])
        with m.If(out.valid):
            with m.If(out_g == layer_groups - 1):
                m.d.sync += [out_g.eq(0), out_t.eq(out_t + 1)]
            with m.Else():
                m.d.sync += out_g.eq(out_g + 1)

        in_groups = Signal(range(max(self.groups) + 1))
        for l in range(self.n_layers):
            with m.If(layer == l):
                m.d.comb += in_groups.eq(self.groups[l])
        m.d.comb += [scan.base.eq(t * in_groups), scan.words.eq(in_groups), scan.fresh.eq(t == 0)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.start):
                    m.d.comb += [enc.start.eq(1), readout.clear.eq(1)]
                    m.next = "ENCODE"
            with m.State("ENCODE"):
                with m.If(enc.done):
                    m.d.sync += [layer.eq(0), t.eq(0), out_t.eq(0), out_g.eq(0)]
                    m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(t == T):
                    # every timestep scanned: wait for the FP engine to finish the layer
                    with m.If(out_t == T):
                        with m.If(last_layer):
                            m.d.comb += readout.decide.eq(1)
                            m.next = "DECIDE"
                        with m.Else():
                            m.d.sync += [layer.eq(layer + 1), t.eq(0), out_t.eq(0), out_g.eq(0)]
                with m.Elif(scan.done):
                    m.d.comb += scan.start.eq(1)
                    m.d.sync += t.eq(t + 1)
            with m.State("DECIDE"):
                with m.If(readout.decided):
                    m.d.sync += self.prediction.eq(readout.prediction)
                    m.next = "IDLE"
        return m
