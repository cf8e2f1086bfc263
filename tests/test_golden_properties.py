"""Property-based tests of the golden model: results never depend on how the work is partitioned.

The RTL splits a layer over lanes/cores (by output neuron or by input), accumulates gradients over
a mini-batch sample by sample, and may do so in any order. The contract makes all of these exact:
sums are accumulated wide and rounded/saturated once, at the points docs/arithmetic.md names. These
tests draw small random configs (always built and validated through SpikeforgeConfig), weights and
spike trains, and check that every such partitioning reproduces the unsplit result bit for bit.

Reproducibility: every test runs with ``derandomize=True`` (the examples are a fixed function of
the test, so CI is deterministic) and ``print_blob=True``; a failure prints the falsifying example
and an ``@reproduce_failure(...)`` line that replays it exactly.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.config import SpikeforgeConfig, bits_for_range
from spikeforge.golden import lfsr
from spikeforge.golden.model import (
    LayerForward,
    accumulate_gradients,
    apply_update,
    backward,
    forward,
    layer_backward,
    lif_forward,
)

I64 = torch.int64

PROPS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------
# Strategies


@st.composite
def configs(draw, n_layers: int | None = None) -> SpikeforgeConfig:
    """A small random config that is valid by construction (widths derived from the drawn sizes)."""
    T = draw(st.integers(1, 6))
    B = draw(st.integers(1, 4))
    L = n_layers if n_layers is not None else draw(st.integers(1, 2))
    layers = [draw(st.integers(1, 10))] + [draw(st.integers(1, 7)) for _ in range(L)]

    weight_bits = draw(st.integers(2, 10))
    membrane_bits = draw(st.integers(6, 20))
    vmax = (1 << (membrane_bits - 1)) - 1
    frac = draw(st.integers(0, min(2, membrane_bits - 2)))
    error_bits = draw(st.integers(6, 20))
    wmin, wmax = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    fan_in = max(layers[:-1])
    acc_bits = max(4, bits_for_range(fan_in * wmin, fan_in * wmax)) + draw(st.integers(0, 2))
    emin, emax = -(1 << (error_bits - 1)), (1 << (error_bits - 1)) - 1
    grad_bits = max(4, bits_for_range(emin * T * B, emax * T * B))

    # small thresholds make spikes likely; the full range exercises the rails
    threshold = draw(st.one_of(st.integers(1, min(vmax - 1, max(1, wmax << frac))), st.integers(1, vmax - 1)))
    beta_bits = draw(st.integers(0, 4))
    beta_q = draw(st.integers(1, 1 << beta_bits))
    floor = draw(st.one_of(st.none(), st.integers(-vmax - 1, 0)))

    span = 1 << (membrane_bits - 1)
    if draw(st.booleans()):
        surrogate = {"kind": "rect", "bits": 1, "width": draw(st.integers(1, min(span, 4 * threshold + 8)))}
    else:
        sbits = draw(st.integers(1, 3))
        k = draw(st.integers(sbits, membrane_bits - 1))
        surrogate = {"kind": "triangle", "bits": sbits, "width": 1 << k}

    target_true = draw(st.integers(0, T))
    cfg = SpikeforgeConfig().replace(
        network={"layers": layers, "timesteps": T},
        formats={
            "weight_bits": weight_bits,
            "membrane_bits": membrane_bits,
            "membrane_frac_bits": frac,
            "input_acc_bits": acc_bits,
            "error_bits": error_bits,
            "grad_bits": grad_bits,
        },
        neuron={
            "threshold": threshold,
            "beta": beta_q / (1 << beta_bits),
            "beta_bits": beta_bits,
            "reset": draw(st.sampled_from(["subtract", "zero"])),
            "leak_rounding": draw(st.sampled_from(["floor", "half_up"])),
            "membrane_floor": floor,
        },
        surrogate=surrogate,
        training={
            "batch_size": B,
            "loss": draw(st.sampled_from(["count_mse", "count_hinge"])),
            "target_true": target_true,
            "target_false": draw(st.integers(0, target_true)),
            "output_error_shift": draw(st.integers(0, min(4, error_bits - 2))),
            "error_shift": draw(st.integers(0, 6)),
            "error_rounding": draw(st.sampled_from(["floor", "half_up", "half_even"])),
            "lr_shift": draw(st.one_of(st.integers(0, 3), st.integers(0, 12))),
            "update_rounding": draw(st.sampled_from(["floor", "half_up", "half_even", "stochastic"])),
        },
    )
    return cfg


def rand_weights(cfg: SpikeforgeConfig, seed: int) -> list[torch.Tensor]:
    """Weights over the full weight range (both rails included with fair probability)."""
    g = torch.Generator().manual_seed(seed)
    wb = cfg.formats.weight_bits
    lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
    out = []
    for n_out, n_in in cfg.layer_shapes:
        w = torch.randint(lo, hi + 1, (n_out, n_in), generator=g, dtype=I64)
        rails = torch.randint(0, 8, (n_out, n_in), generator=g)
        w = torch.where(rails == 0, lo, torch.where(rails == 1, hi, w))
        out.append(w)
    return out


def rand_spikes(shape, density_pct: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 100, shape, generator=g) < density_pct).to(I64)


def rand_errors(cfg: SpikeforgeConfig, shape, seed: int) -> torch.Tensor:
    """Errors over the full error_bits range, rails included."""
    g = torch.Generator().manual_seed(seed)
    eb = cfg.formats.error_bits
    lo, hi = -(1 << (eb - 1)), (1 << (eb - 1)) - 1
    e = torch.randint(lo, hi + 1, shape, generator=g, dtype=I64)
    pick = torch.randint(0, 6, shape, generator=g)
    e = torch.where(pick == 0, lo, torch.where(pick == 1, hi, torch.where(pick == 2, 0, e)))
    return e


def cuts(n: int):
    """Sorted interior cut points splitting range(n) into contiguous non-empty parts (maybe just one)."""
    return st.sets(st.integers(1, n - 1), max_size=n - 1).map(sorted) if n > 1 else st.just([])


def parts(n: int, cut: list[int]) -> list[tuple[int, int]]:
    edges = [0, *cut, n]
    return list(zip(edges[:-1], edges[1:]))


# ---------------------------------------------------------------------------------------------
# Plain-integer re-derivations of the documented equations (independent of golden.fixedpoint)


def ref_leak(v: int, beta_q: int, beta_bits: int, mode: str) -> int:
    """round(v * beta_q / 2**beta_bits) by floor division; half_up = floor(x + 1/2)."""
    if mode == "floor":
        return (v * beta_q) // (1 << beta_bits)
    return (2 * v * beta_q + (1 << beta_bits)) // (1 << (beta_bits + 1))


def ref_round(n: int, shift: int, mode: str) -> int:
    d = 1 << shift
    q, r = divmod(n, d)  # Python: q = floor(n / d), 0 <= r < d
    if mode == "floor" or r == 0:
        return q
    if 2 * r > d or (2 * r == d and (mode == "half_up" or q % 2 == 1)):
        return q + 1
    return q


def ref_sat(n: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, n))


def ref_surrogate(cfg: SpikeforgeConfig, v: int) -> int:
    s = cfg.surrogate
    dist = abs(v - cfg.neuron.threshold)
    if s.kind == "rect":
        return int(dist < s.width)
    return min((1 << s.bits) - 1, max(0, s.width - dist) >> (s.width.bit_length() - 1 - s.bits))


def ref_lif_from_current(cfg: SpikeforgeConfig, current: torch.Tensor):
    """LIF steps 2-5 of docs/arithmetic.md from a given synaptic sum I (T,B,N), in Python ints."""
    n, fmt = cfg.neuron, cfg.formats
    lo = -(1 << (fmt.membrane_bits - 1)) if n.membrane_floor is None else n.membrane_floor
    hi = (1 << (fmt.membrane_bits - 1)) - 1
    T, B, N = current.shape
    cur = current.tolist()
    mem = [[[0] * N for _ in range(B)] for _ in range(T)]
    spk = [[[0] * N for _ in range(B)] for _ in range(T)]
    for b in range(B):
        for j in range(N):
            v = s = 0
            for t in range(T):
                base = ref_leak(v, n.beta_q, n.beta_bits, n.leak_rounding)
                base = base - n.threshold * s if n.reset == "subtract" else base * (1 - s)
                v = min(hi, max(lo, base + (cur[t][b][j] << fmt.membrane_frac_bits)))
                s = int(v > n.threshold)
                mem[t][b][j], spk[t][b][j] = v, s
    surr = [[[ref_surrogate(cfg, v) for v in row] for row in m] for m in mem]
    return torch.tensor(mem, dtype=I64), torch.tensor(spk, dtype=I64), torch.tensor(surr, dtype=I64)


# ---------------------------------------------------------------------------------------------
# Forward partition invariance


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1), density=st.sampled_from([10, 50, 90]), data=st.data())
def test_forward_is_invariant_to_output_neuron_partitioning(cfg, seed, density, data):
    """Running lif_forward on contiguous slices of W's output rows and concatenating gives identical
    current / membrane / spikes / surr to the unsplit layer."""
    (w,) = rand_weights(cfg, seed)
    n_out, n_in = w.shape
    x = rand_spikes((cfg.network.timesteps, cfg.training.batch_size, n_in), density, seed + 1)
    full = lif_forward(cfg, w, x)
    pieces = [lif_forward(cfg, w[a:b], x) for a, b in parts(n_out, data.draw(cuts(n_out), label="cuts"))]
    for name in ("current", "membrane", "spikes", "surr"):
        assert torch.equal(torch.cat([getattr(p, name) for p in pieces], dim=-1), getattr(full, name)), name


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1), density=st.sampled_from([10, 50, 90]), data=st.data())
def test_forward_is_invariant_to_input_partitioning(cfg, seed, density, data):
    """Partial synaptic sums over contiguous input partitions, added, then the documented LIF step
    (re-derived here in plain ints) reproduce lif_forward's current, membrane, spikes and surr."""
    (w,) = rand_weights(cfg, seed)
    n_out, n_in = w.shape
    T, B = cfg.network.timesteps, cfg.training.batch_size
    x = rand_spikes((T, B, n_in), density, seed + 1)
    full = lif_forward(cfg, w, x)

    total = torch.zeros(T, B, n_out, dtype=I64)
    for a, b in parts(n_in, data.draw(cuts(n_in), label="cuts")):
        partial = (x[:, :, None, a:b] * w[None, None, :, a:b]).sum(-1)  # exact int64 partial sums
        total = total + partial
        # the layer's own current on an input slice is that partition's partial sum
        assert torch.equal(lif_forward(cfg, w[:, a:b], x[:, :, a:b]).current, partial)
    assert torch.equal(total, full.current)

    mem, spk, surr = ref_lif_from_current(cfg, total)
    assert torch.equal(full.membrane, mem)
    assert torch.equal(full.spikes, spk)
    assert torch.equal(full.surr, surr)


# ---------------------------------------------------------------------------------------------
# Backward partition invariance


def _slice_fw(fw: LayerForward, a: int, b: int) -> LayerForward:
    return LayerForward(
        current=fw.current[..., a:b], membrane=fw.membrane[..., a:b], spikes=fw.spikes[..., a:b], surr=fw.surr[..., a:b]
    )


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1), density=st.sampled_from([10, 50, 90]), data=st.data())
def test_backward_is_invariant_to_output_neuron_partitioning(cfg, seed, density, data):
    """error_out equals the per-partition wide partial sums W[j,:]^T delta[j] added and then rounded and
    saturated once; delta and grad of a neuron partition equal the matching rows of the full result."""
    (w,) = rand_weights(cfg, seed)
    n_out, n_in = w.shape
    T, B = cfg.network.timesteps, cfg.training.batch_size
    x = rand_spikes((T, B, n_in), density, seed + 1)
    fw = lif_forward(cfg, w, x)
    eps = rand_errors(cfg, (T, B, n_out), seed + 2)
    full = layer_backward(cfg, w, fw, x, eps, need_error_out=True)

    wide = torch.zeros(T, B, n_in, dtype=I64)
    for a, b in parts(n_out, data.draw(cuts(n_out), label="cuts")):
        wide = wide + (full.delta[..., a:b, None] * w[None, None, a:b, :]).sum(-2)  # partial sums, unrounded
        part = layer_backward(cfg, w[a:b], _slice_fw(fw, a, b), x, eps[..., a:b], need_error_out=False)
        assert torch.equal(part.delta, full.delta[..., a:b])
        assert torch.equal(part.grad, full.grad[a:b])
    tr, eb = cfg.training, cfg.formats.error_bits
    want = [ref_sat(ref_round(v, tr.error_shift, tr.error_rounding), eb) for v in wide.flatten().tolist()]
    assert full.error_out.flatten().tolist() == want

    # grad is the exact sum over (t, b) of delta^T x, only where inputs spiked
    d, xs = full.delta.tolist(), x.tolist()
    grad = [
        [sum(d[t][bb][j] for t in range(T) for bb in range(B) if xs[t][bb][i]) for i in range(n_in)]
        for j in range(n_out)
    ]
    assert full.grad.tolist() == grad


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1), density=st.sampled_from([10, 50, 90]))
def test_layer_backward_delta_matches_documented_bptt(cfg, seed, density):
    """delta[t] = sat_error(a[t] + c[t]) with a = eps*g (rect) or round(eps*g >> bits) (triangle) and
    c = leak(delta[t+1]), zeroed where s[t] = 1 under zero reset -- re-derived here in plain ints."""
    (w,) = rand_weights(cfg, seed)
    n_out, n_in = w.shape
    T, B = cfg.network.timesteps, cfg.training.batch_size
    x = rand_spikes((T, B, n_in), density, seed + 1)
    fw = lif_forward(cfg, w, x)
    eps = rand_errors(cfg, (T, B, n_out), seed + 2)
    got = layer_backward(cfg, w, fw, x, eps, need_error_out=False).delta.tolist()

    n, tr, sg, eb = cfg.neuron, cfg.training, cfg.surrogate, cfg.formats.error_bits
    e, g, s = eps.tolist(), fw.surr.tolist(), fw.spikes.tolist()
    for b in range(B):
        for j in range(n_out):
            d = 0
            for t in range(T - 1, -1, -1):
                prod = e[t][b][j] * g[t][b][j]
                a = prod if sg.kind == "rect" else ref_round(prod, sg.bits, tr.error_rounding)
                c = ref_leak(d, n.beta_q, n.beta_bits, n.leak_rounding)
                if n.reset == "zero" and s[t][b][j]:
                    c = 0
                d = ref_sat(a + c, eb)
                assert got[t][b][j] == d, (t, b, j)


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_backward_error_out_is_invariant_to_input_partitioning(cfg, seed, data):
    """Each input's error eps'[i] depends only on column i of W: computing error_out and grad for a slice
    of the inputs gives the matching columns of the full result."""
    (w,) = rand_weights(cfg, seed)
    n_out, n_in = w.shape
    T, B = cfg.network.timesteps, cfg.training.batch_size
    x = rand_spikes((T, B, n_in), 50, seed + 1)
    fw = lif_forward(cfg, w, x)
    eps = rand_errors(cfg, (T, B, n_out), seed + 2)
    full = layer_backward(cfg, w, fw, x, eps, need_error_out=True)
    for a, b in parts(n_in, data.draw(cuts(n_in), label="cuts")):
        part = layer_backward(cfg, w[:, a:b], fw, x[..., a:b], eps, need_error_out=True)
        assert torch.equal(part.delta, full.delta)
        assert torch.equal(part.error_out, full.error_out[..., a:b])
        assert torch.equal(part.grad, full.grad[:, a:b])


# ---------------------------------------------------------------------------------------------
# Mini-batch accumulation


@PROPS
@given(cfg=configs(), seed=st.integers(0, 2**31 - 1), density=st.sampled_from([20, 60, 95]), data=st.data())
def test_minibatch_gradients_and_update_are_order_and_split_independent(cfg, seed, density, data):
    """backward() over a batch equals the sum of per-sample gradients in any order; any split of any
    permutation into sub-batches whose gradients are summed gives the same gradient, and apply_update
    with it (same LFSR seed) gives identical weights and leaves the LFSR at the same position."""
    ws = rand_weights(cfg, seed)
    T, B = cfg.network.timesteps, cfg.training.batch_size
    n_in, n_out = cfg.network.layers[0], cfg.network.layers[-1]
    x = rand_spikes((T, B, n_in), density, seed + 1)
    labels = torch.randint(0, n_out, (B,), generator=torch.Generator().manual_seed(seed + 2))

    def grads_of(idx: list[int]) -> list[torch.Tensor]:
        ix = torch.tensor(idx, dtype=I64)
        tr = backward(cfg, ws, forward(cfg, ws, x[:, ix]), labels[ix])
        return [lb.grad for lb in tr.backward]

    full = grads_of(list(range(B)))
    order = data.draw(st.permutations(range(B)), label="order")

    per_sample = [grads_of([b]) for b in order]
    running = [torch.zeros_like(g) for g in full]
    for gs in per_sample:  # sequential sum in the drawn order
        running = [r + g for r, g in zip(running, gs)]
    for r, g in zip(running, full):
        assert torch.equal(r, g)

    sub = [grads_of([order[k] for k in range(a, b)]) for a, b in parts(B, data.draw(cuts(B), label="split"))]
    split = accumulate_gradients(sub)
    for s, g in zip(split, full):
        assert torch.equal(s, g)

    useed = data.draw(st.integers(0, 2**32 - 1), label="update_seed")
    rng_full, rng_split = lfsr.LfsrStream(useed), lfsr.LfsrStream(useed)
    w_full = apply_update(cfg, ws, full, rng_full)
    w_split = apply_update(cfg, ws, split, rng_split)
    for a, b in zip(w_full, w_split):
        assert torch.equal(a, b)
    assert rng_full.state == rng_split.state


@PROPS
@given(cfg=configs(n_layers=1), seed=st.integers(0, 2**31 - 1))
def test_forward_is_batch_independent(cfg, seed):
    """Each sample's forward trace is independent of the other samples in the batch."""
    (w,) = rand_weights(cfg, seed)
    T, B = cfg.network.timesteps, cfg.training.batch_size
    x = rand_spikes((T, B, w.shape[1]), 50, seed + 1)
    full = lif_forward(cfg, w, x)
    for b in range(B):
        one = lif_forward(cfg, w, x[:, b : b + 1])
        for name in ("current", "membrane", "spikes", "surr"):
            assert torch.equal(getattr(one, name), getattr(full, name)[:, b : b + 1]), name
