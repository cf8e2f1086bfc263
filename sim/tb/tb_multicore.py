"""cocotb bench: the multi-core accelerator (rtl/multicore.py ``MultiCoreTop``) under Verilator,
driven only through its cores' host ports by :class:`~spikeforge.sim.multicore_driver.MultiCoreRtlBackend`.

Test ``lockstep`` trains on real samples with the golden multi-core model on the same placement
running beside the RTL (:class:`~spikeforge.sim.multicore_driver.LockstepBackend`): every
prediction and, after every update, every core's weights must be equal; it stops at the first
difference with the replay command. Random idle gaps on every ``cmd_k`` and random low ready on
every ``rsp_k`` come from the run's seed. The interconnect's ``misroute`` flags and the cores'
``rw_collision`` must stay low.

Arguments (``$SPIKEFORGE_COSIM_ARGS``)::

    config     SpikeforgeConfig.to_dict() of the build
    seed       drives gaps and backpressure
    gap, stall probabilities (host streams)
    replay     one-line command that reruns this simulation
    lockstep   {"dataset", "samples", "epochs", "test_samples"}
    mutant     "unjumped_lfsr": the host gives every core the stream's start state (must fail)
    probe_refusals  pipelined training only: the first batch's command streams carry commands the
               cores must refuse (a backward pass with nothing in flight, unknown flags, a forward
               pass with no free bank, INFER / whole TRAIN / UPDATE with samples in flight); each
               refusal is checked, and the lockstep comparison shows they changed nothing
    out        JSON written with the results: weights_sha256, cycles per phase, counters
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import cocotb
from cocotb.task import bridge, resume
from cocotb.utils import get_sim_time

from spikeforge.config import SpikeforgeConfig
from spikeforge.rtl.multicore import default_placement
from spikeforge.rtl.slice_role import core_config
from spikeforge.rtl.protocol import Op, split_response
from spikeforge.sim.driver import Client
from spikeforge.sim.tb.tb_core import CLOCK_NS, CocotbTransport, start_clock_and_reset


def roles_for(cfg, placement):
    """The cores' roles of the build (rtl/slice_role.py), as MultiCoreTop derives them."""
    from spikeforge.rtl.bp_engine import accumulator_bits
    from spikeforge.rtl.params import CoreParams
    from spikeforge.rtl.slice_role import roles_of

    return roles_of(placement, cfg.network.timesteps, accumulator_bits(CoreParams.from_config(cfg)),
                    cfg.hardware.sample_buffers, cfg.hardware.lanes)


class MultiTB:
    def __init__(self, dut, args: dict):
        self.dut, self.args = dut, args
        self.cfg = SpikeforgeConfig.from_dict(args["config"])
        self.placement = default_placement(self.cfg)
        self.seed = int(args.get("seed", 0))
        gap, stall = float(args.get("gap", 0.0)), float(args.get("stall", 0.0))
        self.transports = [CocotbTransport(dut, random.Random(self.seed * 1000 + k), gap, stall, cmd=f"cmd_{k}",
                                           rsp=f"rsp_{k}") for k in range(self.placement.n_cores)]
        self.clients = [Client(t, core_config(self.cfg, held)) for t, held in zip(self.transports, self.placement.cores)]
        self.transact_all = resume(self._transact_all)
        self.transact_streams = resume(self._transact_streams)
        #: cycles from issuing a command to every core until the last answer, per opcode
        self.cycles_in: dict[str, int] = {}

    async def start(self) -> None:
        await start_clock_and_reset(self.dut)

    async def _transact_all(self, jobs):
        t0 = get_sim_time("ns")
        tasks = [cocotb.start_soon(t._transact(words)) for t, words in jobs]
        out = [await task for task in tasks]
        op = Op(split_response(out[0][0])[1]).name
        self.cycles_in[op] = self.cycles_in.get(op, 0) + int((get_sim_time("ns") - t0) // CLOCK_NS)
        return out

    async def _transact_streams(self, streams):
        """Each core's commands in order, the cores' streams concurrently (pipelined training);
        the cycles until the last answer count as TRAIN (SAMPLE transfers included)."""
        expect = None
        if getattr(self, "_probe", None):
            streams, expect = self._inject(streams)
        t0 = get_sim_time("ns")

        async def run(t, commands):
            return [await t._transact(words) for words in commands]

        tasks = [cocotb.start_soon(run(t, commands)) for t, commands in streams]
        out = [await task for task in tasks]
        self.cycles_in["TRAIN"] = self.cycles_in.get("TRAIN", 0) + int((get_sim_time("ns") - t0) // CLOCK_NS)
        if expect is not None:
            for k, (rsps, exp) in enumerate(zip(out, expect)):
                for i, status, words in exp:
                    got = split_response(rsps[i][0])[0]
                    if got != status:
                        raise AssertionError(f"core {k}: command {words[0]:#010x} answered status {got}, "
                                             f"expected {status} (a refusal)")
                self.refusals_checked = getattr(self, "refusals_checked", 0) + len(exp)
                probes = {i for i, _, _ in exp}
                out[k] = [r for i, r in enumerate(rsps[:-1]) if i not in probes]  # without probes and CLEAR_ERROR
        return out

    def probe_refusals(self, roles) -> None:
        """Make the next ``transact_streams`` call carry refused commands (see the module docstring)."""
        self._probe = roles

    def _inject(self, streams):
        """The probe commands spliced into each core's stream: [(index in the new stream, expected
        status)], the streams with them."""
        from spikeforge.rtl.protocol import RUN_BACKWARD, RUN_FORWARD, Error, command

        roles, self._probe = self._probe, None
        fwd, bwd = command(Op.TRAIN, RUN_FORWARD), command(Op.TRAIN, RUN_BACKWARD)
        out, expect = [], []
        for (t, commands), r in zip(streams, roles):
            new, exp = [], []

            def probe(words, status):
                exp.append((len(new), status, words))
                new.append(words)

            # nothing in flight yet
            probe(bwd, Error.WRONG_STATE)
            probe(command(Op.TRAIN, RUN_FORWARD | RUN_BACKWARD), Error.BAD_ARG)
            probe(command(Op.TRAIN, 0x08), Error.BAD_ARG)
            probe(command(Op.INFER, RUN_FORWARD), Error.BAD_ARG)
            forwards = 0
            limit = 1 if r.output else r.buffers
            for words in commands:
                new.append(words)
                if words == fwd:
                    forwards += 1
                    if forwards == 1:  # a sample in flight
                        probe(command(Op.INFER), Error.WRONG_STATE)
                        probe(command(Op.TRAIN), Error.WRONG_STATE)
                        probe(command(Op.UPDATE), Error.WRONG_STATE)
                    if forwards == min(limit, r.stages - r.stage):  # the warm-up: every bank it may use is full
                        if forwards == limit:
                            probe(fwd, Error.WRONG_STATE)
            new.append(command(Op.CLEAR_ERROR))  # the refusals are recorded: the sticky registers cleared
            out.append((t, new))
            expect.append(exp)
        return out, expect

    def check_flags(self) -> None:
        if int(self.dut.misroute.value):
            raise AssertionError(f"the interconnect flagged a misrouted flit (misroute = {int(self.dut.misroute.value):#b}: "
                                 "bit 0 spike network, bit 1 error network)")
        if int(self.dut.rw_collision.value):
            raise AssertionError("a read met a same-cycle write of its address in a memory marked no_rw_check")


@cocotb.test()
async def lockstep(dut) -> None:
    """Train on the multi-core RTL and the golden multi-core model side by side."""
    import torch

    from spikeforge.data import load_dataset
    from spikeforge.golden.multicore import MultiCoreGolden
    from spikeforge.sim.multicore_driver import LockstepBackend, MultiCoreRtlBackend
    from spikeforge.sim.runner import cosim_args
    from spikeforge.train import _seeds, EVAL_STREAM, train_epoch, weights_sha256

    args = cosim_args()
    opts = args["lockstep"]
    tb = MultiTB(dut, args)
    await tb.start()
    cfg = tb.cfg

    if args.get("mutant") == "unjumped_lfsr":  # tests/test_cosim_multicore.py: the comparison can fail
        from spikeforge.sim import multicore_driver

        jumped = multicore_driver.slice_lfsr_states
        multicore_driver.slice_lfsr_states = lambda cfg, pl, state, shift: [
            state for _ in (jumped(cfg, pl, state, shift) or [])] or None
    elif args.get("mutant"):
        raise ValueError(f"unknown mutant {args['mutant']!r}")

    def job():
        data = load_dataset(opts.get("dataset", "digits"), cfg.formats.pixel_bits, cfg.training.split_seed,
                            opts.get("samples"))
        rtl = MultiCoreRtlBackend(cfg, tb.placement, tb.clients, tb.transact_all, transact_streams=tb.transact_streams)
        if args.get("probe_refusals"):
            if cfg.hardware.sample_buffers < 2:
                raise ValueError("probe_refusals needs pipelined training (hardware.sample_buffers > 1)")
            tb.probe_refusals(roles_for(cfg, tb.placement))
        ref = MultiCoreGolden(cfg, placement=tb.placement)
        t_start = time.perf_counter()

        def progress(batches, samples):
            wall = time.perf_counter() - t_start
            dut._log.info("batch %d: %d samples, predictions and every core's weights exact (%.0f s, %d cycles in TRAIN)",
                          batches, samples, wall, tb.cycles_in.get("TRAIN", 0))

        be = LockstepBackend(rtl, ref, args.get("replay", "?"), on_batch=progress)
        t0 = time.perf_counter()
        hashes = []
        for epoch in range(int(opts.get("epochs", 1))):
            train_epoch(be, cfg, data.train_x, data.train_y, epoch)
            hashes.append(weights_sha256(be.weights, cfg.formats.weight_bits))
            dut._log.info("epoch %d: %d batches, %d samples exact; weights_sha256 %s", epoch + 1, be.batches,
                          be.samples, hashes[-1][:16])
        n_test = min(int(opts.get("test_samples", 0)), len(data.test_x))
        if n_test:
            ids = torch.arange(n_test)
            be.infer(data.test_x[:n_test], _seeds(cfg.training.seed, EVAL_STREAM, ids))
        return {"cores": tb.placement.n_cores, "placement": tb.placement.to_dict(), "batches": be.batches,
                "refusals_checked": getattr(tb, "refusals_checked", 0),
                "samples_trained": be.samples, "test_samples_inferred": n_test, "weights_sha256": hashes[-1],
                "epoch_hashes": hashes, "wall_s": round(time.perf_counter() - t0, 3),
                "cycles_in": dict(tb.cycles_in), "counters": rtl.counters()}

    result = await bridge(job)()
    tb.check_flags()
    if args.get("out"):
        Path(args["out"]).write_text(json.dumps(result, indent=2) + "\n")


@cocotb.test()
async def train(dut) -> None:
    """``spikeforge train --backend rtl-multicore``: the training driver over every core's host port."""
    from spikeforge.sim.multicore_driver import MultiCoreRtlBackend
    from spikeforge.sim.runner import cosim_args
    from spikeforge.train import train as run_training
    from spikeforge.train import write_report

    args = cosim_args()
    opts = args["train"]
    tb = MultiTB(dut, args)
    await tb.start()

    def job():
        backend = MultiCoreRtlBackend(tb.cfg, tb.placement, tb.clients, tb.transact_all,
                                      transact_streams=tb.transact_streams)
        t0 = time.perf_counter()
        result = run_training(tb.cfg, dataset=opts["dataset"], samples=opts.get("samples"), epochs=opts.get("epochs"),
                              progress=bool(opts.get("progress")), backend=backend)
        wall = time.perf_counter() - t0
        cycles = int(get_sim_time("ns") // CLOCK_NS)
        result.report["rtl"] = {"cores": tb.placement.n_cores, "placement": tb.placement.describe(), "cycles": cycles,
                                "wall_s": round(wall, 3), "simulated_cycles_per_s": round(cycles / wall),
                                "cycles_in": dict(tb.cycles_in), "counters": backend.counters()}
        write_report(result.report, opts["report"])

    await bridge(job)()
    tb.check_flags()
