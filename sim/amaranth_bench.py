"""Small helpers shared by the Amaranth-simulator tests of the blocks (no cocotb here).

One way to run a simulation, to offer a stream item with random idle gaps, to lay out a plain
weight memory for the FP engine, and to report the first golden-vs-RTL mismatch.
"""

from __future__ import annotations

import random

import torch
from amaranth.sim import Simulator

from spikeforge.rtl.params import CoreParams

__all__ = ["simulate", "send", "fp_weight_words", "assert_same"]


def simulate(dut, *testbenches, background=()) -> None:
    """Run ``testbenches`` (async functions of ``ctx``) against ``dut`` on one clock, until they
    return; ``background`` ones (monitors that never return) run alongside."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
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
