"""Host protocol (docs/host-protocol.md) on the Top in Amaranth's simulator: every command class,
and every kind of bad command -- refused with its error code, recorded in the sticky registers,
payload drained, stored weights untouched, and the core still answering and training exactly."""

import random

import pytest
import torch

from spikeforge.golden import GoldenBackend, model
from spikeforge.golden.backend import update_seed
from spikeforge.rtl.protocol import COUNTERS, MAGIC, Error, Op, RegionId, command, info_words, regions
from spikeforge.rtl.top import Top
from spikeforge.sim.amaranth_host import run_client
from spikeforge.sim.driver import Client, HostError
from spikeforge.sim.scenario import small_cfg


CFG = small_cfg()
L = CFG.network.layers


def raw(c: Client, words):
    """Send raw words; return (status, data)."""
    from spikeforge.rtl.protocol import split_response

    rsp = c.t.transact(words)
    status, _, n = split_response(rsp[0])
    assert len(rsp) == 1 + n
    return status, rsp[1:]


def with_core(fn, seed=0, gap=0.3, stall=0.3):
    top = Top(CFG)
    return run_client(top, lambda t: fn(Client(t, CFG)), seed=seed, gap=gap, stall=stall)


def loaded(c: Client):
    w = model.init_weights(CFG)
    c.load_weights(w)
    return w


def test_info_config_status_counters():
    def job(c):
        info = c.info()
        assert info == info_words(CFG) and info[0] == MAGIC
        assert c.get_config() == {"lr_shift": CFG.training.lr_shift, "update_lfsr_state": update_seed(CFG)}
        c.set_config(lr_shift=5, update_lfsr_state=0xDEADBEEF)
        assert c.get_config() == {"lr_shift": 5, "update_lfsr_state": 0xDEADBEEF}
        c.set_config(update_lfsr_state=0)  # the lock-up state is never loaded: 0 loads 1, as golden
        assert c.get_config()["update_lfsr_state"] == 1
        st = c.status()
        assert st["error_code"] == 0 and st["batch_samples"] == 0 and st["flags"] == 0
        c.clear_counters()
        cnt = c.counters()
        assert set(cnt) == set(COUNTERS) and 0 < cnt["cycles"] < 200
        assert all(v == 0 for k, v in cnt.items() if k != "cycles")
    with_core(job)


def test_memories_read_back_what_was_written():
    def job(c):
        w = loaded(c)
        assert all(torch.equal(a, b) for a, b in zip(c.weights(), w))
        c.write(RegionId.WEIGHTS + 1, [-128, 127], row=2, col=4)  # runs over the row end
        assert c.read(RegionId.WEIGHTS + 1, 2, row=2, col=4) == [-128, 127]
        px = list(range(L[0]))
        c.sample(px, 2, 99)
        assert c.read(RegionId.PIXELS) == px
        x = (torch.rand(CFG.network.timesteps, L[0], generator=torch.Generator().manual_seed(1)) < 0.5).long()
        c.write_spikes(x)
        assert torch.equal(c.matrix(RegionId.SPIKES), x)
        assert c.status()["flags"] == 3
    with_core(job)


def test_write_values_at_the_edges_of_every_writable_region():
    """Each writable region takes exactly its element range: the extremes are stored, one past
    either end is refused (BAD_ARG) and leaves the element as it was. Words are 32-bit two's
    complement on the wire, so a negative value is checked through its upper bits."""
    writable = [r for r in regions(CFG) if r.writable and r.bits < 32]  # CONFIG: every word, own checks
    assert {r.name for r in writable} == {"pixels", "weights0", "weights1", "spikes0"}

    def job(c):
        loaded(c)
        for r in writable:
            lo, hi = (-(1 << (r.bits - 1)), (1 << (r.bits - 1)) - 1) if r.signed else (0, (1 << r.bits) - 1)
            c.write(r.id, [lo, hi])
            assert c.read(r.id, 2) == [lo, hi], r.name
            for bad in (lo - 1, hi + 1):
                status, _ = raw(c, command(Op.WRITE, r.id, 1, 0, [bad & 0xFFFFFFFF]))
                assert status == Error.BAD_ARG, (r.name, bad)
                c.clear_error()
            assert c.read(r.id, 2) == [lo, hi], r.name
    with_core(job)


BAD = [
    # (description, words, expected error)
    ("unknown opcode, payload drained", command(0x7E, 0, 3, 0, [1, 2, 3]), Error.BAD_OPCODE),
    ("unknown region", command(Op.READ, 0x99, 1, 0), Error.BAD_REGION),
    ("write to unknown region", command(Op.WRITE, 0x3F, 2, 0, [5, 5]), Error.BAD_REGION),
    ("row out of range", command(Op.READ, RegionId.WEIGHTS, 1, (L[1] << 16) | 0), Error.BAD_ADDRESS),
    ("column out of range", command(Op.WRITE, RegionId.WEIGHTS, 1, (0 << 16) | L[0], [1]), Error.BAD_ADDRESS),
    ("access runs past the end", command(Op.WRITE, RegionId.WEIGHTS + 1, 3, ((L[2] - 1) << 16) | (L[1] - 2), [1, 1, 1]),
     Error.BAD_ADDRESS),
    ("read past the end", command(Op.READ, RegionId.INFO, len(info_words(CFG)) + 1, 0), Error.BAD_ADDRESS),
    ("SAMPLE with too few pixels", command(Op.SAMPLE, 0, L[0] - 1, 0, [0] * (L[0] - 1)), Error.BAD_LENGTH),
    ("INFER with a payload", command(Op.INFER, 0, 2, 0, [7, 7]), Error.BAD_LENGTH),
    ("NOP with a payload", command(Op.NOP, 0, 1, 0, [0]), Error.BAD_LENGTH),
    ("write to INFO", command(Op.WRITE, RegionId.INFO, 1, 0, [0]), Error.READ_ONLY),
    ("write to COUNTERS", command(Op.WRITE, RegionId.COUNTERS, 1, 0, [0]), Error.READ_ONLY),
    ("write to GRADIENTS", command(Op.WRITE, RegionId.GRADIENTS, 1, 0, [0]), Error.READ_ONLY),
    ("write to hidden spikes", command(Op.WRITE, RegionId.SPIKES + 1, 1, 0, [1]), Error.READ_ONLY),
    ("INFER before any sample", command(Op.INFER), Error.WRONG_STATE),
    ("INFER on spikes never written", command(Op.INFER, 1), Error.WRONG_STATE),
    ("UPDATE with nothing accumulated", command(Op.UPDATE), Error.WRONG_STATE),
    ("SAMPLE label out of range", command(Op.SAMPLE, L[-1], L[0], 0, [0] * L[0]), Error.BAD_ARG),
    ("INFER with unknown flags", command(Op.INFER, 0x6), Error.BAD_ARG),
    ("weight value out of range", command(Op.WRITE, RegionId.WEIGHTS, 1, 0, [200]), Error.BAD_ARG),
    ("pixel value out of range", command(Op.WRITE, RegionId.PIXELS, 1, 0, [256]), Error.BAD_ARG),
    ("SAMPLE with a pixel out of range", command(Op.SAMPLE, 1, L[0], 7, [3] * (L[0] - 1) + [256]), Error.BAD_ARG),
]


@pytest.mark.parametrize("bad_at", [0, L[0] - 1])
def test_refused_sample_leaves_no_sample_to_run(bad_at):
    """A SAMPLE refused for one bad pixel must not leave the previous sample runnable with new
    pixels, label or seed mixed in: the sample flag drops and INFER/TRAIN are refused."""
    def job(c):
        loaded(c)
        c.sample([100] * L[0], 1, 5)
        assert c.status()["flags"] == 1
        pixels = [3] * L[0]
        pixels[bad_at] = 1 << CFG.formats.pixel_bits
        status, data = raw(c, command(Op.SAMPLE, 2, L[0], 9, pixels))
        assert (status, data) == (Error.BAD_ARG, [])
        assert c.status()["flags"] == 0
        for op in (Op.INFER, Op.TRAIN):
            assert raw(c, command(op))[0] == Error.WRONG_STATE
        c.clear_error()
        c.sample([100] * L[0], 1, 5)  # a complete SAMPLE makes it runnable again
        c.infer()
    with_core(job, seed=bad_at)


@pytest.mark.parametrize("case", range(len(BAD)), ids=[b[0] for b in BAD])
def test_bad_command_is_refused_and_harmless(case):
    what, words, code = BAD[case]

    def job(c):
        w = loaded(c)
        c.info()  # a multi-word answer just before: the refusal must not reuse its word count
        status, data = raw(c, words)
        assert status == code, f"{what}: status {status} != {code.name}"
        assert data == []
        st = c.status()
        assert (st["error_code"], st["error_opcode"], st["error_count"]) == (code, words[0] >> 24, 1)
        assert all(torch.equal(a, b) for a, b in zip(c.weights(), w)), f"{what} changed the weights"
        assert st["flags"] == 0, f"{what} changed the sample state"
        c.call(Op.NOP)  # still in step and answering
        c.clear_error()
        assert c.status()["error_code"] == 0
    with_core(job, seed=case)


def test_wrong_state_while_a_batch_is_pending():
    def job(c):
        loaded(c)
        c.sample([100] * L[0], 1, 5)
        c.train()
        c.train()  # batch_size 2: the gradient memory is full
        with pytest.raises(HostError, match="WRONG_STATE"):
            c.train()
        with pytest.raises(HostError, match="WRONG_STATE"):
            c.write(RegionId.WEIGHTS, [0])
        c.set_config(lr_shift=40)  # not among the shifts the hardware was built for
        with pytest.raises(HostError, match="BAD_ARG"):
            c.update()
        st = c.status()
        assert (st["error_code"], st["error_count"], st["batch_samples"]) == (Error.WRONG_STATE, 3, 2)
        c.set_config(lr_shift=CFG.training.lr_shift)
        c.update()
        assert c.status()["batch_samples"] == 0
    with_core(job)


def test_random_bad_commands_never_corrupt_and_training_stays_exact():
    """A stream of refused commands of every kind between the steps of a real mini-batch: the
    core trains to exactly the golden weights anyway."""
    rng = random.Random(7)
    gold = GoldenBackend(CFG)
    pixels = torch.randint(0, 256, (2, L[0]), generator=torch.Generator().manual_seed(3))
    seeds, labels = torch.tensor([11, 12]), torch.tensor([0, 2])
    w0 = [w.clone() for w in gold.weights]
    gold.train_batch(pixels, seeds, labels)
    bad = [b for b in BAD if b[2] != Error.WRONG_STATE]

    def job(c):
        c.load_weights(w0)
        c.set_config(update_lfsr_state=update_seed(CFG))
        refused = 0
        for b in range(2):
            for _ in range(rng.randint(1, 4)):
                what, words, code = rng.choice(bad)
                assert raw(c, words)[0] == code, what
                refused += 1
            c.sample(pixels[b].tolist(), int(labels[b]), int(seeds[b]))
            c.train()
        c.update()
        assert c.status()["error_count"] == refused
        return c.weights()

    got = with_core(job, seed=11)
    for l, (a, b) in enumerate(zip(got, gold.weights)):
        assert torch.equal(a, b), f"layer {l}: weights differ from golden after refused commands"


def test_region_table_is_consistent():
    ids = [r.id for r in regions(CFG)]
    assert len(ids) == len(set(ids)) and all(0 <= i < 256 for i in ids)
    assert {r.name for r in regions(CFG) if r.writable} == {"config", "pixels", "weights0", "weights1", "spikes0"}
