"""The error inbox against golden: partial sums of several slices, interleaved at random with
random gaps and output stalls, come out as error_finish(sum) exactly; back to back samples."""

import random

import pytest
import torch

from spikeforge.config import bits_for_range, load_config
from spikeforge.golden import model
from spikeforge.rtl.inbox import ErrorInbox, ScatterAccumulator
from spikeforge.sim.amaranth_bench import send, simulate

CFG = load_config("configs/digits.toml")


async def send_interleaved(ctx, port, queues, rng, gap):
    """Every sender's flits in its own order, the senders interleaved at random (what the
    network allows), with random idle gaps."""
    while any(queues):
        q = rng.choice([q for q in queues if q])
        await send(ctx, port, q.pop(0), rng, gap)


def _case(seed, T, n_in, slices, big):
    g = torch.Generator().manual_seed(seed)
    wlim = 127 if big else 20
    partials = []
    for n_out in slices:
        w = torch.randint(-wlim, wlim + 1, (n_out, n_in), generator=g)
        d = torch.randint(-30000 if big else -300, 30001 if big else 301, (T, 1, n_out), generator=g)
        d[torch.rand(d.shape, generator=g) < 0.5] = 0  # sparse deltas: many zero partial sums
        if big:  # timestep 0 at the rails of both formats: the sum saturates the rounded error
            w[:] = 127
            d[0] = 32767
        partials.append(model.error_partial(CFG, w, d)[:, 0, :])
    return partials


@pytest.mark.parametrize("seed, gap, stall, big", [(1, 0.0, 0.0, False), (2, 0.4, 0.5, False), (3, 0.2, 0.3, True)])
def test_error_inbox_matches_error_finish(seed, gap, stall, big):
    T, n_in, slices = 3, 11, ([9, 7, 4] if big else [5, 7, 4])
    acc_bits = bits_for_range(-sum(slices) * 2**15 * 128, sum(slices) * 2**15 * 128)
    dut = ErrorInbox(T, n_in, acc_bits, CFG.formats.error_bits, CFG.training.error_shift,
                     CFG.training.error_rounding, senders=len(slices))
    samples = [_case(seed * 10 + k, T, n_in, slices, big) for k in range(2)]
    rng = random.Random(seed)
    got = [[] for _ in samples]

    async def senders(ctx):
        for parts in samples:
            # each sender's flits in its own order, senders interleaved at random
            queues = [[{"end": 0, "t": t, "index": i, "value": int(p[t, i])}
                       for t in range(T) for i in range(n_in) if p[t, i] != 0] + [{"end": 1, "t": 0, "index": 0, "value": 0}]
                      for p in parts]
            await send_interleaved(ctx, dut.flits, queues, rng, gap)

    async def receiver(ctx):
        for k in range(len(samples)):
            await ctx.tick().until(dut.complete)
            ctx.set(dut.finish, 1)
            await ctx.tick()
            ctx.set(dut.finish, 0)
            while len(got[k]) < T * n_in:
                ctx.set(dut.eps.ready, rng.random() >= stall)
                if ctx.get(dut.eps.valid) and ctx.get(dut.eps.ready):
                    p = ctx.get(dut.eps.payload)
                    got[k].append((int(p.t), int(p.index), int(p.value)))
                await ctx.tick()
            ctx.set(dut.eps.ready, 0)

    simulate(dut, senders, receiver)
    for k, parts in enumerate(samples):
        want = model.error_finish(CFG, sum(parts))
        order = [(t, i) for t in range(T) for i in range(n_in)]
        assert [(t, i) for t, i, _ in got[k]] == order, f"sample {k}: walk order"
        values = torch.tensor([v for _, _, v in got[k]]).view(T, n_in)
        assert torch.equal(values, want), (f"sample {k}, seed {seed}: first mismatch at "
                                           f"{(values != want).nonzero()[0].tolist()}; replay: pytest -k {seed}")
    if big:
        lim = 1 << (CFG.formats.error_bits - 1)
        assert (values == lim - 1).any() or (values == -lim).any(), "the big case should saturate somewhere"


def test_accumulator_forwards_back_to_back_hits_on_one_word():
    dut = ScatterAccumulator(4, 12)
    items = [(1, 5), (1, -3), (1, 7), (2, 1), (1, 1), (2, -2), (2, 4), (1, -100)]
    out = []

    async def tb(ctx):
        for addr, value in items:  # one per cycle: each read misses the previous item's write
            ctx.set(dut.put.payload, {"addr": addr, "value": value})
            ctx.set(dut.put.valid, 1)
            await ctx.tick()
        ctx.set(dut.put.valid, 0)
        ctx.set(dut.drain, 1)
        await ctx.tick().until(dut.draining)
        ctx.set(dut.drain, 0)
        ctx.set(dut.out.ready, 1)
        while len(out) < 4:
            if ctx.get(dut.out.valid):
                out.append(int(ctx.get(dut.out.payload.value)))
            await ctx.tick()

    simulate(dut, tb)
    assert out == [0, 5 - 3 + 7 + 1 - 100, 1 - 2 + 4, 0]


class _SpikeBench:
    """SpikeInbox writing into a bitmap memory the test reads back."""

    def __init__(self, T, n, P, senders):
        from amaranth import Module
        from amaranth.lib.memory import Memory
        from amaranth.lib import wiring

        from spikeforge.rtl.inbox import SpikeInbox

        self.inbox = SpikeInbox(T, n, P, senders)
        self.mem = Memory(shape=P, depth=T * self.inbox.groups, init=[(1 << P) - 1] * (T * self.inbox.groups))

        class Top(wiring.Component):
            def __init__(s):
                super().__init__({})

            def elaborate(s, platform):
                m = Module()
                m.submodules.inbox, m.submodules.mem = self.inbox, self.mem
                wr = self.mem.write_port(granularity=1)
                m.d.comb += [wr.addr.eq(self.inbox.wr_addr), wr.en.eq(self.inbox.wr_en), wr.data.eq(self.inbox.wr_data)]
                return m

        self.top = Top()


@pytest.mark.parametrize("P, gap", [(1, 0.0), (4, 0.3), (8, 0.0)])
def test_spike_inbox_builds_the_union_of_the_senders_spikes(P, gap):
    T, n, senders = 4, 13, 3
    bench = _SpikeBench(T, n, P, senders)
    inbox = bench.inbox
    rng = random.Random(P)
    samples = []
    for k in range(2):
        g = torch.Generator().manual_seed(k + 10 * P)
        owner = torch.randint(0, senders, (n,), generator=g)  # which sender holds each neuron
        spikes = (torch.rand(T, n, generator=g) < 0.4).to(torch.int64)
        samples.append((owner, spikes))
    seen = []

    async def tb(ctx):
        for owner, spikes in samples:
            ctx.set(inbox.start, 1)
            await ctx.tick()
            ctx.set(inbox.start, 0)
            queues = [[{"end": 0, "t": t, "neuron": i} for t in range(T) for i in range(n)
                       if spikes[t, i] and owner[i] == s] + [{"end": 1, "t": 0, "neuron": 0}] for s in range(senders)]
            await send_interleaved(ctx, inbox.flits, queues, rng, gap)
            await ctx.tick()
            assert ctx.get(inbox.complete)
            words = [ctx.get(bench.mem.data[a]) for a in range(T * inbox.groups)]
            seen.append(torch.tensor([[(words[t * inbox.groups + i // P] >> (i % P)) & 1 for i in range(n)]
                                      for t in range(T)]))

    simulate(bench.top, tb)
    for k, (_, spikes) in enumerate(samples):
        assert torch.equal(seen[k], spikes), f"sample {k}: bitmap differs at {(seen[k] != spikes).nonzero()[0].tolist()}"


def _run_outbox(dut, words, stall, gap, seed):
    """Feed ``words`` = [(t, item payload), ...] in order (moving on to the next timestep right
    after the last handshake: the outbox must latch t), then the end pulse; return every flit as
    (src, dst_lo, dst_hi, data bits), taken under random output stalls."""
    rng = random.Random(seed)
    got = []

    async def producer(ctx):
        for t, item in words:
            ctx.set(dut.t, t)
            await send(ctx, dut.items, item, rng, gap)
        await ctx.tick().until(dut.idle)
        ctx.set(dut.end, 1)
        await ctx.tick()
        ctx.set(dut.end, 0)
        await ctx.tick().until(dut.idle)

    async def consumer(ctx):
        while True:
            ctx.set(dut.flits.ready, rng.random() >= stall)
            if ctx.get(dut.flits.valid) and ctx.get(dut.flits.ready):
                f = ctx.get(dut.flits.payload)
                got.append((int(f.src), int(f.dst_lo), int(f.dst_hi), int(f.data)))
            await ctx.tick()

    simulate(dut, producer, background=[consumer])
    return got


@pytest.mark.parametrize("P, stall", [(1, 0.0), (4, 0.4), (8, 0.2)])
def test_error_outbox_sends_each_nonzero_sum_to_its_owner(P, stall):
    from spikeforge.rtl.inbox import ErrorOutbox

    owners = [(3, 0, 5), (4, 5, 13), (6, 13, 14)]  # the layer below, 14 neurons on cores 3, 4, 6
    T, n_in, acc_bits, me = 3, 14, 30, 7
    dut = ErrorOutbox(P, acc_bits, T, owners, me)
    H = -(-n_in // P)
    g = torch.Generator().manual_seed(P)
    sums = torch.randint(-(1 << 28), 1 << 28, (T, H * P), generator=g)
    sums[torch.rand(sums.shape, generator=g) < 0.6] = 0
    sums[:, n_in:] = 0  # padding lanes of the last group hold nothing
    words = [(t, {"group": h, "delta": [int(v) for v in sums[t, h * P:(h + 1) * P]]}) for t in range(T) for h in range(H)]
    got = _run_outbox(dut, words, stall, 0.2, P)
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    want = []
    for t in range(T):
        for i in range(n_in):
            if sums[t, i]:
                core, lo, _ = next(o for o in owners if o[1] <= i < o[2])
                want.append((me, core, core, code(end=0, t=t, index=i - lo, value=int(sums[t, i]))))
    assert got == want + [(me, 3, 6, code(end=1, t=0, index=0, value=0))]


@pytest.mark.parametrize("P, stall", [(1, 0.3), (4, 0.0), (8, 0.5)])
def test_spike_outbox_multicasts_each_spike(P, stall):
    from spikeforge.rtl.inbox import SpikeOutbox

    T, layer_n, offset, n_slice, me = 3, 40, 11, 13, 2
    G = -(-n_slice // P)
    dut = SpikeOutbox(P, T, layer_n, offset, G, (5, 9), me)
    g = torch.Generator().manual_seed(P)
    spikes = (torch.rand(T, G * P, generator=g) < 0.35).to(torch.int64)
    spikes[:, n_slice:] = 0
    words = [(t, {"group": h, "spikes": sum(int(spikes[t, h * P + k]) << k for k in range(P))})
             for t in range(T) for h in range(G)]
    got = _run_outbox(dut, words, stall, 0.3, P)
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    want = [(me, 5, 9, code(end=0, t=t, neuron=offset + i)) for t in range(T) for i in range(n_slice) if spikes[t, i]]
    assert got == want + [(me, 5, 9, code(end=1, t=0, neuron=0))]
