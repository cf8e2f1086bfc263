"""The error inbox against golden: partial sums of several slices, interleaved at random with
random gaps and output stalls, come out as error_finish(sum) exactly; back to back samples."""

import gc
import random
import warnings

import pytest
import torch
from amaranth.hdl import UnusedElaboratable

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


def _group_flits(p, T, n, P, bank=None):
    """One slice's partial sums ``p`` (T x n) as error flits: one per (t, group) with any
    non-zero lane, all P lanes in it (padding lanes of the last group zero), t-major."""
    G = -(-n // P)
    padded = torch.zeros(T, G * P, dtype=torch.int64)
    padded[:, :n] = p
    flits = [{"end": 0, "t": t, "group": g, "values": [int(v) for v in padded[t, g * P:(g + 1) * P]]}
             for t in range(T) for g in range(G) if padded[t, g * P:(g + 1) * P].any()]
    if bank is not None:
        for f in flits:
            f["bank"] = bank
    return flits


def _end_flit(P, bank=None):
    f = {"end": 1, "t": 0, "group": 0, "values": [0] * P}
    if bank is not None:
        f["bank"] = bank
    return f


def _eps_word(payload, P):
    return int(payload.t), int(payload.group), [int(payload.values[k]) for k in range(P)]


def _eps_tensor(words, T, n, P, what):
    """The eps words [(t, group, values)] of one drain as a T x n tensor; checks the t-major walk
    over all T * G groups and that the padding lanes of the last group come out zero."""
    G = -(-n // P)
    assert [(t, g) for t, g, _ in words] == [(t, g) for t in range(T) for g in range(G)], \
        f"{what}: walk order {[(t, g) for t, g, _ in words]}"
    values = torch.tensor([v for _, _, vs in words for v in vs]).view(T, G * P)
    assert not values[:, n:].any(), f"{what}: padding lanes not zero: {values[:, n:].tolist()}"
    return values[:, :n]


@pytest.mark.parametrize("P", [1, 4])
@pytest.mark.parametrize("seed, gap, stall, big", [(1, 0.0, 0.0, False), (2, 0.4, 0.5, False), (3, 0.2, 0.3, True)])
def test_error_inbox_matches_error_finish(seed, gap, stall, big, P):
    T, n_in, slices = 3, 11, ([9, 7, 4] if big else [5, 7, 4])
    G = -(-n_in // P)
    acc_bits = bits_for_range(-sum(slices) * 2**15 * 128, sum(slices) * 2**15 * 128)
    dut = ErrorInbox(T, n_in, acc_bits, CFG.formats.error_bits, CFG.training.error_shift,
                     CFG.training.error_rounding, senders=len(slices), lanes=P)
    samples = [_case(seed * 10 + k, T, n_in, slices, big) for k in range(2)]
    rng = random.Random(seed)
    got = [[] for _ in samples]

    async def senders(ctx):
        for parts in samples:
            # each sender's flits in its own order, senders interleaved at random
            queues = [_group_flits(p, T, n_in, P) + [_end_flit(P)] for p in parts]
            await send_interleaved(ctx, dut.flits, queues, rng, gap)

    async def receiver(ctx):
        for k in range(len(samples)):
            await ctx.tick().until(dut.complete)
            ctx.set(dut.finish, 1)
            await ctx.tick()
            ctx.set(dut.finish, 0)
            while len(got[k]) < T * G:
                ctx.set(dut.eps.ready, rng.random() >= stall)
                if ctx.get(dut.eps.valid) and ctx.get(dut.eps.ready):
                    got[k].append(_eps_word(ctx.get(dut.eps.payload), P))
                await ctx.tick()
            ctx.set(dut.eps.ready, 0)

    simulate(dut, senders, receiver)
    for k, parts in enumerate(samples):
        want = model.error_finish(CFG, sum(parts))
        values = _eps_tensor(got[k], T, n_in, P, f"P {P}, sample {k}")
        assert torch.equal(values, want), (f"P {P}, sample {k}, seed {seed}: first mismatch at "
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

    def __init__(self, T, n, P, senders, banks=1, init=None):
        from amaranth import Module
        from amaranth.lib.memory import Memory
        from amaranth.lib import wiring

        from spikeforge.rtl.inbox import SpikeInbox

        self.inbox = SpikeInbox(T, n, P, senders, banks=banks)
        depth = banks * T * self.inbox.groups
        self.mem = Memory(shape=P, depth=depth, init=[(1 << P) - 1] * depth if init is None else init)

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

    async def release(ctx):  # clears the bank (the test's memory starts all ones)
        ctx.set(inbox.release, 1)
        await ctx.tick()
        ctx.set(inbox.release, 0)
        await ctx.tick().until(~inbox.clearing)

    async def tb(ctx):
        await release(ctx)
        for owner, spikes in samples:
            queues = [[{"end": 0, "t": t, "neuron": i} for t in range(T) for i in range(n)
                       if spikes[t, i] and owner[i] == s] + [{"end": 1, "t": 0, "neuron": 0}] for s in range(senders)]
            await send_interleaved(ctx, inbox.flits, queues, rng, gap)
            await ctx.tick()
            assert ctx.get(inbox.complete)
            words = [ctx.get(bench.mem.data[a]) for a in range(T * inbox.groups)]
            seen.append(torch.tensor([[(words[t * inbox.groups + i // P] >> (i % P)) & 1 for i in range(n)]
                                      for t in range(T)]))
            await release(ctx)

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


# the layer below, 14 neurons on cores 3, 4, 6, its slices cut at multiples of P
_OWNERS = {1: [(3, 0, 5), (4, 5, 13), (6, 13, 14)], 4: [(3, 0, 4), (4, 4, 12), (6, 12, 14)]}


def _outbox_want(code, owners, sums, T, n_in, P, me, **stamp):
    """The flits an error outbox sends for ``sums`` (T x H*P): one per (t, group) with any
    non-zero lane, all P lanes, to the group's owner with the group's index inside its slice."""
    want = []
    for t in range(T):
        for h in range(-(-n_in // P)):
            vals = [int(v) for v in sums[t, h * P:(h + 1) * P]]
            if any(vals):
                core, lo, _ = next(o for o in owners if o[1] <= h * P < o[2])
                want.append((me, core, core, code(end=0, t=t, group=h - lo // P, values=vals, **stamp)))
    return want


@pytest.mark.parametrize("P, stall", [(1, 0.0), (4, 0.4), (1, 0.3), (4, 0.0)])
@pytest.mark.parametrize("buffer", [0, 3])  # 3: a FIFO of words in front (the cores use one)
def test_error_outbox_sends_each_nonzero_group_to_its_owner(P, stall, buffer):
    from spikeforge.rtl.inbox import ErrorOutbox

    owners = _OWNERS[P]
    T, n_in, acc_bits, me = 3, 14, 30, 7
    dut = ErrorOutbox(P, acc_bits, T, owners, me, buffer=buffer)
    H = -(-n_in // P)
    g = torch.Generator().manual_seed(P + int(10 * stall))
    sums = torch.randint(-(1 << 28), 1 << 28, (T, H * P), generator=g)
    sums[torch.rand(sums.shape, generator=g) < (0.8 if P > 1 else 0.6)] = 0  # some all-zero groups
    sums[:, n_in:] = 0  # padding lanes of the last group hold nothing
    if P > 1:
        sums[1, 4:8] = 0  # an all-zero group for sure
    words = [(t, {"group": h, "delta": [int(v) for v in sums[t, h * P:(h + 1) * P]]}) for t in range(T) for h in range(H)]
    got = _run_outbox(dut, words, stall, 0.2, P)
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    want = _outbox_want(code, owners, sums, T, n_in, P, me)
    assert got == want + [(me, 3, 6, code(end=1, t=0, group=0, values=[0] * P))]


def test_error_outbox_rejects_owners_not_aligned_to_the_lanes():
    from spikeforge.rtl.inbox import ErrorOutbox

    with warnings.catch_warnings():  # the half-built outbox is never elaborated: that is the point
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="multiples of the 4 lanes"):
            ErrorOutbox(4, 30, 3, _OWNERS[1], 7)
        gc.collect()


@pytest.mark.parametrize("P, stall", [(1, 0.3), (4, 0.0), (8, 0.5)])
@pytest.mark.parametrize("buffer", [0, 3])  # 3: a FIFO of words in front (the cores use one)
def test_spike_outbox_multicasts_each_spike(P, stall, buffer):
    from spikeforge.rtl.inbox import SpikeOutbox

    T, layer_n, offset, n_slice, me = 3, 40, 11, 13, 2
    G = -(-n_slice // P)
    dut = SpikeOutbox(P, T, layer_n, offset, G, (5, 9), me, buffer=buffer)
    g = torch.Generator().manual_seed(P)
    spikes = (torch.rand(T, G * P, generator=g) < 0.35).to(torch.int64)
    spikes[:, n_slice:] = 0
    words = [(t, {"group": h, "spikes": sum(int(spikes[t, h * P + k]) << k for k in range(P))})
             for t in range(T) for h in range(G)]
    got = _run_outbox(dut, words, stall, 0.3, P)
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    want = [(me, 5, 9, code(end=0, t=t, neuron=offset + i)) for t in range(T) for i in range(n_slice) if spikes[t, i]]
    assert got == want + [(me, 5, 9, code(end=1, t=0, neuron=0))]


# ---- banks: several samples in flight -------------------------------------------------------


def _watchdog(limit, done, what):
    """A testbench that fails the simulation if the ``done`` flags are not all set within
    ``limit`` cycles (a deadlock would otherwise hang the test)."""
    async def watchdog(ctx):
        for _ in range(limit):
            if all(done.values()):
                return
            await ctx.tick()
        raise AssertionError(f"{what}: still running after {limit} cycles (deadlock?), done: {done}")
    return watchdog


async def _send_run_ahead(ctx, port, per_sender, senders, banks, rng, gap):
    """``per_sender[s]``: sender s's flits as (sample, flit) in its own order; the senders
    interleaved at random with random gaps. A sender runs ahead as far as the banks allow: its
    flits of sample k go out as soon as every sender's end marker of sample k - banks is in (the
    bank is full then, not yet finished/released: the flit must wait in the inbox)."""
    ends = [0] * (1 + max(k for q in per_sender for k, _ in q))
    queues = [list(q) for q in per_sender]
    while any(queues):
        # never empty: the sender whose next flit has the lowest sample is always eligible
        q = rng.choice([q for q in queues if q and (q[0][0] < banks or ends[q[0][0] - banks] == senders)])
        k, flit = q.pop(0)
        await send(ctx, port, flit, rng, gap)
        ends[k] += flit["end"]


@pytest.mark.parametrize("P", [1, 4])
@pytest.mark.parametrize("seed, gap, stall, big", [(21, 0.0, 0.0, False), (22, 0.3, 0.5, False),
                                                   (23, 0.1, 0.3, True), (24, 0.0, 0.6, False)])
def test_error_inbox_banks_take_the_next_sample_while_one_waits(seed, gap, stall, big, P):
    """banks=2, 3 senders, 4 samples (sample k in bank k % 2). The senders run ahead: sample
    k+1's sums come in while sample k is complete and the receiver has not finished it yet (it
    finishes late, after a random delay, under random eps stalls), and sample k+2's flits sit at
    the inbox until bank k % 2 is drained. A monitor checks every cycle: ``complete`` of the
    selected bank, no flit of a full bank taken, no flit at all taken between a finish and the
    drain's last word."""
    T, n_in, slices, B, S = 3, 7, ([9, 7, 4] if big else [5, 7, 4]), 2, 4
    G = -(-n_in // P)
    senders = len(slices)
    acc_bits = bits_for_range(-sum(slices) * 2**15 * 128, sum(slices) * 2**15 * 128)
    dut = ErrorInbox(T, n_in, acc_bits, CFG.formats.error_bits, CFG.training.error_shift,
                     CFG.training.error_rounding, senders=senders, banks=B, lanes=P)
    samples = [_case(seed * 10 + k, T, n_in, slices, big) for k in range(S)]
    srng, rrng = random.Random(seed), random.Random(seed + 1000)
    got = [[] for _ in samples]
    done = {"senders": False, "receiver": False}
    errors, cover = [], {"other_bank_while_complete": 0, "full_bank_waits": 0}

    per_sender = [[] for _ in range(senders)]  # each sample's non-zero sums, then its end marker
    for k, parts in enumerate(samples):
        for s, p in enumerate(parts):
            per_sender[s] += [(k, f) for f in _group_flits(p, T, n_in, P, bank=k % B)]
            per_sender[s].append((k, _end_flit(P, bank=k % B)))

    async def senders_tb(ctx):
        await _send_run_ahead(ctx, dut.flits, per_sender, senders, B, srng, gap)
        done["senders"] = True

    async def receiver(ctx):
        for k in range(S):
            ctx.set(dut.bank, k % B)
            await ctx.tick().until(dut.complete)
            for _ in range(rrng.randrange(100, 300)):  # finish late: the senders run ahead meanwhile
                await ctx.tick()
            ctx.set(dut.finish, 1)
            await ctx.tick()
            ctx.set(dut.finish, 0)
            while len(got[k]) < T * G:
                ctx.set(dut.eps.ready, rrng.random() >= stall)
                if ctx.get(dut.eps.valid) and ctx.get(dut.eps.ready):
                    got[k].append(_eps_word(ctx.get(dut.eps.payload), P))
                await ctx.tick()
            ctx.set(dut.eps.ready, 0)
        done["receiver"] = True

    async def monitor(ctx):
        ends, draining, left, cycle = [0] * B, False, 0, 0
        f = dut.flits
        async for _, _, fv, fr, fend, fbank, fin, comp, bank, ev, er in ctx.tick().sample(
                f.valid, f.ready, f.payload.end, f.payload.bank, dut.finish, dut.complete, dut.bank,
                dut.eps.valid, dut.eps.ready):
            cycle += 1
            if comp != (ends[bank] == senders):
                errors.append(f"cycle {cycle}: complete={comp} for bank {bank} with {ends[bank]} end markers in")
            if fv and fr:
                if ends[fbank] == senders:
                    errors.append(f"cycle {cycle}: flit (end={fend}) taken into bank {fbank}, "
                                  "whose end markers are all in")
                if draining:
                    errors.append(f"cycle {cycle}: flit of bank {fbank} taken while bank {bank} is being finished")
                if any(ends[b] == senders for b in range(B) if b != fbank):
                    cover["other_bank_while_complete"] += 1
            if fv and not fr and ends[fbank] == senders:
                cover["full_bank_waits"] += 1
            # this edge's updates
            if fv and fr and fend:
                ends[fbank] += 1
            if fin and comp and not draining:
                ends[bank], draining, left = 0, True, T * G
            if ev and er:
                if not draining:
                    errors.append(f"cycle {cycle}: eps word without a finish")
                left -= 1
                draining = left > 0

    simulate(dut, senders_tb, receiver, _watchdog(20000, done, f"seed {seed}"), background=[monitor])
    replay = f"P {P}, seed {seed}; replay: pytest -k 'banks_take and {seed}-{gap}-{stall}-{big}-{P}'"
    assert not errors, f"{replay}: " + "; ".join(errors[:5])
    for k, parts in enumerate(samples):
        want = model.error_finish(CFG, sum(parts))
        values = _eps_tensor(got[k], T, n_in, P, f"{replay}: sample {k} (bank {k % B})")
        assert torch.equal(values, want), (f"{replay}: sample {k} (bank {k % B}): first mismatch at "
                                           f"{(values != want).nonzero()[0].tolist()}: got {values.tolist()}, "
                                           f"want {want.tolist()}")
    assert cover["other_bank_while_complete"] > 0 and cover["full_bank_waits"] > 0, \
        f"{replay}: the run-ahead case was not exercised: {cover}"
    if big:
        lim = 1 << (CFG.formats.error_bits - 1)
        assert (values == lim - 1).any() or (values == -lim).any(), f"{replay}: the big case should saturate somewhere"


@pytest.mark.parametrize("P", [1, 4])
def test_error_inbox_full_bank_flits_wait_until_finished(P):
    """Directed, banks=2, 2 senders, 6 neurons (P=4: two groups, the second half padding): once
    both end markers of bank 0 are in, a flit of bank 0 (sums or end marker) is not taken, while
    bank 1 still takes flits. A flit of the other (open) bank offered during a drain -- an end
    marker during bank 0's, sums during bank 1's -- waits until the drain's last word is out. The
    waiting bank-0 sums go into bank 0's next sample (bank 0 drained to zero), and bank 1 is
    unaffected by bank 0's drain."""
    T, n, senders, B = 3, 6, 2, 2
    G = -(-n // P)
    shift = CFG.training.error_shift
    dut = ErrorInbox(T, n, 30, CFG.formats.error_bits, shift, CFG.training.error_rounding, senders=senders, banks=B,
                     lanes=P)
    rng = random.Random(5)
    done = {"tb": False}

    def flit(bank, t=0, g=0, values=None, end=0):
        """One group's flit; ``values`` = {lane: v} (in units of 1 << shift), the other lanes 0."""
        vals = [0] * P
        for lane, v in (values or {}).items():
            vals[lane] = v << shift
        return {"end": end, "t": t, "group": g, "values": vals, "bank": bank}

    def sums_flits(bank, t, sums):
        """{neuron: v} at timestep t as the flits of the groups they fall in."""
        by_group = {}
        for i, v in sums.items():
            by_group.setdefault(i // P, {})[i % P] = v
        return [flit(bank, t, g, vals) for g, vals in sorted(by_group.items())]

    def eps_of(sums):
        acc = torch.zeros(T, n, dtype=torch.int64)
        for (t, i), v in sums.items():
            acc[t, i] += v << shift
        return model.error_finish(CFG, acc)

    async def refused(ctx, payload, cycles, what):
        ctx.set(dut.flits.payload, payload)
        ctx.set(dut.flits.valid, 1)
        for c in range(cycles):
            _, _, rdy = await ctx.tick().sample(dut.flits.ready)
            assert not rdy, f"P {P}: {what}: taken after {c} cycles"
        ctx.set(dut.flits.valid, 0)

    async def finish(ctx, bank, stall, offer=None):
        """Finish ``bank`` (eps under random stalls); return its eps as a T x n tensor. With
        ``offer``, that flit is offered from the cycle after the finish pulse on: it must not be
        taken before the drain's last word."""
        ctx.set(dut.bank, bank)
        assert ctx.get(dut.complete), f"P {P}: bank {bank} should be complete"
        ctx.set(dut.finish, 1)
        await ctx.tick()
        ctx.set(dut.finish, 0)
        if offer is not None:
            ctx.set(dut.flits.payload, offer)
            ctx.set(dut.flits.valid, 1)
        words, taken_at, last_eps = [], None, None
        for cycle in range(1, 500):
            ctx.set(dut.eps.ready, rng.random() >= stall)
            _, _, v, r, payload, fr = await ctx.tick().sample(dut.eps.valid, dut.eps.ready, dut.eps.payload,
                                                              dut.flits.ready)
            if v and r:
                words.append(_eps_word(payload, P))
                last_eps = cycle
            if offer is not None and fr and taken_at is None:
                taken_at = cycle
                ctx.set(dut.flits.valid, 0)
            if len(words) == T * G and (offer is None or taken_at is not None):
                break
        ctx.set(dut.eps.ready, 0)
        assert len(words) == T * G, f"P {P}: bank {bank}: drain gave {len(words)} words"
        if offer is not None:
            assert taken_at is not None and taken_at > last_eps, \
                (f"P {P}: drain of bank {bank}: flit {offer} taken at cycle {taken_at}, "
                 f"the drain's last word at {last_eps}")
        return _eps_tensor(words, T, n, P, f"P {P}: bank {bank}")

    async def tb(ctx):
        for p in (sums_flits(0, 0, {1: 100, 2: 9}) + sums_flits(1, 1, {2: 64, 5: -3}) + sums_flits(0, 0, {1: 28})
                  + [flit(0, end=1)] + sums_flits(0, 2, {3: -5, 4: 6}) + [flit(0, end=1)]):
            await send(ctx, dut.flits, p, rng, 0.0)
        ctx.set(dut.bank, 1)
        await ctx.tick()
        assert not ctx.get(dut.complete), f"P {P}: bank 1 has no end marker yet"
        ctx.set(dut.bank, 0)
        await ctx.tick()
        assert ctx.get(dut.complete), f"P {P}: bank 0 has both end markers"
        # bank 0 is full: its sums and markers wait; bank 1 still takes flits
        await refused(ctx, flit(0, 0, 0, {k: 1000 + k for k in range(P)}), 25, "sums for full bank 0")
        await refused(ctx, flit(0, end=1), 10, "end marker for full bank 0")
        for p in sums_flits(1, 2, {0: -77}):
            await send(ctx, dut.flits, p, rng, 0.0)
        await refused(ctx, flit(0, 1, G - 1, {P - 1: 7}), 10, "sums for full bank 0 (after a bank-1 flit)")
        # finish bank 0 under stalls; a bank-1 end marker offered meanwhile waits for the drain
        got0 = await finish(ctx, 0, 0.5, offer=flit(1, end=1))
        want0 = eps_of({(0, 1): 128, (0, 2): 9, (2, 3): -5, (2, 4): 6})
        assert torch.equal(got0, want0), f"P {P}: bank 0: got {got0.tolist()}, want {want0.tolist()}"
        # bank 0 takes flits again (for its next sample); bank 1 completes
        for p in (sums_flits(1, 1, {2: 3}) + sums_flits(0, 0, {0: 1000}) + sums_flits(1, 0, {3: 11, 1: 2})
                  + [flit(1, end=1)]):
            await send(ctx, dut.flits, p, rng, 0.0)
        await ctx.tick()
        # finish bank 1; bank-0 sums offered meanwhile wait for the drain
        late = {0: -40, 1: 4} if P > 1 else {0: -40}  # lanes of the last group (P=4: neurons 4, 5)
        got1 = await finish(ctx, 1, 0.3, offer=flit(0, 1, G - 1, late))
        want1 = eps_of({(1, 2): 64 + 3, (1, 5): -3, (2, 0): -77, (0, 3): 11, (0, 1): 2})
        assert torch.equal(got1, want1), f"P {P}: bank 1: got {got1.tolist()}, want {want1.tolist()}"
        for p in [flit(0, end=1), flit(0, end=1)]:
            await send(ctx, dut.flits, p, rng, 0.0)
        await ctx.tick()
        got0 = await finish(ctx, 0, 0.0)
        want0 = eps_of({(0, 0): 1000, **{(1, (G - 1) * P + lane): v for lane, v in late.items()}})
        assert torch.equal(got0, want0), f"P {P}: bank 0, next sample: got {got0.tolist()}, want {want0.tolist()}"
        done["tb"] = True

    simulate(dut, tb, _watchdog(3000, done, f"directed error inbox, P {P}"))


def _spike_monitor(bench, senders, errors, cover):
    """Every cycle of a banked SpikeInbox: ``complete`` of the selected bank; no flit taken into
    a full bank, in a release cycle or while clearing; each spike flit writes exactly its bit
    (word bank*T*groups + t*groups + neuron//P, bit neuron%P); every other write is a clear
    (zero, all lanes, ``clearing`` high), and each release clears exactly its bank's words, in
    order."""
    ib = bench.inbox
    B, P, W, G = ib.banks, ib.P, ib.T * ib.groups, ib.groups
    f = ib.flits.payload

    async def monitor(ctx):
        ends, expect, cleared, cycle = [0] * B, None, [], 0
        async for _, _, fv, fr, fend, fbank, ft, fn, rel, relb, clr, en, addr, wdata, comp, bank in ctx.tick().sample(
                ib.flits.valid, ib.flits.ready, f.end, f.bank, f.t, f.neuron, ib.release, ib.release_bank,
                ib.clearing, ib.wr_en, ib.wr_addr, ib.wr_data, ib.complete, ib.bank):
            cycle += 1
            take = fv and fr
            if comp != (ends[bank] == senders):
                errors.append(f"cycle {cycle}: complete={comp} for bank {bank} with {ends[bank]} end markers in")
            if take and ends[fbank] == senders:
                errors.append(f"cycle {cycle}: flit (end={fend}, t={ft}, neuron={fn}) taken into full bank {fbank}")
            if take and (clr or rel):
                errors.append(f"cycle {cycle}: flit taken while clearing={clr} release={rel}")
            if take and not fend:
                want = (fbank * W + ft * G + fn // P, 1 << (fn % P))
                if (addr, en) != want or wdata & en != en:
                    errors.append(f"cycle {cycle}: spike (bank {fbank}, t {ft}, neuron {fn}) wrote addr {addr} "
                                  f"en {en:b} data {wdata:b}, want addr {want[0]} en {want[1]:b}")
            elif en:
                if not clr or wdata != 0 or en != (1 << P) - 1:
                    errors.append(f"cycle {cycle}: write addr {addr} en {en:b} data {wdata:b} with no flit, "
                                  f"clearing={clr}")
                cleared.append(addr)
            if fv and not fr and ends[fbank] == senders:
                cover["full_bank_waits"] += 1
            if take and any(ends[b] == senders for b in range(B) if b != fbank):
                cover["other_bank_while_complete"] += 1
            release_taken = rel and not en  # (a release cycle writes nothing; the clear writes every cycle)
            if expect is not None and (not clr or release_taken):  # a clear is over
                if cleared != expect:
                    errors.append(f"cycle {cycle}: the clear wrote {cleared}, want {expect}")
                expect = None
            if take and fend:
                ends[fbank] += 1
            if release_taken:
                ends[relb], expect, cleared = 0, list(range(relb * W, relb * W + W)), []
    return monitor


def _bitmaps(ctx, bench):
    """The memory as B x T x n bits."""
    ib = bench.inbox
    words = [ctx.get(bench.mem.data[a]) for a in range(ib.banks * ib.T * ib.groups)]
    return torch.tensor([[[(words[(b * ib.T + t) * ib.groups + i // ib.P] >> (i % ib.P)) & 1 for i in range(ib.n)]
                          for t in range(ib.T)] for b in range(ib.banks)]), words


async def _release(ctx, bench, bank, where):
    """Release ``bank`` (release_bank moved away right after the pulse); check that ``clearing``
    stays up for the clear, then that the bank is zero and every other word untouched."""
    ib = bench.inbox
    W = ib.T * ib.groups
    _, before = _bitmaps(ctx, bench)
    ctx.set(ib.release, 1)
    ctx.set(ib.release_bank, bank)
    await ctx.tick()
    ctx.set(ib.release, 0)
    ctx.set(ib.release_bank, (bank + 1) % ib.banks)
    cycles = 0
    while ctx.get(ib.clearing):
        await ctx.tick()
        cycles += 1
        assert cycles <= 4 * W, f"{where}: clearing bank {bank} never ends"
    _, after = _bitmaps(ctx, bench)
    assert cycles >= W, f"{where}: clearing high for {cycles} cycles after the release, bank has {W} words"
    for a in range(len(after)):
        want = 0 if a // W == bank else before[a]
        assert after[a] == want, (f"{where}: after releasing bank {bank}: word {a} (bank {a // W}) is "
                                  f"{after[a]:b}, want {want:b} (was {before[a]:b})")


@pytest.mark.parametrize("B, P, gap, seed", [(2, 1, 0.0, 31), (2, 4, 0.3, 32), (3, 1, 0.2, 33), (3, 4, 0.0, 34),
                                             (2, 4, 0.0, 35)])
def test_spike_inbox_banks_fill_the_next_sample_while_one_waits(B, P, gap, seed):
    """Sample k into bank k % B, 2B+1 samples, 3 senders running ahead (sample k+1's spikes come
    in while bank k % B is complete and not yet released; sample k+B's wait at the inbox), some
    spikes sent twice. The memory starts as garbage: every bank is released
    first (and each release must leave the other banks alone). When complete, a bank's bitmap is
    its sample's spikes, and stays so until the (late) release."""
    T, n, senders = 3, 10, 3
    S = 2 * B + 1
    rng = random.Random(seed)
    W = T * -(-n // P)
    bench = _SpikeBench(T, n, P, senders, banks=B, init=[rng.randrange(1, 1 << P) for _ in range(B * W)])
    inbox = bench.inbox
    g = torch.Generator().manual_seed(seed)
    spikes = [(torch.rand(T, n, generator=g) < 0.4).to(torch.int64) for _ in range(S)]
    per_sender = [[] for _ in range(senders)]
    for k in range(S):
        for t in range(T):
            for i in range(n):
                if spikes[k][t, i]:
                    owners = [rng.randrange(senders)]
                    if rng.random() < 0.2:  # sent twice (by another sender, or by the same one again)
                        owners.append(rng.randrange(senders))
                    for s in owners:
                        per_sender[s].append((k, {"end": 0, "t": t, "neuron": i, "bank": k % B}))
        for s in range(senders):
            per_sender[s].append((k, {"end": 1, "t": 0, "neuron": 0, "bank": k % B}))
    srng, rrng = random.Random(seed + 1), random.Random(seed + 2)
    done, errors = {"senders": False, "receiver": False}, []
    cover = {"other_bank_while_complete": 0, "full_bank_waits": 0}
    started = [False]
    replay = f"B {B}, P {P}, seed {seed}; replay: pytest -k 'banks_fill and {seed}'"

    async def senders_tb(ctx):
        while not started[0]:
            await ctx.tick()
        await _send_run_ahead(ctx, inbox.flits, per_sender, senders, B, srng, gap)
        done["senders"] = True

    async def receiver(ctx):
        for b in range(B):  # power-up garbage, cleared bank by bank
            await _release(ctx, bench, b, f"{replay}: initial release")
        started[0] = True
        for k in range(S):
            b = k % B
            ctx.set(inbox.bank, b)
            await ctx.tick().until(inbox.complete)
            bits, _ = _bitmaps(ctx, bench)
            assert torch.equal(bits[b], spikes[k]), (f"{replay}: sample {k} (bank {b}) at complete: bitmap "
                                                     f"{bits[b].tolist()}, want {spikes[k].tolist()}")
            for _ in range(rrng.randrange(10, 150)):  # release late: the senders run ahead meanwhile
                await ctx.tick()
            bits, _ = _bitmaps(ctx, bench)
            assert ctx.get(inbox.complete), f"{replay}: sample {k} (bank {b}): complete fell before the release"
            assert torch.equal(bits[b], spikes[k]), (f"{replay}: sample {k} (bank {b}) before its release: "
                                                     f"bitmap {bits[b].tolist()}, want {spikes[k].tolist()}")
            await _release(ctx, bench, b, f"{replay}: sample {k}")
        done["receiver"] = True

    simulate(bench.top, senders_tb, receiver, _watchdog(30000, done, replay),
             background=[_spike_monitor(bench, senders, errors, cover)])
    assert not errors, f"{replay}: " + "; ".join(errors[:5])
    assert cover["other_bank_while_complete"] > 0 and cover["full_bank_waits"] > 0, \
        f"{replay}: the run-ahead case was not exercised: {cover}"


@pytest.mark.parametrize("B", [2, 3])
def test_spike_inbox_full_bank_flits_wait_until_released(B):
    """Directed, P=4, 2 senders: once both end markers of bank 0 are in, bank 0's spikes and end
    markers are refused while the other banks take theirs; a bank-0 spike offered with the release
    pulse waits through the whole clear (``clearing`` high), then lands in the cleared bank 0; the
    other banks' bits stay."""
    T, n, P, senders = 3, 10, 4, 2
    bench = _SpikeBench(T, n, P, senders, banks=B, init=[0] * (B * T * 3))
    ib = bench.inbox
    rng = random.Random(7)
    done, errors = {"tb": False}, []
    cover = {"other_bank_while_complete": 0, "full_bank_waits": 0}

    def spike(bank, t=0, i=0, end=0):
        return {"end": end, "t": t, "neuron": i, "bank": bank}

    def want(*bits):
        w = torch.zeros(B, T, n, dtype=torch.int64)
        for b, t, i in bits:
            w[b, t, i] = 1
        return w

    async def refused(ctx, payload, cycles, what):
        ctx.set(ib.flits.payload, payload)
        ctx.set(ib.flits.valid, 1)
        for c in range(cycles):
            _, _, rdy = await ctx.tick().sample(ib.flits.ready)
            assert not rdy, f"B {B}: {what}: taken after {c} cycles"
        ctx.set(ib.flits.valid, 0)

    async def release_with_offer(ctx, bank, payload):
        """Pulse release of ``bank`` while ``payload`` is offered: the flit is not taken in the
        release cycle nor while ``clearing`` (high for at least the bank's words); then it is."""
        ctx.set(ib.flits.payload, payload)
        ctx.set(ib.flits.valid, 1)
        ctx.set(ib.release, 1)
        ctx.set(ib.release_bank, bank)
        _, _, rdy = await ctx.tick().sample(ib.flits.ready)
        assert not rdy, f"B {B}: flit {payload} taken in the release cycle"
        ctx.set(ib.release, 0)
        ctx.set(ib.release_bank, (bank + 1) % B)
        clearing = 0
        while True:
            _, _, rdy, clr = await ctx.tick().sample(ib.flits.ready, ib.clearing)
            assert not (rdy and clr), f"B {B}: flit {payload} taken while clearing"
            clearing += clr
            if rdy:
                break
            assert clearing < 100, f"B {B}: flit {payload} never taken after the release"
        ctx.set(ib.flits.valid, 0)
        assert clearing >= T * 3, f"B {B}: clearing high {clearing} cycles for {T * 3} words"
        await ctx.tick()

    async def tb(ctx):
        for p in [spike(0, 1, 5), spike(1, 0, 2), spike(0, end=1), spike(0, 2, 9), spike(0, end=1)]:
            await send(ctx, ib.flits, p, rng, 0.0)
        await ctx.tick()
        for b in range(B):
            ctx.set(ib.bank, b)
            assert ctx.get(ib.complete) == (b == 0), f"B {B}: complete of bank {b}"
        await refused(ctx, spike(0, 2, 7), 25, "spike for full bank 0")
        await refused(ctx, spike(0, end=1), 10, "end marker for full bank 0")
        await send(ctx, ib.flits, spike(B - 1, 2, 3), rng, 0.0)
        await refused(ctx, spike(0, 0, 0), 10, "spike for full bank 0 (after another bank's)")
        bits, _ = _bitmaps(ctx, bench)
        assert torch.equal(bits, want((0, 1, 5), (0, 2, 9), (1, 0, 2), (B - 1, 2, 3))), f"B {B}: {bits.tolist()}"
        # offer a bank-0 spike and release bank 0 in the same cycle: it waits through the clear
        await release_with_offer(ctx, 0, spike(0, 2, 7))
        bits, _ = _bitmaps(ctx, bench)
        assert torch.equal(bits, want((0, 2, 7), (1, 0, 2), (B - 1, 2, 3))), \
            f"B {B}: after releasing bank 0 and taking its waiting spike: {bits.tolist()}"
        ctx.set(ib.bank, 0)
        assert not ctx.get(ib.complete), f"B {B}: bank 0's end count was not reset by the release"
        for p in [spike(0, end=1), spike(0, 0, 0), spike(0, end=1)]:
            await send(ctx, ib.flits, p, rng, 0.0)
        await ctx.tick()
        assert ctx.get(ib.complete), f"B {B}: bank 0's next sample should be complete"
        bits, _ = _bitmaps(ctx, bench)
        assert torch.equal(bits, want((0, 2, 7), (0, 0, 0), (1, 0, 2), (B - 1, 2, 3))), f"B {B}: {bits.tolist()}"
        # release bank 0 again, a spike of an open bank offered in the same cycle: it waits too
        await release_with_offer(ctx, 0, spike(1, 1, 1))
        bits, _ = _bitmaps(ctx, bench)
        assert torch.equal(bits, want((1, 0, 2), (1, 1, 1), (B - 1, 2, 3))), \
            f"B {B}: after releasing bank 0 with a bank-1 spike waiting: {bits.tolist()}"
        done["tb"] = True

    simulate(bench.top, tb, _watchdog(3000, done, f"directed spike inbox, B {B}"),
             background=[_spike_monitor(bench, senders, errors, cover)])
    assert not errors, f"B {B}: " + "; ".join(errors[:5])


@pytest.mark.parametrize("seed, gap, stall", [(41, 0.0, 0.0), (42, 0.3, 0.5)])
def test_accumulator_drains_one_region(seed, gap, stall):
    """depth 8, drain_words 4. Drain base 4 (requested the cycle after the last item; drain_base
    moved away right after the request is taken): words 4..7 come out as addr 0..3 and are
    zeroed, words 0..3 keep their sums; an item offered during the drain waits and lands after
    it; then drains of base 0, 4, 2 (a region straddling the two halves) and 0, 4 again."""
    dut = ScatterAccumulator(8, 16, drain_words=4)
    rng = random.Random(seed)
    mem = [0] * 8
    drains = []
    done = {"tb": False}

    async def put(ctx, items):
        for addr, value in items:
            await send(ctx, dut.put, {"addr": addr, "value": value}, rng, gap)
            mem[addr] += value

    async def drain(ctx, base, late_item=None):
        """Request a drain of ``base``; move drain_base away once it is taken; collect the words
        under random stalls; with ``late_item``, offer that item meanwhile (it must wait)."""
        ctx.set(dut.drain, 1)
        ctx.set(dut.drain_base, base)
        if late_item is not None:
            ctx.set(dut.put.payload, {"addr": late_item[0], "value": late_item[1]})
            ctx.set(dut.put.valid, 1)
        out, put_taken = [], None
        for _ in range(20):
            _, _, put_ready = await ctx.tick().sample(dut.put.ready)
            assert not (late_item is not None and put_ready), f"seed {seed}: item taken with a drain requested"
            if ctx.get(dut.draining):
                break
        assert ctx.get(dut.draining), f"seed {seed}: the drain of base {base} never started"
        ctx.set(dut.drain, 0)
        ctx.set(dut.drain_base, (base + 3) % 8)  # must have been sampled with the request
        for _ in range(200):
            r = rng.random() >= stall
            ctx.set(dut.out.ready, r)
            _, _, v, a, val, pv, pr = await ctx.tick().sample(
                dut.out.valid, dut.out.payload.addr, dut.out.payload.value, dut.put.valid, dut.put.ready)
            if v and r:
                assert put_taken is None, f"seed {seed}: drain word after the late item was taken"
                out.append((a, val))
            if pv and pr and late_item is not None:
                assert put_taken is None
                put_taken = len(out)
                ctx.set(dut.put.valid, 0)
            if len(out) == 4 and (late_item is None or put_taken is not None):
                break
        ctx.set(dut.out.ready, 0)
        want = [(a, mem[base + a]) for a in range(4)]
        assert out == want, f"seed {seed}: drain of base {base}: got {out}, want {want} (memory {mem})"
        for a in range(4):
            mem[base + a] = 0
        if late_item is not None:
            assert put_taken == 4, f"seed {seed}: late item taken after {put_taken} drain words"
            mem[late_item[0]] += late_item[1]
        drains.append(base)

    async def tb(ctx):
        await put(ctx, [(rng.randrange(8), rng.randrange(-500, 501)) for _ in range(40)]
                  + [(a, 100 + a) for a in range(8)])  # every word non-zero (a zero would hide a missing clear)
        await drain(ctx, 4, late_item=(5, 9))
        await drain(ctx, 0)
        await drain(ctx, 4)  # word 5 holds the late item only
        await put(ctx, [(rng.randrange(8), rng.randrange(-500, 501)) for _ in range(30)]
                  + [(a, 7 * a + 1) for a in range(8)])
        await drain(ctx, 2)
        await drain(ctx, 0)
        await drain(ctx, 4)
        done["tb"] = True

    simulate(dut, tb, _watchdog(5000, done, f"seed {seed}"))
    assert drains == [4, 0, 4, 2, 0, 4]


def _run_banked_outbox(dut, samples, T, stall, gap, seed):
    """``samples`` = [(bank, [(t, item payload), ...], end_bank), ...]: each word offered with its
    sample's ``bank`` and ``t``, both moved to other values right after the handshake (while the
    word's lanes are still going out); after the sample's last word the end pulse with
    ``end_bank`` (moved away right after), either at once (lanes still going out) or once idle.
    Returns every flit as (src, dst_lo, dst_hi, data bits), taken under random output stalls."""
    rng = random.Random(seed)
    got = []
    done = {"producer": False}

    async def producer(ctx):
        for bank, words, end_bank in samples:
            for t, item in words:
                ctx.set(dut.t, t)
                ctx.set(dut.bank, bank)
                await send(ctx, dut.items, item, rng, gap)
                ctx.set(dut.bank, 1 - bank)
                ctx.set(dut.t, (t + 1) % T)
            if rng.random() < 0.5:
                await ctx.tick().until(dut.idle)
            ctx.set(dut.bank, end_bank)
            ctx.set(dut.end, 1)
            await ctx.tick()
            ctx.set(dut.end, 0)
            ctx.set(dut.bank, 1 - end_bank)
        await ctx.tick().until(dut.idle)
        done["producer"] = True

    async def consumer(ctx):
        while True:
            ctx.set(dut.flits.ready, rng.random() >= stall)
            if ctx.get(dut.flits.valid) and ctx.get(dut.flits.ready):
                f = ctx.get(dut.flits.payload)
                got.append((int(f.src), int(f.dst_lo), int(f.dst_hi), int(f.data)))
            await ctx.tick()

    simulate(dut, producer, _watchdog(5000, done, f"outbox seed {seed}"), background=[consumer])
    return got


@pytest.mark.parametrize("P, stall", [(1, 0.0), (4, 0.4), (1, 0.2), (4, 0.2)])
@pytest.mark.parametrize("buffer", [0, 3])  # 3: a FIFO of words in front (the cores use one)
def test_error_outbox_stamps_each_flit_with_its_sample_bank(P, stall, buffer):
    from spikeforge.rtl.inbox import ErrorOutbox

    owners = _OWNERS[P]
    T, n_in, acc_bits, me, B = 3, 14, 30, 7, 2
    dut = ErrorOutbox(P, acc_bits, T, owners, me, banks=B, buffer=buffer)
    H = -(-n_in // P)
    g = torch.Generator().manual_seed(100 + P + int(10 * stall))
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    samples, want = [], []
    # the marker carries the bank of the end pulse, not of the last word: sample 2's end pulse
    # says the other bank, to tell the two latches apart
    for k in range(4):
        bank = [0, 1, 1, 0][k]  # also two samples of one bank in a row
        end_bank = 1 - bank if k == 2 else bank
        sums = torch.randint(-(1 << 28), 1 << 28, (T, H * P), generator=g)
        sums[torch.rand(sums.shape, generator=g) < (0.7 if P > 1 else 0.5)] = 0
        sums[:, n_in:] = 0
        samples.append((bank, [(t, {"group": h, "delta": [int(v) for v in sums[t, h * P:(h + 1) * P]]})
                               for t in range(T) for h in range(H)], end_bank))
        want += _outbox_want(code, owners, sums, T, n_in, P, me, bank=bank)
        want.append((me, 3, 6, code(end=1, t=0, group=0, values=[0] * P, bank=end_bank)))
    got = _run_banked_outbox(dut, samples, T, stall, 0.2, P)
    seeds = f"data {100 + P + int(10 * stall)}, timing {P}"
    decode = lambda bits: {f: dut.flit_data.from_bits(bits)[f] for f, _ in dut.flit_data}  # noqa: E731
    for j, (a, b) in enumerate(zip(got, want)):
        assert a == b, (f"P {P}, seeds {seeds}: flit {j}: got {a[:3]} {decode(a[3])}, want {b[:3]} {decode(b[3])}")
    assert len(got) == len(want), f"P {P}, seeds {seeds}: {len(got)} flits, want {len(want)}"


@pytest.mark.parametrize("P, stall", [(1, 0.3), (4, 0.0), (8, 0.5)])
@pytest.mark.parametrize("buffer", [0, 3])  # 3: a FIFO of words in front (the cores use one)
def test_spike_outbox_stamps_each_flit_with_its_sample_bank(P, stall, buffer):
    from spikeforge.rtl.inbox import SpikeOutbox

    T, layer_n, offset, n_slice, me, B = 3, 40, 11, 13, 2, 2
    G = -(-n_slice // P)
    dut = SpikeOutbox(P, T, layer_n, offset, G, (5, 9), me, banks=B, buffer=buffer)
    g = torch.Generator().manual_seed(200 + P)
    code = lambda **kw: dut.flit_data.const(kw).as_value().value  # noqa: E731
    samples, want = [], []
    for k in range(4):
        bank = [1, 0, 0, 1][k]
        end_bank = 1 - bank if k == 1 else bank  # as in the error outbox's test
        spikes = (torch.rand(T, G * P, generator=g) < 0.5).to(torch.int64)
        spikes[:, n_slice:] = 0
        samples.append((bank, [(t, {"group": h, "spikes": sum(int(spikes[t, h * P + i]) << i for i in range(P))})
                               for t in range(T) for h in range(G)], end_bank))
        want += [(me, 5, 9, code(end=0, t=t, neuron=offset + i, bank=bank))
                 for t in range(T) for i in range(n_slice) if spikes[t, i]]
        want.append((me, 5, 9, code(end=1, t=0, neuron=0, bank=end_bank)))
    got = _run_banked_outbox(dut, samples, T, stall, 0.3, P)
    seeds = f"data {200 + P}, timing {P}"
    decode = lambda bits: {f: dut.flit_data.from_bits(bits)[f] for f, _ in dut.flit_data}  # noqa: E731
    for j, (a, b) in enumerate(zip(got, want)):
        assert a == b, (f"P {P}, seeds {seeds}: flit {j}: got {a[:3]} {decode(a[3])}, want {b[:3]} {decode(b[3])}")
    assert len(got) == len(want), f"P {P}, seeds {seeds}: {len(got)} flits, want {len(want)}"
