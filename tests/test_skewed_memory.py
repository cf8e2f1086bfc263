"""SkewedMemory: row and column accesses of P elements per cycle return/modify exactly the matrix."""

import random

import pytest

from spikeforge.rtl.skewed_memory import POISON, READ_LATENCY, SkewedMemory
from spikeforge.sim.amaranth_bench import simulate


def issue_random_read(ctx, dut, rng, mat, n_out, n_in, layer=None):
    """Drive a read of a random row or column group (of ``layer``, in a layered memory); return
    the word it must give, in lanes (elements past the matrix edge, never in ``mat``, read 0)."""
    lanes = dut.lanes
    row = rng.random() < 0.5
    major = rng.randrange(n_out if row else n_in)
    group = rng.randrange(-(-(n_in if row else n_out) // lanes))
    if layer is not None:
        ctx.set(dut.rd_layer, layer)
    ctx.set(dut.rd_en, 1)
    ctx.set(dut.rd_row, row)
    ctx.set(dut.rd_major, major)
    ctx.set(dut.rd_group, group)
    if row:
        return [mat.get((major, group * lanes + k), 0) for k in range(lanes)]
    return [mat.get((group * lanes + k, major), 0) for k in range(lanes)]



async def random_masked_write(ctx, dut, rng, mat, rows, cols, layer=None):
    """A masked write of random values to a random row or column group (of ``layer``, in a
    layered memory), recorded in ``mat`` ({(j, i): value}) for the elements it reaches."""
    lanes = dut.lanes
    wrow = rng.random() < 0.5
    wmajor = rng.randrange(rows if wrow else cols)
    wgroup = rng.randrange(-(-(cols if wrow else rows) // lanes))
    vals = [rng.randint(-128, 127) for _ in range(lanes)]
    mask = rng.randrange(1 << lanes)
    ctx.set(dut.wr_en, 1)
    if layer is not None:
        ctx.set(dut.wr_layer, layer)
    ctx.set(dut.wr_row, wrow)
    ctx.set(dut.wr_major, wmajor)
    ctx.set(dut.wr_group, wgroup)
    # writes are in bank order: lane k goes to bank (k + major) mod P
    ctx.set(dut.wr_mask, sum(((mask >> k) & 1) << ((k + wmajor) % lanes) for k in range(lanes)))
    for k in range(lanes):
        ctx.set(dut.wr_data[(k + wmajor) % lanes], vals[k])
    await ctx.tick()
    ctx.set(dut.wr_en, 0)
    for k in range(lanes):
        key = (wmajor, wgroup * lanes + k) if wrow else (wgroup * lanes + k, wmajor)
        if (mask >> k) & 1 and key[0] < rows and key[1] < cols:
            mat[key] = vals[k]

@pytest.mark.parametrize("write_latency, single_port", [(0, False), (1, False), (2, False), (0, True), (1, True),
                                                        (2, True)])
@pytest.mark.parametrize("lanes, n_out, n_in", [(1, 3, 4), (2, 5, 3), (4, 10, 7), (8, 16, 64), (4, 3, 9)])
def test_row_and_column_reads_and_writes(lanes, n_out, n_in, write_latency, single_port):
    """Random reads in either direction, each followed by a masked write in either direction;
    the read issued write_latency cycles after a write (the next cycle for 0 and 1) sees it; a
    single-port memory behaves the same when reads and writes stay apart."""
    rng = random.Random(lanes * 1000 + n_out * 10 + n_in + write_latency)
    width = 8
    mat = {(j, i): rng.randint(-128, 127) for j in range(n_out) for i in range(n_in)}
    dut = SkewedMemory(lanes=lanes, width=width, max_outputs=n_out, max_inputs=n_in, init=mat,
                       write_latency=write_latency, single_port=single_port)

    async def bench(ctx):
        for step in range(300):
            expected = issue_random_read(ctx, dut, rng, mat, n_out, n_in)
            await ctx.tick()
            ctx.set(dut.rd_en, 0)
            for _ in range(READ_LATENCY - 1):
                await ctx.tick()
            got = [ctx.get(dut.rd_data[k]) for k in range(lanes)]
            assert got == expected, (step, got, expected)
            # read data holds while rd_en is low
            await ctx.tick()
            assert [ctx.get(dut.rd_data[k]) for k in range(lanes)] == got
            # a masked write in a random direction
            await random_masked_write(ctx, dut, rng, mat, n_out, n_in)
            for _ in range(write_latency - 1):
                await ctx.tick()
        if single_port:
            assert ctx.get(dut.rw_conflict) == 0

    simulate(dut, bench)


def test_single_port_collision_is_flagged():
    """A read whose block RAM cycle meets a landing write sets the sticky rw_conflict (a write one
    cycle earlier does not); without init the memory holds the poison pattern, not zeros."""
    dut = SkewedMemory(lanes=2, width=8, max_outputs=4, max_inputs=4, single_port=True)
    poison = POISON & 0xFF
    poison = poison - 256 if poison >= 128 else poison

    async def bench(ctx):
        ctx.set(dut.rd_en, 1)  # column read of (0..1, 0): the poison, no write near
        await ctx.tick()
        ctx.set(dut.rd_en, 0)
        for _ in range(READ_LATENCY - 1):
            await ctx.tick()
        assert [ctx.get(dut.rd_data[k]) for k in range(2)] == [poison, poison]
        assert ctx.get(dut.rw_conflict) == 0
        # a write and a read offered together: the write lands in the read's block RAM cycle
        ctx.set(dut.wr_en, 1)
        ctx.set(dut.wr_mask, 0b11)
        ctx.set(dut.wr_data[0], 7)
        ctx.set(dut.wr_data[1], 7)
        await ctx.tick()
        ctx.set(dut.wr_en, 0)
        ctx.set(dut.rd_en, 1)
        ctx.set(dut.rd_major, 1)  # another word, (0..1, 1)
        await ctx.tick()
        ctx.set(dut.rd_en, 0)
        # wr landed in cycle 1 (write_latency 0), the read's RAM cycle is cycle 2: no collision
        for _ in range(READ_LATENCY - 1):
            await ctx.tick()
        assert ctx.get(dut.rw_conflict) == 0
        ctx.set(dut.rd_en, 1)
        ctx.set(dut.rd_major, 1)
        await ctx.tick()
        ctx.set(dut.rd_en, 0)
        ctx.set(dut.wr_en, 1)  # lands in the cycle the read uses the RAM
        await ctx.tick()
        ctx.set(dut.wr_en, 0)
        await ctx.tick()
        assert ctx.get(dut.rw_conflict) == 1

    simulate(dut, bench)


@pytest.mark.parametrize("lanes, n_out, n_in", [(1, 3, 4), (4, 10, 7), (8, 16, 64)])
def test_back_to_back_reads_arrive_in_order(lanes, n_out, n_in):
    """Reads issued in consecutive cycles (with random idle cycles between bursts) each arrive
    READ_LATENCY cycles later, in either direction, and the last one holds through idle cycles."""
    rng = random.Random(lanes * 7 + n_out + n_in)
    mat = {(j, i): rng.randint(-128, 127) for j in range(n_out) for i in range(n_in)}
    dut = SkewedMemory(lanes=lanes, width=8, max_outputs=n_out, max_inputs=n_in, init=mat)

    async def bench(ctx):
        issued = []  # per cycle: the expected word of the read issued then, or None
        held = None
        for cycle in range(400):
            if rng.random() < 0.7:
                issued.append(issue_random_read(ctx, dut, rng, mat, n_out, n_in))
            else:
                ctx.set(dut.rd_en, 0)
                issued.append(None)
            await ctx.tick()
            if len(issued) >= READ_LATENCY:
                due = issued[-READ_LATENCY]
                held = due if due is not None else held
                if held is not None:
                    got = [ctx.get(dut.rd_data[k]) for k in range(lanes)]
                    assert got == held, (cycle, got, held)

    simulate(dut, bench)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="lanes"):
        SkewedMemory(lanes=0, width=8, max_outputs=4, max_inputs=4)
    with pytest.raises(ValueError, match="power of two"):
        SkewedMemory(lanes=3, width=8, max_outputs=4, max_inputs=4)
    with pytest.raises(ValueError, match="write_latency"):
        SkewedMemory(lanes=2, width=8, max_outputs=4, max_inputs=4, write_latency=3)


@pytest.mark.parametrize("single_port", [False, True])
@pytest.mark.parametrize("lanes, layers", [(1, [(5, 3), (2, 7), (4, 4)]), (2, [(3, 5), (4, 2)]),
                                          (4, [(10, 7), (3, 9), (1, 1)]), (8, [(16, 8), (8, 16)])])
def test_layered_matrices_stay_apart(lanes, layers, single_port):
    """A layered memory keeps several matrices, each with its own shape: random masked writes and
    reads in either direction, each to a random layer, read back what that layer holds; writes
    never leak into another layer, and elements past a layer's edge read as 0."""
    rng = random.Random(lanes * 31 + len(layers))
    n_out, n_in = max(r for r, _ in layers), max(c for _, c in layers)
    dut = SkewedMemory(lanes=lanes, width=8, max_outputs=n_out, max_inputs=n_in, layers=layers,
                       write_latency=1, single_port=single_port)
    mats = [{} for _ in layers]  # unwritten elements: 0 (dual port) / never read (single port)

    async def bench(ctx):
        # single-port memories start poisoned: write every element of every layer first
        for l, (rows, cols) in enumerate(layers):
            ctx.set(dut.wr_layer, l)
            for j in range(rows):
                for h in range(-(-cols // lanes)):
                    ctx.set(dut.wr_en, 1)
                    ctx.set(dut.wr_row, 1)
                    ctx.set(dut.wr_major, j)
                    ctx.set(dut.wr_group, h)
                    ctx.set(dut.wr_mask, (1 << lanes) - 1)
                    for b in range(lanes):
                        ctx.set(dut.wr_data[b], 0)
                    await ctx.tick()
        ctx.set(dut.wr_en, 0)
        await ctx.tick()
        for step in range(250):
            l = rng.randrange(len(layers))
            want = issue_random_read(ctx, dut, rng, mats[l], *layers[l], layer=l)
            await ctx.tick()
            ctx.set(dut.rd_en, 0)
            for _ in range(READ_LATENCY - 1):
                await ctx.tick()
            assert [ctx.get(dut.rd_data[k]) for k in range(lanes)] == want, (step, l)
            l = rng.randrange(len(layers))
            await random_masked_write(ctx, dut, rng, mats[l], *layers[l], layer=l)
        if single_port:
            assert ctx.get(dut.rw_conflict) == 0

    simulate(dut, bench)


def test_layered_memory_is_as_deep_as_its_layers():
    dut = SkewedMemory(lanes=1, width=32, max_outputs=128, max_inputs=128, layers=[(128, 64), (10, 128)])
    assert dut.depth == 128 * 64 + 10 * 128  # the digits gradients: 9,472 words, not 128 x 128
    dut._MustUse__silence = True  # only its geometry is looked at here
    with pytest.raises(ValueError, match="layers"):
        SkewedMemory(lanes=1, width=8, max_outputs=4, max_inputs=4, layers=[(5, 4)])
