"""The generated top: one core behind the host interface.

Ports: ``cmd`` (32-bit words in) and ``rsp`` (32-bit words out), the valid/ready streams of
docs/host-protocol.md, plus the core's trace ports (every FP ``neuron_out`` group and every δ
group, with the layer), which testbenches watch to compare per-timestep intermediates that no
memory keeps. Nothing else: a board wraps this in a UART bridge, a testbench drives it directly.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.config import SpikeforgeConfig

from .core import Core
from .host import HostInterface
from .protocol import regions

__all__ = ["Top"]

#: core-side ports of the host interface, driven by it (the rest are driven by the core)
_HOST_DRIVES = ("acc_region", "acc_row", "acc_col", "acc_rd", "acc_wr", "acc_wdata", "run", "run_train",
                "run_spikes", "run_update", "sample_set", "label", "seed", "clear_counters", "chk_op",
                "chk_region", "error_code", "error_opcode", "error_count")
_CORE_DRIVES = ("acc_rdata", "core_idle", "prediction", "chk_error")
_TRACE = ("obs_valid", "obs_layer", "obs", "bp_obs_valid", "bp_obs_layer", "bp_obs", "rw_collision")


class Top(wiring.Component):
    def __init__(self, cfg: SpikeforgeConfig, weights_init: list[dict] | None = None):
        if not isinstance(cfg, SpikeforgeConfig):
            raise TypeError(f"Top needs a SpikeforgeConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.core = Core(cfg, weights_init)
        L = cfg.network.layers
        self.host = HostInterface(regions(cfg), n_inputs=L[0], n_outputs=L[-1],
                                  wait_for_idle=cfg.hardware.large_memories == "single_port")
        members = self.core.signature.members
        super().__init__(
            {
                "cmd": In(stream.Signature(32)),
                "rsp": Out(stream.Signature(32)),
                **{name: Out(members[name].shape) for name in _TRACE},
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.host = host = self.host
        wiring.connect(m, wiring.flipped(self.cmd), host.cmd)
        wiring.connect(m, host.rsp, wiring.flipped(self.rsp))
        m.d.comb += [getattr(core, n).eq(getattr(host, n)) for n in _HOST_DRIVES]
        m.d.comb += [getattr(host, n).eq(getattr(core, n)) for n in _CORE_DRIVES]
        m.d.comb += [getattr(self, n).eq(getattr(core, n)) for n in _TRACE]
        return m
