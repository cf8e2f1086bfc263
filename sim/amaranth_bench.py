"""Small helpers shared by the Amaranth-simulator tests of the blocks (no cocotb here).

One way to run a simulation, to offer a stream item with random idle gaps, to lay out and
connect a plain weight memory for the FP engine, and to report the first golden-vs-RTL mismatch.
"""

from __future__ import annotations

import random

import torch
from amaranth import Signal
from amaranth.sim import Simulator

from spikeforge.rtl.params import CoreParams
from spikeforge.rtl.ram import CollisionWatch
from spikeforge.rtl.skewed_memory import READ_LATENCY

__all__ = ["simulate", "watch_collisions", "send", "fp_weight_words", "connect_fp_weights", "assert_same"]


def watch_collisions(sim: Simulator, dut) -> None:
    """Fail the simulation as soon as a no_rw_check memory (rtl/ram.py) of ``dut``, or of a
    component ``dut`` keeps as an attribute (a test harness), reads a word in the cycle it is
    written."""
    watches = [w for w in [getattr(dut, "collisions", None)] + [getattr(v, "collisions", None) for v in vars(dut).values()]
               if isinstance(w, CollisionWatch)]
    for w in watches:
        async def guard(ctx, w=w):
            await ctx.posedge(w.rw_collision)
            raise AssertionError("a read met a same-cycle write of its address in a memory marked no_rw_check: "
                                 + ", ".join(w.raised(ctx)))
        sim.add_testbench(guard, background=True)


def simulate(dut, *testbenches, background=()) -> None:
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut`` on one clock, until they
    return; ``background`` ones (monitors that never return) run alongside. Any memory of ``dut``
    marked no_rw_check is watched (:func:`watch_collisions`)."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    watch_collisions(sim, dut)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.run()


async def send(ctx, port, payload, rng: random.Random, gap: float) -> None:
    """Offer one stream item after random idle cycles (probability ``gap`` each); hold it until taken."""
    while rng.random() < gap:
        await ctx.tick()
    ctx.set(port.payload, payload)
    ctx.set(port.valid, 1)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


def fp_weight_words(params: CoreParams, weights: torch.Tensor) -> list[int]:
    """A plain (unskewed) FP weight memory image: word (input i, group g) at address i*G + g,
    lane k = W[gP+k, i]; zero outside the layer."""
    P, G = params.lanes, params.max_groups
    n_out, n_in = weights.shape
    mask = (1 << params.weight_bits) - 1
    words = []
    for i in range(params.max_inputs):
        for g in range(G):
            word = 0
            for k in range(P):
                j = g * P + k
                if j < n_out and i < n_in:
                    word |= (int(weights[j, i]) & mask) << (k * params.weight_bits)
            words.append(word)
    return words


def connect_fp_weights(m, fp, wmem, params: CoreParams) -> None:
    """Serve ``fp``'s weight reads from the plain memory ``wmem`` (laid out by
    :func:`fp_weight_words`) with the core weight memory's latency: the block RAM read plus
    output registers, READ_LATENCY cycles in all."""
    rd = wmem.read_port()
    m.d.comb += [rd.addr.eq(fp.weight_input * params.max_groups + fp.weight_group), rd.en.eq(fp.weight_en)]
    data, en = rd.data, fp.weight_en
    for n in range(READ_LATENCY - 1):
        en_d, data_q = Signal(name=f"weight_en_d{n}"), Signal.like(rd.data, name=f"weight_q{n}")
        m.d.sync += en_d.eq(en)
        with m.If(en_d):
            m.d.sync += data_q.eq(data)
        data, en = data_q, en_d
    m.d.comb += fp.weight_data.as_value().eq(data)


def assert_same(tensors, seed: int, replay: str, index_names=("timestep", "index")) -> None:
    """``tensors``: (name, rtl, golden) triples compared exactly; the first mismatch is reported
    with the seed, the tensor, its index and the command that replays it."""
    for name, rtl, ref in tensors:
        bad = torch.nonzero(rtl != ref)
        if len(bad):
            pos = tuple(bad[0].tolist())
            where = ", ".join(f"{n} {v}" for n, v in zip(index_names, pos))
            raise AssertionError(f"seed {seed}: first mismatch in {name} at {where}: "
                                 f"rtl {int(rtl[pos])} != golden {int(ref[pos])}\n  replay: {replay}")
