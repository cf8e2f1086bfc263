"""The host side of the multi-core accelerator (rtl/multicore.py ``MultiCoreTop``).

Each core has its own host port and regions (docs/host-protocol.md) for the network of what it
holds (one slice, whole consecutive layers, or the end of one layer and the start of the next);
:class:`MultiCoreRtlBackend` is the training driver's backend over all of them:

- weights are loaded and read per core (the rows of its slices) and gathered per layer;
- per sample, SAMPLE goes to the first layer's cores (pixels, seed) and to the output layer's
  core (the label), then TRAIN/INFER goes to *every* core at once -- the cores wait for each other
  over the interconnect, so the commands must be outstanding together (``transact_all``), and
  the next sample starts when every core has answered (one sample in flight);
- with ``hardware.sample_buffers`` > 1, training pipelines instead: each core gets its own
  stream of commands (``transact_streams``), TRAIN split into RUN_FORWARD and RUN_BACKWARD halves
  in the order :func:`pipeline_order` gives its pipeline stage, and the streams run concurrently;
  the cores wait for each other's spikes and errors over the interconnect;
- per batch, each core gets its jumped update-LFSR state (docs/arithmetic.md §7.1: the one-core
  stream's state at the core's first weight), then UPDATE.

``transact_all(jobs)`` takes ``[(transport, words), ...]`` and returns each command's response,
the commands running concurrently (cocotb: one task per core, sim/tb/tb_multicore.py).

:class:`LockstepBackend` runs a second backend (the golden multi-core model) beside it and stops
at the first sample whose prediction, or the first core whose weights after an update, differ.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import lfsr, model
from spikeforge.golden.backend import update_seed
from spikeforge.mapper import Placement
from spikeforge.rtl.protocol import RUN_BACKWARD, RUN_FORWARD, Op, RegionId, command

from .driver import Client

__all__ = ["MultiCoreRtlBackend", "LockstepBackend", "slice_lfsr_states", "pipeline_order", "one_forward_one_backward",
           "check_pipeline_order", "check_placement_order"]

TransactAll = Callable[[list[tuple[object, list[int]]]], list[list[int]]]
TransactStreams = Callable[[list[tuple[object, list[list[int]]]]], list[list[list[int]]]]


def pipeline_order(stage: int, stages: int, samples: int, buffers: int, lag: bool = False) -> list[tuple[str, int | None]]:
    """The halves a core of pipeline ``stage`` (0 = the first layer's cores) runs for a batch of
    ``samples``, in order: ("F", s) forward, ("B", s) backward (one-forward-one-backward).

    Stage k first runs the forward passes of ``min(buffers, stages - k)`` samples (the output
    stage one: its backward pass follows at once), then alternates: the backward pass of the oldest
    sample, the forward pass of the next. A sample's backward pass on stage k needs the stage above
    to have run it, which needs this stage's forward pass of that sample; with the warm-up not
    growing from one stage to the next, no stage ever waits for a pass that waits for it
    (:func:`check_pipeline_order` replays the dependencies). The core holds at most the warm-up's
    samples in flight, never more than ``buffers``.

    A lagging core (``lag``: rtl/slice_role.py ``lagging_cores``) runs its first slice's backward
    pass a sample behind: its ("B", s) is the second slice's pass of s and the first slice's of
    s - 1, it holds one sample more (its warm-up is at most ``buffers`` - 1), and a last ("B",
    None) after the batch runs the first slice's pass of the last sample."""
    warm = max(1, min(buffers - (1 if lag else 0), stages - stage, samples))
    order: list[tuple[str, int | None]] = list(one_forward_one_backward(warm, samples))
    if lag:
        order.append(("B", None))
    return order


def one_forward_one_backward(warm: int, samples: int) -> list[tuple[str, int]]:
    """``warm`` forward halves, then the backward half of the oldest sample and the forward half
    of the next, alternating, then the remaining backward halves."""
    order = [("F", s) for s in range(warm)]
    for s in range(samples):
        order.append(("B", s))
        if s + warm < samples:
            order.append(("F", s + warm))
    return order


def check_pipeline_order(stages: int, samples: int, buffers: int, order=pipeline_order) -> int:
    """Replays :func:`pipeline_order` on every stage with the dependencies of a chain of stages
    (F(s) on stage k needs F(s) on k-1; B(s) on stage k needs B(s) on k+1) and one pass at a time
    per stage; returns the rounds taken, or raises if the stages would wait on each other forever
    or a stage would hold more than ``buffers`` samples."""
    needs = [({k - 1} if k > 0 else set(), {k + 1} if k + 1 < stages else set()) for k in range(stages)]
    return _replay([order(k, stages, samples, buffers) for k in range(stages)], needs, samples, buffers, "stage")


def check_placement_order(placement: Placement, samples: int, buffers: int, order=pipeline_order) -> int:
    """:func:`check_pipeline_order` for the cores of ``placement``: each runs the order of its stage
    (``pipeline_stages``; lagging cores as ``lagging_cores`` says), waiting for the cores its slices
    take spikes and errors from (a lagging core's first slice for the sample before). Returns the
    rounds taken; raises if the cores would wait on each other forever or a core would hold more
    than ``buffers`` samples."""
    from spikeforge.rtl.slice_role import lagging_cores, pipeline_stages

    stages, lags = pipeline_stages(placement), lagging_cores(placement, buffers)
    n_lif = len(placement.layers) - 1
    orders = [order(k, max(stages) + 1, samples, buffers, lag) for k, lag in zip(stages, lags)]

    def part(core: int, layer: int) -> str:
        """The event that says core's slice of layer has run its backward pass."""
        return "L" if lags[core] and placement.cores[core][0].layer == layer else "B"

    def needs(c: int, kind: str, s: int | None) -> list[tuple[int, str, int]]:
        held = placement.cores[c]
        if kind == "F":
            return [(k, "F", s) for sl in held if sl.layer > 0 for k in placement.cores_of_layer(sl.layer - 1) if k != c]
        work = [(held[1], s), (held[0], s - 1 if s is not None else samples - 1)] if lags[c] else [(sl, s) for sl in held]
        return [(k, part(k, sl.layer + 1), x) for sl, x in work if x is not None and x >= 0 and sl.layer + 1 < n_lif
                for k in placement.cores_of_layer(sl.layer + 1) if k != c]

    def makes(c: int, kind: str, s: int | None) -> list[tuple[str, int]]:
        if kind == "F":
            return [("F", s)]
        if not lags[c]:
            return [("B", s)]
        return ([("B", s)] if s is not None else []) + [("L", x) for x in [s - 1 if s is not None else samples - 1] if x >= 0]

    done: set[tuple[int, str, int]] = set()
    pos = [0] * len(orders)
    rounds = 0
    while any(p < len(o) for p, o in zip(pos, orders)):
        moved = [k for k, o in enumerate(orders) if pos[k] < len(o) and all(d in done for d in needs(k, *o[pos[k]]))]
        if not moved:
            raise RuntimeError(f"pipeline order deadlocks: cores at {[o[p] if p < len(o) else None for p, o in zip(pos, orders)]}")
        for k in moved:
            done.update((k, e, x) for e, x in makes(k, *orders[k][pos[k]]))
            pos[k] += 1
            over = "L" if lags[k] else "B"
            held = sum(1 for x in range(samples) if (k, "F", x) in done and (k, over, x) not in done)
            if held > buffers:
                raise RuntimeError(f"core {k} holds {held} samples, more than {buffers} buffers")
        rounds += 1
    return rounds


def _replay(orders, needs, samples: int, buffers: int, what: str) -> int:
    """Rounds of the halves in ``orders`` (one list per unit), each unit running one half per
    round once the units its half needs (``needs[k]`` = forward, backward) have run theirs."""
    pos = [0] * len(orders)
    done: set[tuple[int, str, int]] = set()
    rounds = 0
    while any(p < len(o) for p, o in zip(pos, orders)):
        moved = []
        for k, o in enumerate(orders):
            if pos[k] == len(o):
                continue
            kind, s = o[pos[k]]
            if all((j, kind, s) in done for j in needs[k][0 if kind == "F" else 1]):
                moved.append((k, kind, s))
        if not moved:
            raise RuntimeError(f"pipeline order deadlocks: {what}s at {[o[p] if p < len(o) else None for p, o in zip(pos, orders)]}")
        for k, kind, s in moved:
            done.add((k, kind, s))
            pos[k] += 1
            held = sum(1 for x in range(samples) if (k, "F", x) in done and (k, "B", x) not in done)
            if held > buffers:
                raise RuntimeError(f"{what} {k} holds {held} samples, more than {buffers} buffers")
        rounds += 1
    return rounds


def slice_lfsr_states(cfg: SpikeforgeConfig, placement: Placement, stream_state: int, lr_shift: int) -> list[int] | None:
    """Each core's update-LFSR state for an update that starts the one-core stream at
    ``stream_state`` (None when the update draws nothing)."""
    if not (cfg.training.update_rounding == "stochastic" and lr_shift):
        return None
    bits = model.update_draw_bits(lr_shift)
    offsets = [0]
    for n_out, n_in in cfg.layer_shapes:
        offsets.append(offsets[-1] + n_out * n_in)
    # a core's slices are one slice, whole consecutive layers or the end of one layer and the start
    # of the next: its weights are contiguous in the stream
    return [lfsr.jump(stream_state, (offsets[held[0].layer] + held[0].lo * held[0].fan_in) * bits)
            for held in placement.cores]


class MultiCoreRtlBackend:
    """spikeforge.train.Backend on the cores of a ``MultiCoreTop``: ``clients[k]`` speaks to core k
    (built for ``slice_cfgs[k]``)."""

    name = "rtl-multicore"

    def __init__(self, cfg: SpikeforgeConfig, placement: Placement, clients: Sequence[Client], transact_all: TransactAll,
                 weights: list[torch.Tensor] | None = None, transact_streams: TransactStreams | None = None):
        from spikeforge.rtl.slice_role import lagging_cores, pipeline_stages

        if len(clients) != placement.n_cores:
            raise ValueError(f"{len(clients)} clients for {placement.n_cores} cores")
        self.cfg, self.placement, self.clients, self.transact_all = cfg, placement, list(clients), transact_all
        self.buffers = cfg.hardware.sample_buffers
        if self.buffers > 1 and transact_streams is None:
            raise ValueError("pipelined training (hardware.sample_buffers > 1) needs transact_streams")
        self.transact_streams = transact_streams
        self.stages = pipeline_stages(placement)
        self.lags = lagging_cores(placement, self.buffers)
        if self.buffers > 1:  # a placement whose cores would wait on each other is refused before any command
            check_placement_order(placement, cfg.training.batch_size, self.buffers)
        self.held = placement.cores
        n_lif = len(cfg.network.layers) - 1
        self.first = placement.cores_of_layer(0)
        outputs = placement.cores_of_layer(n_lif - 1)
        if len(outputs) != 1:
            raise ValueError(f"the output layer must sit on one core (its readout decides); it is on cores {outputs}")
        self.output = outputs[0]
        for c in self.clients:
            c.check_info()
            c.clear_error()
        self.load_weights(weights if weights is not None else model.init_weights(cfg))
        self._lr_shift = cfg.training.lr_shift
        for c in self.clients:
            c.set_config(lr_shift=self._lr_shift)
            c.clear_counters()
        self.stream_state = lfsr.seed_state(update_seed(cfg))  # where the one-core update stream stands

    # -- state ----------------------------------------------------------------------------------
    @property
    def lr_shift(self) -> int:
        return self._lr_shift

    @lr_shift.setter
    def lr_shift(self, value: int) -> None:
        if value != self._lr_shift:
            for c in self.clients:
                c.set_config(lr_shift=value)
            self._lr_shift = value

    @property
    def weights(self) -> list[torch.Tensor]:
        return self.gather([c.weights() for c in self.clients])

    def gather(self, per_core: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """The network's weights per layer from each core's matrices (one per slice it holds)."""
        rows = {(k, s): w for k, ws in enumerate(per_core) for s, w in zip(self.held[k], ws)}
        return [torch.cat([rows[(k, s)] for k, s in self.placement.slices_of_layer(l)])
                for l in range(len(self.cfg.layer_shapes))]

    def core_weights(self, k: int) -> list[torch.Tensor]:
        """Core k's weight matrices, one per slice it holds."""
        return self.clients[k].weights()

    def load_weights(self, weights: list[torch.Tensor]) -> None:
        model._check_weights(self.cfg, weights)
        for c, held in zip(self.clients, self.held):
            c.load_weights([weights[s.layer][s.lo:s.hi] for s in held])

    def seed_update_lfsr(self, seed: int) -> None:
        self.stream_state = lfsr.seed_state(seed)

    def counters(self) -> list[dict[str, int]]:
        return [c.counters() for c in self.clients]

    # -- commands ---------------------------------------------------------------------------------
    def _all(self, op: int, arg: int = 0) -> list[list[int]]:
        """``op`` to every core at once; each core's data words."""
        rsps = self.transact_all([(c.t, command(op, arg, 0, 0, ())) for c in self.clients])
        return [Client.answer(op, rsp, what=f"{Op(op).name} on core {k}")[1] for k, rsp in enumerate(rsps)]

    def _load(self, px: torch.Tensor, label: int, seed: int) -> None:
        pixels = [int(v) for v in px]
        for k in self.first:  # a label is checked against the core's outputs: only the output core's counts
            self.clients[k].sample(pixels, label if k == self.output else 0, seed)
        if self.output not in self.first:  # only its label matters: the spike network brings its inputs
            self.clients[self.output].sample([0] * self.held[self.output][0].fan_in, label, seed)

    def infer(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        out = []
        for px, seed in zip(pixels, seeds):
            self._load(px, 0, int(seed))
            out.append(self._all(Op.INFER)[self.output][0])
        return torch.tensor(out, dtype=torch.int64)

    def _sample_words(self, k: int, px: torch.Tensor, label: int, seed: int) -> list[int] | None:
        """Core k's SAMPLE command for one sample (None: the core takes no sample)."""
        if k in self.first:  # a label is checked against the core's outputs: only the output core's counts
            pixels = [int(v) for v in px]
        elif k == self.output:  # only its label matters: the spike network brings its inputs
            pixels = [0] * self.held[k][0].fan_in
        else:
            return None
        return command(Op.SAMPLE, label if k == self.output else 0, len(pixels), seed, pixels)

    def _train_pipelined(self, pixels, seeds, labels) -> list[int]:
        """Every core's stream of SAMPLE / forward / backward commands for the batch, run together."""
        n, stages = len(labels), max(self.stages) + 1
        streams = []
        for k, client in enumerate(self.clients):
            words, ops = [], []
            for kind, s in pipeline_order(self.stages[k], stages, n, self.buffers, self.lags[k]):
                if kind == "F":
                    sample = self._sample_words(k, pixels[s], int(labels[s]), int(seeds[s]))
                    if sample is not None:
                        words.append(sample)
                        ops.append((Op.SAMPLE, None))
                    words.append(command(Op.TRAIN, RUN_FORWARD))
                    ops.append((Op.TRAIN, s))
                else:
                    words.append(command(Op.TRAIN, RUN_BACKWARD))
                    ops.append((Op.TRAIN, None))
            streams.append((client.t, words, ops))
        rsps = self.transact_streams([(t, words) for t, words, _ in streams])
        out = [0] * n
        for k, ((_, _, ops), core_rsps) in enumerate(zip(streams, rsps)):
            for (op, s), rsp in zip(ops, core_rsps):
                _, data = Client.answer(op, rsp, what=f"{Op(op).name} on core {k}")
                if k == self.output and s is not None:
                    out[s] = data[0]
        return out

    def train_batch(self, pixels: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = []
        if self.buffers > 1:
            out = self._train_pipelined(pixels, seeds, labels)
        else:
            for px, seed, y in zip(pixels, seeds, labels):
                self._load(px, int(y), int(seed))
                out.append(self._all(Op.TRAIN)[self.output][0])
        states = slice_lfsr_states(self.cfg, self.placement, self.stream_state, self._lr_shift)
        if states is not None:
            for c, state in zip(self.clients, states):
                c.set_config(update_lfsr_state=state)
        self._all(Op.UPDATE)
        if states is not None:
            total = sum(n_out * n_in for n_out, n_in in self.cfg.layer_shapes)
            self.stream_state = lfsr.jump(self.stream_state, total * model.update_draw_bits(self._lr_shift))
        return torch.tensor(out, dtype=torch.int64)


class LockstepBackend:
    """The multi-core RTL and a reference backend (``MultiCoreGolden`` on the same placement) run
    side by side: predictions per sample and each core's weights after each update must be equal.
    ``mismatch`` describes the first difference (the run stops there)."""

    def __init__(self, rtl: MultiCoreRtlBackend, ref, replay: str = "?", on_batch: Callable[[int, int], None] | None = None):
        self.rtl, self.ref, self.replay, self.on_batch = rtl, ref, replay, on_batch
        self.name = f"{rtl.name}+lockstep"
        self.batches = 0
        self.samples = 0
        self._read: list[list[torch.Tensor]] | None = None  # every core's weights as last compared

    @property
    def weights(self) -> list[torch.Tensor]:
        # the check after the last update read every core already (20 cores: ~40k host words)
        return self.rtl.gather(self._read) if self._read is not None else self.rtl.weights

    @property
    def lr_shift(self) -> int:
        return self.rtl.lr_shift

    @lr_shift.setter
    def lr_shift(self, value: int) -> None:
        self.rtl.lr_shift = value
        self.ref.lr_shift = value

    def load_weights(self, weights):
        self._read = None
        self.rtl.load_weights(weights)
        self.ref.load_weights(weights)

    def seed_update_lfsr(self, seed: int) -> None:
        self.rtl.seed_update_lfsr(seed)
        self.ref.seed_update_lfsr(seed)

    def _fail(self, what: str) -> None:
        raise AssertionError(f"multi-core RTL differs from {self.ref.name}: {what}\nreplay: {self.replay}")

    def infer(self, pixels, seeds):
        got, want = self.rtl.infer(pixels, seeds), self.ref.infer(pixels, seeds)
        if not torch.equal(got, want):
            k = int((got != want).nonzero()[0])
            self._fail(f"inference sample {k} of this call predicts {int(got[k])}, expected {int(want[k])}")
        return got

    def train_batch(self, pixels, seeds, labels):
        self._read = None
        got = self.rtl.train_batch(pixels, seeds, labels)
        want = self.ref.train_batch(pixels, seeds, labels)
        if not torch.equal(got, want):
            k = int((got != want).nonzero()[0])
            self._fail(f"batch {self.batches}, sample {k}: predicted {int(got[k])}, expected {int(want[k])}")
        read = [self.rtl.core_weights(k) for k in range(self.rtl.placement.n_cores)]
        for k, held in enumerate(self.rtl.placement.cores):
            for s, w_rtl, w_ref in zip(held, read[k], self.ref.core_weights[k]):
                if not torch.equal(w_rtl, w_ref):
                    j, i = (w_rtl != w_ref).nonzero()[0].tolist()
                    self._fail(f"after update {self.batches}, core {k} ({s}) weight [{j}, {i}] is {int(w_rtl[j, i])}, "
                               f"expected {int(w_ref[j, i])} ({int((w_rtl != w_ref).sum())} of {w_rtl.numel()} differ)")
        self._read = read
        self.batches += 1
        self.samples += len(labels)
        if self.on_batch is not None:  # progress: batches and samples so far, all exact
            self.on_batch(self.batches, self.samples)
        return got
