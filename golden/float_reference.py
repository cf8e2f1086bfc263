"""Float reference of the same network, differentiated by torch.autograd.

Used only to validate the golden model: same neuron equations (leak, delayed subtract / zero
reset, strict threshold), same surrogate shape, same loss on output spike counts, but real
numbers and autograd instead of integers and a hand-written BPTT. Membranes, weights and threshold
are in the golden model's integer units, so with wide formats the forward pass matches the golden
model exactly (see tests/test_float_limit.py) and gradients differ only by the golden model's
rounding and its constant per-layer scale factors.
"""

from __future__ import annotations

import torch

from spikeforge.config import SpikeforgeConfig

__all__ = ["FloatReference", "SpikeFn"]


class SpikeFn(torch.autograd.Function):
    """Heaviside(v > threshold) forward; the config's surrogate shape backward (per membrane unit)."""

    @staticmethod
    def forward(ctx, v, threshold: float, kind: str, width: float):
        ctx.save_for_backward(v)
        ctx.threshold, ctx.kind, ctx.width = threshold, kind, width
        return (v > threshold).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        dist = (v - ctx.threshold).abs()
        if ctx.kind == "rect":
            sg = (dist < ctx.width).to(v.dtype)
        else:
            sg = (1 - dist / ctx.width).clamp(min=0)
        return grad * sg, None, None, None


class FloatReference(torch.nn.Module):
    def __init__(self, cfg: SpikeforgeConfig, weights: list[torch.Tensor], dtype=torch.float64):
        super().__init__()
        self.cfg = cfg
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(w.to(dtype)) for w in weights])
        self.dtype = dtype

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """inputs (T,B,N_in) 0/1 → (output counts (B,N_out), per-layer {'membrane','spikes'})."""
        n = self.cfg.neuron
        frac = float(1 << self.cfg.formats.membrane_frac_bits)
        beta = n.beta_q / (1 << n.beta_bits)
        thr = float(n.threshold)
        x = inputs.to(self.dtype)
        layers = []
        for w in self.weights:
            T, B, _ = x.shape
            v = torch.zeros(B, w.shape[0], dtype=self.dtype)
            s = torch.zeros_like(v)
            vs, ss = [], []
            for t in range(T):
                drive = (x[t] @ w.T) * frac
                if n.reset == "subtract":
                    v = beta * v - thr * s.detach() + drive
                else:
                    v = beta * v * (1 - s.detach()) + drive
                s = SpikeFn.apply(v, thr, self.cfg.surrogate.kind, float(self.cfg.surrogate.width))
                vs.append(v)
                ss.append(s)
            layers.append({"membrane": torch.stack(vs), "spikes": torch.stack(ss)})
            x = layers[-1]["spikes"]
        return x.sum(0), layers

    def loss(self, counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """0.5 * sum of squared count errors, the loss whose gradient the golden output error is."""
        tr = self.cfg.training
        is_label = torch.nn.functional.one_hot(labels.to(torch.int64), counts.shape[1]).to(torch.bool)
        target = torch.where(is_label, float(tr.target_true), float(tr.target_false)).to(self.dtype)
        err = counts - target
        if tr.loss == "count_hinge":
            err = torch.where(is_label, err.clamp(max=0), err.clamp(min=0))
        return 0.5 * (err**2).sum()

    def gradients(self, inputs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """dLoss/dW per layer by autograd."""
        for p in self.weights:
            p.grad = None
        counts, _ = self.forward(inputs)
        self.loss(counts, labels).backward()
        return [p.grad.detach().clone() for p in self.weights]
