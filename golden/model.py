"""Bit-exact model of the spikeforge core: forward LIF, BPTT with a surrogate, weight update.

This module *is* docs/arithmetic.md in code. Every function works on ``torch.int64`` tensors,
vectorised over batch and neurons and stepped over time where the recursion demands it. The RTL
processes the same arithmetic event by event; because sums are accumulated wide and saturated only
at the points named here, the order of that work never changes a bit.

Shapes: spikes and membranes are ``(T, B, N)``; weights of LIF layer ``l`` are ``(N_out, N_in)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spikeforge.config import SpikeforgeConfig

from . import lfsr
from .fixedpoint import exact_matmul, leak, round_shift, saturate, stochastic_round_shift

__all__ = [
    "LayerForward",
    "LayerBackward",
    "StepTrace",
    "init_weights",
    "lif_forward",
    "surrogate",
    "output_error",
    "layer_backward",
    "layer_delta",
    "error_partial",
    "error_finish",
    "weight_grad",
    "forward",
    "backward",
    "accumulate_gradients",
    "apply_update",
    "update_draw_bits",
    "update_matrix",
    "predict",
]


@dataclass
class LayerForward:
    """What the forward pass of one LIF layer exposes (and, for BP, stores: spikes and ``surr``)."""

    current: torch.Tensor  # (T,B,N) synaptic sum I[t] = W x[t], exact
    membrane: torch.Tensor  # (T,B,N) pre-reset membrane v[t] after saturation
    spikes: torch.Tensor  # (T,B,N) 0/1
    surr: torch.Tensor  # (T,B,N) quantised surrogate g[t] (1 bit for rect, `bits` bits for triangle)


@dataclass
class LayerBackward:
    error_in: torch.Tensor  # (T,B,N) eps[t]: dL/ds[t] arriving at this layer's spikes
    delta: torch.Tensor  # (T,B,N) dL/dv[t]
    error_out: torch.Tensor | None  # (T,B,N_in) eps for the previous layer, None for the first layer
    grad: torch.Tensor  # (N,N_in) sum over batch and time of delta x input spikes


@dataclass
class StepTrace:
    """Every intermediate of one training step, layer by layer."""

    inputs: torch.Tensor
    forward: list[LayerForward]
    counts: torch.Tensor  # (B, N_out) output spike counts
    membrane_sum: torch.Tensor  # (B, N_out) sum over t of the output layer's v[t], breaks count ties
    backward: list[LayerBackward] = field(default_factory=list)
    weights_before: list[torch.Tensor] = field(default_factory=list)
    weights_after: list[torch.Tensor] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Initialisation (host side; not part of the datapath, but deterministic from config + seed)


def init_weights(cfg: SpikeforgeConfig, seed: int | None = None) -> list[torch.Tensor]:
    """Uniform integer weights in ``[-a, a]``; ``a = init_scale`` or ``threshold // isqrt(fan_in)``."""
    g = torch.Generator().manual_seed(cfg.training.seed if seed is None else seed)
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    ws = []
    for n_out, n_in in cfg.layer_shapes:
        a = cfg.training.init_scale or max(1, min(wmax, _init_bound(cfg, n_in)))
        ws.append(torch.randint(-a, a + 1, (n_out, n_in), generator=g, dtype=torch.int64))
    return ws


def _init_bound(cfg: SpikeforgeConfig, fan_in: int) -> int:
    from math import isqrt

    thr_units = cfg.neuron.threshold >> cfg.formats.membrane_frac_bits
    return (2 * thr_units) // max(1, isqrt(fan_in))


# ---------------------------------------------------------------------------------------------
# Forward


def surrogate(cfg: SpikeforgeConfig, v: torch.Tensor) -> torch.Tensor:
    """Quantised surrogate derivative g of the spike w.r.t. the pre-reset membrane ``v``.

    rect:     g = 1 if |v - threshold| < width else 0                      (1 bit)
    triangle: g = min(2**bits - 1, max(0, width - |v - threshold|) >> (log2(width) - bits))
    """
    s = cfg.surrogate
    dist = (v - cfg.neuron.threshold).abs()
    if s.kind == "rect":
        return (dist < s.width).to(torch.int64)
    shift = s.width.bit_length() - 1 - s.bits
    return ((s.width - dist).clamp(min=0) >> shift).clamp(max=(1 << s.bits) - 1)


def lif_forward(cfg: SpikeforgeConfig, weights: torch.Tensor, x: torch.Tensor) -> LayerForward:
    """One LIF layer over all timesteps. Per step t (docs/arithmetic.md, "Forward step"):

    1. I[t]  = sum_i W[:, i] x[t, i]                          exact, in input_acc_bits
    2. base  = leak(v[t-1]) - threshold * s[t-1]              subtract reset
               leak(v[t-1]) * (1 - s[t-1])                    zero reset
    3. v[t]  = clamp(base + (I[t] << membrane_frac_bits), membrane_floor, vmax)  the one saturation
    4. s[t]  = v[t] > threshold                                strict compare
    5. g[t]  = surrogate(v[t])
    with v[-1] = 0, s[-1] = 0.
    """
    n = cfg.neuron
    fmt = cfg.formats
    T, B, n_in = x.shape
    n_out = weights.shape[0]
    bound = n_in * (1 << (fmt.weight_bits - 1))
    current = exact_matmul(x.reshape(T * B, n_in), weights.T, bound).view(T, B, n_out)
    drive = current << fmt.membrane_frac_bits
    v_lo, v_hi = n.membrane_range(fmt)
    v = torch.zeros(B, n_out, dtype=torch.int64)
    s = torch.zeros(B, n_out, dtype=torch.int64)
    vs, ss = [], []
    for t in range(T):
        base = leak(v, n.beta_q, n.beta_bits, n.leak_rounding)
        if n.reset == "subtract":
            base = base - n.threshold * s
        else:
            base = base * (1 - s)
        v = (base + drive[t]).clamp(v_lo, v_hi)
        s = (v > n.threshold).to(torch.int64)
        vs.append(v)
        ss.append(s)
    membrane = torch.stack(vs)
    return LayerForward(current=current, membrane=membrane, spikes=torch.stack(ss), surr=surrogate(cfg, membrane))


def forward(cfg: SpikeforgeConfig, weights: list[torch.Tensor], inputs: torch.Tensor) -> StepTrace:
    """All layers, layer after layer (each layer sees all T steps of the previous one)."""
    _check_weights(cfg, weights)
    layers = []
    x = inputs
    for w in weights:
        fw = lif_forward(cfg, w, x)
        layers.append(fw)
        x = fw.spikes
    return StepTrace(inputs=inputs, forward=layers, counts=x.sum(0), membrane_sum=layers[-1].membrane.sum(0))


def predict(counts: torch.Tensor, membrane_sum: torch.Tensor) -> torch.Tensor:
    """Class = largest output spike count; equal counts are decided by the larger membrane sum
    (sum over t of the pre-reset output membrane), and what is still equal by the lowest index.
    With T <= 16 steps counts tie often; the membrane sum is one accumulator per output neuron."""
    best = counts == counts.max(dim=1, keepdim=True).values
    # among the neurons with the top count, the largest membrane sum; argmax returns the first
    # (lowest) index of equal maxima. Staged compares: no packed key that could overflow.
    floor = torch.iinfo(torch.int64).min
    m = torch.where(best, membrane_sum.to(torch.int64), floor)
    return m.argmax(dim=1)


# ---------------------------------------------------------------------------------------------
# Backward


def output_error(cfg: SpikeforgeConfig, counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """eps_out[b, k] = sat_error((c_k - y_k) << output_error_shift), same for every timestep.

    y_k = target_true for the label, target_false otherwise. ``count_hinge`` keeps only the error
    on the wrong side of the target (too few spikes on the label, too many elsewhere), so a sample
    already classified with margin costs the BP engine no work at all.
    """
    tr = cfg.training
    n_out = counts.shape[1]
    is_label = torch.nn.functional.one_hot(labels.to(torch.int64), n_out).to(torch.bool)
    target = torch.where(is_label, tr.target_true, tr.target_false)
    err = counts - target
    if tr.loss == "count_hinge":
        err = torch.where(is_label, err.clamp(max=0), err.clamp(min=0))
    return saturate(err << tr.output_error_shift, cfg.formats.error_bits)


def layer_delta(cfg: SpikeforgeConfig, fw: LayerForward, error_in: torch.Tensor) -> torch.Tensor:
    """Steps 1-3 of :func:`layer_backward`: delta[t] for t = T-1 down to 0. Neuron-local: a core
    holding some of a layer's neurons computes their deltas from their own errors and state."""
    n = cfg.neuron
    tr = cfg.training
    T, B, n_out = fw.membrane.shape
    if cfg.surrogate.kind == "rect":
        drive = error_in * fw.surr
    else:
        drive = round_shift(error_in * fw.surr, cfg.surrogate.bits, tr.error_rounding)
    d = torch.zeros(B, n_out, dtype=torch.int64)
    deltas = [None] * T
    for t in range(T - 1, -1, -1):
        carry = leak(d, n.beta_q, n.beta_bits, n.leak_rounding)
        if n.reset == "zero":
            carry = carry * (1 - fw.spikes[t])
        d = saturate(drive[t] + carry, cfg.formats.error_bits)
        deltas[t] = d
    return torch.stack(deltas)


def error_partial(cfg: SpikeforgeConfig, weights: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Step 4 before rounding: sum_j W[j,:] delta[t,j], exact (``error_acc_bits`` wide). Over a
    subset of the layer's neurons (rows of W) it is a partial sum; partial sums of all subsets
    add, exactly, to the layer's sum, which is why cores exchange these and not rounded errors."""
    T, B, n_out = delta.shape
    emax = 1 << (cfg.formats.error_bits - 1)
    wmax = 1 << (cfg.formats.weight_bits - 1)
    return exact_matmul(delta.view(T * B, n_out), weights, n_out * emax * wmax).view(T, B, weights.shape[1])


def error_finish(cfg: SpikeforgeConfig, acc: torch.Tensor) -> torch.Tensor:
    """Step 4's one rounding and one saturation, applied once to the whole (summed) accumulator."""
    return saturate(round_shift(acc, cfg.training.error_shift, cfg.training.error_rounding), cfg.formats.error_bits)


def weight_grad(cfg: SpikeforgeConfig, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Step 5: sum over batch and time of delta^T x (rows: this layer's neurons, exact)."""
    T, B, n_out = delta.shape
    emax = 1 << (cfg.formats.error_bits - 1)
    return exact_matmul(delta.view(T * B, n_out).T, x.reshape(T * B, x.shape[2]), T * B * emax)


def layer_backward(
    cfg: SpikeforgeConfig,
    weights: torch.Tensor,
    fw: LayerForward,
    x: torch.Tensor,
    error_in: torch.Tensor,
    need_error_out: bool,
) -> LayerBackward:
    """BPTT through one layer, t = T-1 down to 0 (docs/arithmetic.md, "Backward step"):

    1. a[t]     = eps[t] * g[t]                                rect: g in {0,1}, no multiply
                  round(eps[t] * g[t] >> bits, error_rounding) triangle
    2. c[t]     = leak(delta[t+1])                             same leak as the forward pass;
                  0 where s[t] = 1 under zero reset            (the reset itself is not differentiated)
    3. delta[t] = sat_error(a[t] + c[t])                       delta[T] = 0
    4. eps'[t]  = sat_error(round(sum_j W[j,:] delta[t,j] >> error_shift, error_rounding))
    5. grad     = sum_{b,t} delta[t,b,:]^T x[t,b,:]            only where input spikes occurred
    """
    delta = layer_delta(cfg, fw, error_in)
    error_out = error_finish(cfg, error_partial(cfg, weights, delta)) if need_error_out else None
    return LayerBackward(error_in=error_in, delta=delta, error_out=error_out, grad=weight_grad(cfg, delta, x))


def backward(cfg: SpikeforgeConfig, weights: list[torch.Tensor], trace: StepTrace, labels: torch.Tensor) -> StepTrace:
    """BP and WG for every layer, last layer first; fills ``trace.backward`` (in layer order)."""
    T = cfg.network.timesteps
    B = trace.counts.shape[0]
    if B > cfg.training.batch_size:
        # grad_bits is validated for batch_size samples; a larger batch could overflow the accumulator
        raise ValueError(f"batch of {B} samples exceeds training.batch_size = {cfg.training.batch_size}")
    eps = output_error(cfg, trace.counts, labels).unsqueeze(0).expand(T, -1, -1)
    out: list[LayerBackward] = []
    for l in range(len(weights) - 1, -1, -1):
        x = trace.inputs if l == 0 else trace.forward[l - 1].spikes
        lb = layer_backward(cfg, weights[l], trace.forward[l], x, eps, need_error_out=l > 0)
        out.append(lb)
        eps = lb.error_out
    trace.backward = out[::-1]
    return trace


def accumulate_gradients(traces_grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Sum per-part gradients layer by layer (exact integer sums: order does not matter)."""
    return [torch.stack(parts).sum(0) for parts in zip(*traces_grads)]


# ---------------------------------------------------------------------------------------------
# Update


def update_draw_bits(lr_shift: int) -> int:
    """Width of each stochastic-rounding draw: min(lr_shift, 16)."""
    return min(lr_shift, 16)


def apply_update(
    cfg: SpikeforgeConfig,
    weights: list[torch.Tensor],
    grads: list[torch.Tensor],
    rng: lfsr.LfsrStream | None,
    lr_shift: int | None = None,
) -> list[torch.Tensor]:
    """W <- sat_weight(W - round(grad >> lr_shift, update_rounding)), layer 0 first.

    Stochastic rounding consumes exactly one draw per weight per update from ``rng``, layer by
    layer, row-major (output neuron j, then input i), whether or not the gradient is zero, so the
    LFSR position never depends on the data.
    """
    shift = cfg.training.lr_shift if lr_shift is None else lr_shift
    stochastic = cfg.training.update_rounding == "stochastic" and shift
    new = []
    for w, g in zip(weights, grads):
        draws = rng.take(w.numel(), update_draw_bits(shift)) if stochastic and rng is not None else None
        new.append(update_matrix(cfg, w, g, shift, draws))
    return new


def update_matrix(cfg: SpikeforgeConfig, w: torch.Tensor, g: torch.Tensor, shift: int,
                  draws: torch.Tensor | None) -> torch.Tensor:
    """One matrix (or a core's rows of one) of :func:`apply_update`; ``draws`` are its
    stochastic-rounding draws in row-major order (None unless the rounding is stochastic)."""
    tr = cfg.training
    if tr.update_rounding == "stochastic" and shift:
        if draws is None:
            raise ValueError("stochastic update rounding needs an LFSR stream")
        step = stochastic_round_shift(g, shift, draws.view_as(w), update_draw_bits(shift))
    else:
        step = round_shift(g, shift, "floor" if tr.update_rounding == "stochastic" else tr.update_rounding)
    return saturate(w - step, cfg.formats.weight_bits)


def _check_weights(cfg: SpikeforgeConfig, weights: list[torch.Tensor]) -> None:
    shapes = cfg.layer_shapes
    if len(weights) != len(shapes):
        raise ValueError(f"expected {len(shapes)} weight matrices for layers {cfg.network.layers}, got {len(weights)}")
    lo, hi = -(1 << (cfg.formats.weight_bits - 1)), (1 << (cfg.formats.weight_bits - 1)) - 1
    for l, (w, shape) in enumerate(zip(weights, shapes)):
        if tuple(w.shape) != shape:
            raise ValueError(f"layer {l}: weight shape {tuple(w.shape)} != (fan_out, fan_in) {shape}")
        if w.dtype != torch.int64:
            raise TypeError(f"layer {l}: weights must be torch.int64, got {w.dtype}")
        if w.numel() and (int(w.min()) < lo or int(w.max()) > hi):
            raise ValueError(f"layer {l}: weights outside the {cfg.formats.weight_bits}-bit range [{lo}, {hi}]")
