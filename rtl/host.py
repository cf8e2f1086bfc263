"""Host interface: the command/response word streams of docs/host-protocol.md, in front of a core.

The interface frames commands, checks everything that can be checked from the header alone
(opcode, region, address range, length, write permission) against constants derived from the
config, asks the core about the rest (``chk_error``: state and argument checks), and only then
touches the core: a refused command has its payload drained and changes nothing but the sticky
error registers. One command is handled at a time and the core is idle whenever the interface
accesses its memories, because the interface itself waits for every run to finish.

Core side (all driven by this block unless marked In):

* ``acc_*`` -- element access: ``acc_region``, ``acc_row``, ``acc_col``; a one-cycle ``acc_wr``
  with ``acc_wdata``, or a one-cycle ``acc_rd`` whose data is on ``acc_rdata`` (In) exactly
  :data:`READ_LATENCY` cycles later;
* ``run`` (registered pulse) with ``run_train`` / ``run_spikes``; ``run_update`` (registered pulse); ``sample_set``
  (pulse, after SAMPLE's pixels, with ``label`` / ``seed``); ``clear_counters`` (pulse);
  ``core_idle`` (In) and ``prediction`` (In);
* ``chk_op`` / ``chk_region`` → ``chk_error`` (In, combinational): the core's own refusal;
* ``error_code`` / ``error_opcode`` / ``error_count``: the sticky registers, for STATUS reads.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .arith import one_hot_select
from .protocol import Error, Op, Region, RegionId

__all__ = ["HostInterface", "READ_LATENCY", "READ_GAP"]

# element reads: the core registers the access once more (region decode, addresses), its memories
# answer in one cycle (the weight and gradient SkewedMemories in three: their requests and bank
# outputs are registered), and the answer is assembled in two more registered steps into
# acc_rdata; one figure for every region
READ_LATENCY = 6
#: cycles from one element read to the next, at least: the issue, READ_LATENCY + 1 of waiting
#: (the access register), the send
READ_GAP = READ_LATENCY + 3


class HostInterface(wiring.Component):
    def __init__(self, regions: list[Region], n_inputs: int, n_outputs: int, wait_for_idle: bool = False):
        # wait_for_idle: take a command header only from an idle core (a core that is busy after
        # reset: the power-up clear of single-port gradient memories); otherwise the interface
        # only waits for the runs it starts itself, and the core is idle after reset
        self.wait_for_idle = bool(wait_for_idle)
        self.regions = list(regions)
        self.n_inputs, self.n_outputs = n_inputs, n_outputs
        if not any(r.id == RegionId.PIXELS for r in self.regions):
            raise ValueError("HostInterface: the region table has no PIXELS region")
        super().__init__(
            {
                "cmd": In(stream.Signature(32)),
                "rsp": Out(stream.Signature(32)),
                "acc_region": Out(8), "acc_row": Out(16), "acc_col": Out(16),
                "acc_rd": Out(1), "acc_wr": Out(1), "acc_wdata": Out(32), "acc_rdata": In(32),
                "run": Out(1), "run_train": Out(1), "run_spikes": Out(1), "run_update": Out(1),
                "sample_set": Out(1), "label": Out(max(1, ceil_log2(n_outputs))), "seed": Out(32), "clear_counters": Out(1),
                "core_idle": In(1), "prediction": In(8),
                "chk_op": Out(8), "chk_region": Out(8), "chk_error": In(8),
                "error_code": Out(8), "error_opcode": Out(8), "error_count": Out(16),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cmd, rsp = self.cmd, self.rsp
        op = Signal(8)
        region = Signal(8)
        count = Signal(16)
        row = Signal(16)
        col = Signal(16)
        left = Signal(16)  # payload words still to consume / data words still to send
        status = Signal(8)  # of the response being built
        rsp_count = Signal(16)
        sample_label = Signal.like(self.label)  # of the SAMPLE in flight (its seed stays in arg)
        data_word = Signal(32)
        wait = Signal(range(READ_LATENCY + 2))
        arg = Signal(32)
        bad_value = Signal()  # a WRITE word did not fit its region's elements: skipped
        m.d.comb += [self.chk_op.eq(op), self.chk_region.eq(region)]
        # every access leaves through registers (address, data, strobes together, one cycle after
        # the FSM decides): the path from a host word to a memory write is otherwise the longest
        # in the design (word → value check → region mux → bank write enable)
        acc_rd, acc_wr, sample_set = Signal(), Signal(), Signal()
        m.d.sync += [self.acc_region.eq(region), self.acc_row.eq(row), self.acc_col.eq(col),
                     self.acc_rd.eq(acc_rd), self.acc_wr.eq(acc_wr), self.sample_set.eq(sample_set)]

        # ---- header-only checks, against the region table -------------------------------------
        # region facts first, registered in CHECK, then the address arithmetic (start = row * cols
        # + col, MULTIPLY and START), then the limit compare (start + count > size). The
        # region is decoded into one-hot registers while the argument word arrives (ARGUMENT),
        # and the facts are selected by them: no region compare in front of the arithmetic.
        region_is = {r.id: Signal(name=f"region_is_{r.name}") for r in self.regions}
        known, writable = Signal(name="known"), Signal(name="writable")
        in_range, value_signed = Signal(name="in_range"), Signal(name="value_signed")
        last_col = Signal(16)
        # the address arithmetic is only as wide as the region table needs: row and col are
        # checked against the region's shape on their own (in_range), so start = row * cols + col
        # only has to be right when both are in range, and their low bits are enough for that
        row_bits = max(1, ceil_log2(max(r.rows for r in self.regions)))
        col_bits = max(1, ceil_log2(max(r.cols for r in self.regions)))
        start_max = max(((1 << row_bits) - 1) * r.cols + (1 << col_bits) - 1 for r in self.regions)
        size_max = max(r.size for r in self.regions)
        size = Signal(range(size_max + 1), name="size")
        cols = Signal(range(max(r.cols for r in self.regions) + 1), name="cols")
        # the WRITE word's range check against registered region facts (CHECK loads them): the
        # bits above the element's width must be all zero, or for a signed element all equal to
        # its sign bit; ``value_mask`` has those bits set (none for a 32-bit element)
        value_mask = Signal(32)

        def mask_of(r):
            kept = min(32, r.bits - 1 if r.signed else r.bits)
            return ((1 << 32) - 1) ^ ((1 << kept) - 1)

        # a Switch over the one-hot bits with don't-care patterns: each case tests one register
        onehot = Cat(*[region_is[r.id] for r in self.regions])
        with m.Switch(onehot):
            for i, r in enumerate(self.regions):
                with m.Case("".join("1" if j == i else "-" for j in reversed(range(len(self.regions))))):
                    m.d.comb += [known.eq(1), last_col.eq(r.cols - 1), cols.eq(r.cols), writable.eq(r.writable), size.eq(r.size),
                                 value_mask.eq(mask_of(r)), value_signed.eq(r.signed)]
        # the range check once per distinct shape, selected by an AND-OR of the one-hot bits
        shapes: dict[tuple[int, int], list[int]] = {}
        for r in self.regions:
            shapes.setdefault((r.rows, r.cols), []).append(r.id)
        # x < n for each region's n, as (x's bits above n's width are zero) & (a compare of the
        # low bits): the zero tests are shared by every region whose n has that width
        zero_above: dict[tuple[str, int], Signal] = {}

        def below(x, name, n):
            b = max(1, (n - 1).bit_length())
            if b >= len(x):
                return x < n
            if (name, b) not in zero_above:
                zero_above[name, b] = Signal(name=f"{name}_zero_above_{b}")
                m.d.comb += zero_above[name, b].eq(x[b:] == 0)
            return zero_above[name, b] if n == 1 << b else zero_above[name, b] & (x[:b] < n)

        m.d.comb += [
            in_range.eq(one_hot_select((Cat(*[region_is[i] for i in ids]).any(), below(row, "row", rows) & below(col, "col", cols))
                                       for (rows, cols), ids in shapes.items())),
        ]
        known_q, writable_q, in_range_q = Signal(), Signal(), Signal()
        start_q, size_q = Signal(range(start_max + 1), name="start_q"), Signal.like(size)
        # start = row * cols + col, row * cols shifted and added one row bit per cycle (MULTIPLY):
        # a header is rare, one multiplier per region shape is not
        cols_q = Signal.like(cols)
        product = Signal(range(start_max + 1), name="row_times_cols")
        mul_row = Signal(row_bits, name="mul_row")  # row's bits not yet taken, the next one on top
        mul_steps = Signal(range(row_bits + 1), name="mul_steps")
        value_mask_q, value_signed_q = Signal(32), Signal()
        value_ok = Signal()  # the WRITE word on cmd.payload fits the region's element format
        high = Signal(32)
        m.d.comb += [high.eq(cmd.payload & value_mask_q),
                     value_ok.eq((high == 0) | (value_signed_q & (high == value_mask_q)))]
        check = Signal(8)
        check_q = Signal(8)
        with m.Switch(op):
            with m.Case(Op.WRITE, Op.READ):
                with m.If(~known_q):
                    m.d.comb += check.eq(Error.BAD_REGION)
                with m.Elif(~in_range_q | (start_q + count > size_q)):
                    m.d.comb += check.eq(Error.BAD_ADDRESS)
                with m.Elif((op == Op.WRITE) & ~writable_q):
                    m.d.comb += check.eq(Error.READ_ONLY)
                with m.Else():
                    m.d.comb += check.eq(self.chk_error)
            with m.Case(Op.SAMPLE):
                with m.If(count != self.n_inputs):
                    m.d.comb += check.eq(Error.BAD_LENGTH)
                with m.Elif(region >= self.n_outputs):  # the label travels in the region field
                    m.d.comb += check.eq(Error.BAD_ARG)
                with m.Else():
                    m.d.comb += check.eq(self.chk_error)
            with m.Case(Op.NOP, Op.INFER, Op.TRAIN, Op.UPDATE, Op.CLEAR_ERROR, Op.CLEAR_COUNTERS):
                with m.If(count != 0):
                    m.d.comb += check.eq(Error.BAD_LENGTH)
                with m.Else():
                    m.d.comb += check.eq(self.chk_error)
            with m.Default():
                m.d.comb += check.eq(Error.BAD_OPCODE)

        last_col_q = Signal(16)  # the region's last column, registered in CHECK: the address walk's wrap
        at_last_col = Signal()  # col == last_col_q, kept as a register along the walk

        def advance():
            with m.If(at_last_col):
                m.d.sync += [col.eq(0), row.eq(row + 1), at_last_col.eq(last_col_q == 0)]
            with m.Else():
                m.d.sync += [col.eq(col + 1), at_last_col.eq(col + 1 == last_col_q)]

        def record(code):
            # first error wins; the count saturates
            with m.If(self.error_code == 0):
                m.d.sync += [self.error_code.eq(code), self.error_opcode.eq(op)]
            with m.If(self.error_count != 0xFFFF):
                m.d.sync += self.error_count.eq(self.error_count + 1)

        def respond(code, n=0):
            m.d.sync += [status.eq(code), rsp_count.eq(n)]
            m.next = "RESPOND"

        core_idle_q = Signal(name="core_idle_q") if self.wait_for_idle else Const(1)
        if self.wait_for_idle:
            m.d.sync += core_idle_q.eq(self.core_idle)
        m.d.sync += [self.run.eq(0), self.run_update.eq(0)]  # one-cycle pulses unless set below
        pixels = next(r for r in self.regions if r.id == RegionId.PIXELS)
        with m.FSM():
            with m.State("HEADER"):
                # with wait_for_idle a command starts only on an idle core (registered: the core's
                # state decode stays off the command stream's ready path)
                m.d.comb += cmd.ready.eq(core_idle_q)
                with m.If(cmd.valid & core_idle_q):
                    m.d.sync += [op.eq(cmd.payload[24:32]), region.eq(cmd.payload[16:24]),
                                 count.eq(cmd.payload[0:16])]
                    m.next = "ARGUMENT"
            with m.State("ARGUMENT"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += [row.eq(cmd.payload[16:32]), col.eq(cmd.payload[0:16]), arg.eq(cmd.payload)]
                    m.d.sync += [is_r.eq(region == rid) for rid, is_r in region_is.items()]
                    m.next = "CHECK"
            with m.State("CHECK"):
                # the header checks get two cycles: region facts, then limits and core state
                m.d.sync += [known_q.eq(known), writable_q.eq(writable), in_range_q.eq(in_range),
                             size_q.eq(size), last_col_q.eq(last_col), cols_q.eq(cols),
                             value_mask_q.eq(value_mask), value_signed_q.eq(value_signed),
                             product.eq(0), mul_row.eq(row[:row_bits]), mul_steps.eq(row_bits)]
                m.next = "MULTIPLY"
            with m.State("MULTIPLY"):
                m.d.sync += [product.eq((product << 1) + Mux(mul_row[-1], cols_q, 0)), mul_row.eq(mul_row << 1),
                             mul_steps.eq(mul_steps - 1)]
                with m.If(mul_steps == 1):
                    m.next = "START"
            with m.State("START"):
                m.d.sync += start_q.eq(product + col[:col_bits])
                m.next = "CHECK_LIMITS"
            with m.State("CHECK_LIMITS"):
                m.d.sync += [check_q.eq(check), left.eq(count), bad_value.eq(0), at_last_col.eq(col == last_col_q)]
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(check_q != Error.OK):
                    record(check_q)
                    m.d.sync += [status.eq(check_q), rsp_count.eq(0)]  # a refusal carries no data
                    with m.If((op != Op.READ) & (count != 0)):
                        m.next = "DRAIN"
                    with m.Else():
                        respond(check_q)
                with m.Else():
                    with m.Switch(op):
                        with m.Case(Op.WRITE):
                            with m.If(count == 0):
                                respond(Error.OK)
                            with m.Else():
                                m.next = "WRITE"
                        with m.Case(Op.SAMPLE):
                            # label and seed take effect only with a complete, valid SAMPLE
                            m.d.sync += [sample_label.eq(region), region.eq(RegionId.PIXELS),
                                         row.eq(0), col.eq(0), last_col_q.eq(pixels.cols - 1), at_last_col.eq(pixels.cols == 1),
                                         value_mask_q.eq(mask_of(pixels)), value_signed_q.eq(pixels.signed)]
                            m.next = "WRITE"
                        with m.Case(Op.READ):
                            m.d.sync += [status.eq(Error.OK), rsp_count.eq(count)]
                            m.next = "READ_HEADER"
                        with m.Case(Op.INFER, Op.TRAIN):
                            m.d.sync += [self.run.eq(1), self.run_train.eq(op == Op.TRAIN),
                                         self.run_spikes.eq(region[0])]
                            m.next = "RUNNING"
                        with m.Case(Op.UPDATE):
                            m.d.sync += self.run_update.eq(1)
                            m.next = "UPDATING"
                        with m.Case(Op.CLEAR_ERROR):
                            m.d.sync += [self.error_code.eq(0), self.error_opcode.eq(0), self.error_count.eq(0)]
                            respond(Error.OK)
                        with m.Case(Op.CLEAR_COUNTERS):
                            m.d.comb += self.clear_counters.eq(1)
                            respond(Error.OK)
                        with m.Default():  # NOP
                            respond(Error.OK)
            with m.State("DRAIN"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "RESPOND"
            with m.State("WRITE"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.comb += acc_wr.eq(value_ok)
                    m.d.sync += self.acc_wdata.eq(cmd.payload)
                    with m.If(~value_ok):
                        m.d.sync += bad_value.eq(1)
                    m.d.sync += left.eq(left - 1)
                    advance()
                    with m.If(left == 1):
                        m.next = "WRITE_DONE"
            with m.State("WRITE_DONE"):
                # the last word's check is in bad_value now (a register, not the word's compare)
                with m.If(bad_value):
                    # a refused word is recorded once per command, like any other error
                    record(Error.BAD_ARG)
                    respond(Error.BAD_ARG)
                with m.Else():
                    with m.If(op == Op.SAMPLE):
                        m.d.comb += sample_set.eq(1)  # lands after the last pixel
                        m.d.sync += [self.label.eq(sample_label), self.seed.eq(arg)]  # arg: untouched since ARGUMENT
                    respond(Error.OK)
            with m.State("RUNNING"):
                # run is a registered pulse: the core sees it in this state's first cycle and drops
                # core_idle in the next; wait for it to come back
                with m.If(self.core_idle & ~self.run):
                    m.d.sync += data_word.eq(self.prediction)
                    respond(Error.OK, 1)
            with m.State("UPDATING"):
                with m.If(self.core_idle & ~self.run_update):
                    respond(Error.OK)
            with m.State("RESPOND"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq((status << 24) | (op << 16) | rsp_count)]
                with m.If(rsp.ready):
                    m.d.sync += left.eq(rsp_count)
                    with m.If(rsp_count != 0):
                        m.next = "SEND"
                    with m.Else():
                        m.next = "HEADER"
            with m.State("SEND"):  # the one data word of INFER/TRAIN
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(data_word)]
                with m.If(rsp.ready):
                    m.next = "HEADER"
            with m.State("READ_HEADER"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq((Error.OK << 24) | (op << 16) | rsp_count)]
                with m.If(rsp.ready):
                    with m.If(count == 0):
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "READ_ISSUE"
            with m.State("READ_ISSUE"):
                m.d.comb += acc_rd.eq(1)
                m.d.sync += wait.eq(READ_LATENCY + 1)  # + the access register
                m.next = "READ_WAIT"
            with m.State("READ_WAIT"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 1):
                    m.d.sync += data_word.eq(self.acc_rdata)
                    m.next = "READ_SEND"
            with m.State("READ_SEND"):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(data_word)]
                with m.If(rsp.ready):
                    m.d.sync += left.eq(left - 1)
                    advance()
                    with m.If(left == 1):
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "READ_ISSUE"
        return m
