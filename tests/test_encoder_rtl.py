"""Encoder RTL vs golden ``encode``: the spike bitmap of every timestep, exactly."""

import random

import pytest
import torch
from amaranth import Elaboratable, Module
from amaranth.lib.memory import Memory

from spikeforge.golden import encoder as golden_encoder
from spikeforge.rtl.encoder import Encoder
from spikeforge.sim.amaranth_bench import simulate


class Harness(Elaboratable):
    def __init__(self, enc: Encoder, pixels: list[int]):
        self.enc = enc
        P, H = enc.lanes, enc.groups
        mask = (1 << enc.pixel_bits) - 1
        self.words = [sum((pixels[h * P + k] & mask) << (k * enc.pixel_bits)
                          for k in range(P) if h * P + k < len(pixels)) for h in range(H)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.enc = enc = self.enc
        m.submodules.px = px = Memory(shape=enc.lanes * enc.pixel_bits, depth=enc.groups, init=self.words)
        rd = px.read_port()
        m.d.comb += [rd.en.eq(enc.px_en), rd.addr.eq(enc.px_group), enc.px_data.as_value().eq(rd.data)]
        return m


@pytest.mark.parametrize("lanes, inputs, pixel_bits", [(1, 5, 4), (4, 10, 8), (8, 64, 8), (3, 7, 2)])
@pytest.mark.parametrize("seed", [0, 12345, 0xDEADBEEF])
def test_encoder_matches_golden(lanes, inputs, pixel_bits, seed):
    T = 5
    rng = random.Random(seed ^ inputs)
    pixels = [rng.randrange(1 << pixel_bits) for _ in range(inputs)]
    pixels[0] = 0
    pixels[-1] = (1 << pixel_bits) - 1
    want = golden_encoder.encode(torch.tensor([pixels]), torch.tensor([seed & 0xFFFFFFFF]), T, pixel_bits)[:, 0]
    enc = Encoder(lanes=lanes, inputs=inputs, timesteps=T, pixel_bits=pixel_bits)
    dut = Harness(enc, pixels)
    got = {}

    async def bench(ctx):
        ctx.set(enc.seed, seed)
        ctx.set(enc.start, 1)
        await ctx.tick()
        ctx.set(enc.start, 0)
        while True:
            _, _, en, addr, word, done = await ctx.tick().sample(enc.spk_en, enc.spk_addr, enc.spk_data, enc.done)
            if en:
                got[addr] = word
            if done and len(got) == T * enc.groups:
                break

    simulate(dut, bench)
    rtl = torch.zeros(T, enc.groups * lanes, dtype=torch.int64)
    for addr, word in got.items():
        t, h = divmod(addr, enc.groups)
        for k in range(lanes):
            rtl[t, h * lanes + k] = (word >> k) & 1
    bad = torch.nonzero(rtl[:, :inputs] != want)
    assert not len(bad), f"seed {seed}: first mismatch at (t, pixel) {bad[0].tolist()}"
