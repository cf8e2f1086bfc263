"""Networks in and out of NIR (the Neuromorphic Intermediate Representation).

spikeforge runs chains of fully connected LIF layers: ``Input -> (Linear|Affine) -> (LIF|IF) ->
... -> Output``. Import maps NIR's continuous-time parameters onto the integer contract with a
time step ``dt`` (1 by default), the convention snnTorch exports with:

    LIF  tau dv/dt = (v_leak - v) + r I   ->   beta = 1 - dt / tau,  needs r = tau / dt, v_leak = 0
    IF   dv/dt = r I                      ->   beta = 1,             needs r = 1 / dt

Everything else is refused with a message naming the node: other node types, branches, a
non-zero bias, weights that are not integers of ``formats.weight_bits``, per-neuron parameters
that differ (the core has one set), a beta that is not ``k / 2**beta_bits``, layers whose neuron
parameters differ.

**Reset.** NIR's neurons reset *to* ``v_reset``; spikeforge's ``zero`` reset is that with
``v_reset = 0``. spikeforge's default ``subtract`` reset has no NIR equivalent, so export writes
it into the neuron node's metadata (``spikeforge_reset = "subtract"``) and import honours it. A
graph without that key is a reset-to-``v_reset`` network; ``v_reset`` other than 0 is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikeforge.config import SpikeforgeConfig

__all__ = ["NirError", "from_nir", "to_nir", "read_nir", "write_nir", "RESET_KEY"]

RESET_KEY = "spikeforge_reset"
_EXTRA_KEYS = ("spikeforge_leak_rounding", "spikeforge_membrane_floor")


class NirError(ValueError):
    """The NIR graph cannot run on spikeforge; the message names the node and what to change."""


def _one_value(node_name: str, param: str, arr: Any) -> float:
    a = np.asarray(arr, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise NirError(f"node '{node_name}': parameter {param} is empty")
    if not np.all(a == a[0]):
        raise NirError(f"node '{node_name}': {param} differs between neurons ({a.min()} .. {a.max()}); "
                       "a spikeforge core has one value per parameter")
    return float(a[0])


def _chain(graph) -> list[str]:
    """Node names from input to output, or NirError if the graph is not one chain."""
    import nir

    succ: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NirError(f"the graph needs exactly one nir.Input node, found {len(inputs)}: {inputs}")
    order = [inputs[0]]
    while succ.get(order[-1]):
        nxt = succ[order[-1]]
        if len(nxt) != 1:
            raise NirError(f"node '{order[-1]}' feeds {len(nxt)} nodes ({', '.join(nxt)}): spikeforge runs a chain of layers")
        if len(pred.get(nxt[0], [])) != 1:
            raise NirError(f"node '{nxt[0]}' has {len(pred[nxt[0]])} inputs: spikeforge runs a chain of layers")
        if nxt[0] in order:
            raise NirError(f"node '{nxt[0]}' closes a loop: recurrent graphs are not supported")
        order.append(nxt[0])
    unused = set(graph.nodes) - set(order)
    if unused:
        raise NirError(f"node(s) {', '.join(sorted(unused))} are not on the path from the input")
    return order


def from_nir(graph, base: SpikeforgeConfig, dt: float = 1.0) -> tuple[SpikeforgeConfig, list[torch.Tensor]]:
    """(config, integer weights) of a NIR graph; ``base`` supplies everything NIR does not say
    (timesteps, formats, training, hardware)."""
    import nir

    if not dt > 0:
        raise NirError(f"dt must be > 0, got {dt}")
    order = _chain(graph)
    if not isinstance(graph.nodes[order[-1]], nir.Output):
        raise NirError(f"the chain ends at '{order[-1]}' ({type(graph.nodes[order[-1]]).__name__}), not at a nir.Output")
    body = order[1:-1]
    if not body or len(body) % 2:
        raise NirError(f"expected pairs of (Linear|Affine, LIF|IF) between input and output, got {body}")
    wmin, wmax = -(1 << (base.formats.weight_bits - 1)), (1 << (base.formats.weight_bits - 1)) - 1
    sizes: list[int] = []
    weights: list[torch.Tensor] = []
    neuron: dict[str, Any] | None = None
    for syn_name, cell_name in zip(body[::2], body[1::2]):
        syn, cell = graph.nodes[syn_name], graph.nodes[cell_name]
        if not isinstance(syn, (nir.Linear, nir.Affine)):
            raise NirError(f"node '{syn_name}': {type(syn).__name__} is not supported here; expected nir.Linear or nir.Affine")
        if not isinstance(cell, (nir.LIF, nir.IF)):
            raise NirError(f"node '{cell_name}': {type(cell).__name__} is not supported; expected nir.LIF or nir.IF")
        w = np.asarray(syn.weight, dtype=np.float64)
        if w.ndim != 2:
            raise NirError(f"node '{syn_name}': weight has shape {w.shape}; a fully connected layer needs 2 dimensions")
        if isinstance(syn, nir.Affine) and np.any(np.asarray(syn.bias) != 0):
            raise NirError(f"node '{syn_name}': non-zero bias; spikeforge neurons have no bias term")
        if not np.all(np.isfinite(w)) or np.any(w != np.round(w)):
            bad = np.argwhere(~np.isfinite(w) | (w != np.round(w)))[0]
            raise NirError(f"node '{syn_name}': weight[{bad[0]}, {bad[1]}] = {w[tuple(bad)]} is not an integer; "
                           f"quantise to {base.formats.weight_bits}-bit integers before import")
        if w.min() < wmin or w.max() > wmax:
            raise NirError(f"node '{syn_name}': weights span [{w.min():.0f}, {w.max():.0f}], outside the "
                           f"{base.formats.weight_bits}-bit range [{wmin}, {wmax}] (formats.weight_bits)")
        n_out, n_in = w.shape
        if sizes and n_in != sizes[-1]:
            raise NirError(f"node '{syn_name}': {n_in} inputs, but the layer before has {sizes[-1]} neurons")
        if not sizes:
            sizes.append(n_in)
        sizes.append(n_out)
        this = _neuron_params(cell_name, cell, n_out, dt, base)
        if neuron is not None and this != neuron:
            raise NirError(f"node '{cell_name}': neuron parameters {this} differ from the first layer's {neuron}; "
                           "a spikeforge network has one set")
        neuron = this
        weights.append(torch.from_numpy(w.astype(np.int64)))
    assert neuron is not None
    hardware = {}
    if len(base.hardware.neuron_cost) != len(sizes) - 1:  # the base's placement profile is of another network
        hardware["neuron_cost"] = ()
    cfg = base.replace(network={"layers": sizes}, neuron=neuron, hardware=hardware)
    return cfg, weights


def _neuron_params(name: str, cell, n: int, dt: float, base: SpikeforgeConfig) -> dict[str, Any]:
    import nir

    for param in ("r", "v_threshold") + (("tau", "v_leak") if isinstance(cell, nir.LIF) else ()):
        size = np.asarray(getattr(cell, param)).size
        if size not in (1, n):
            raise NirError(f"node '{name}': {param} has {size} values for {n} neurons")
    r = _one_value(name, "r", cell.r)
    thr = _one_value(name, "v_threshold", cell.v_threshold)
    if isinstance(cell, nir.LIF):
        tau = _one_value(name, "tau", cell.tau)
        if _one_value(name, "v_leak", cell.v_leak) != 0:
            raise NirError(f"node '{name}': v_leak must be 0 (the membrane leaks toward 0)")
        if tau <= dt:
            raise NirError(f"node '{name}': tau = {tau} <= dt = {dt} gives beta <= 0")
        beta = 1.0 - dt / tau
        if abs(r - tau / dt) > 1e-9 * max(1.0, abs(r)):
            raise NirError(f"node '{name}': r = {r}, but an input enters the membrane unscaled only with r = tau / dt = {tau / dt}")
    else:
        beta = 1.0
        if abs(r - 1.0 / dt) > 1e-12:
            raise NirError(f"node '{name}': r = {r}, but an input enters the membrane unscaled only with r = 1 / dt = {1 / dt}")
    bb = base.neuron.beta_bits
    scaled = beta * (1 << bb)
    if abs(scaled - round(scaled)) > 1e-9:
        raise NirError(f"node '{name}': beta = 1 - dt/tau = {beta} is not a multiple of 2**-{bb} (neuron.beta_bits)")
    if thr != round(thr) or thr < 1:
        raise NirError(f"node '{name}': v_threshold = {thr} must be a positive integer (membrane units)")
    meta = dict(getattr(cell, "metadata", None) or {})
    reset = meta.get(RESET_KEY)
    v_reset = 0.0 if cell.v_reset is None else _one_value(name, "v_reset", cell.v_reset)
    if reset not in (None, "subtract", "zero"):
        raise NirError(f"node '{name}': metadata {RESET_KEY} = {reset!r}; known: 'subtract', 'zero'")
    if v_reset != 0:
        raise NirError(f"node '{name}': v_reset = {v_reset}; spikeforge resets to 0 (zero) or subtracts the threshold "
                       f"(metadata {RESET_KEY} = 'subtract')")
    out = {"beta": round(scaled) / (1 << bb), "threshold": int(thr), "reset": reset or "zero"}
    if "spikeforge_leak_rounding" in meta:
        out["leak_rounding"] = meta["spikeforge_leak_rounding"]
    if "spikeforge_membrane_floor" in meta:
        out["membrane_floor"] = int(meta["spikeforge_membrane_floor"])
    return out


def to_nir(cfg: SpikeforgeConfig, weights: list[torch.Tensor], dt: float = 1.0):
    """The trained network as a NIR graph (integer weights as floats; reset mode in metadata)."""
    import nir

    n = cfg.neuron
    L = cfg.network.layers
    nodes: dict[str, Any] = {"input": nir.Input({"input": np.array([L[0]])})}
    edges = []
    prev = "input"
    meta = {RESET_KEY: n.reset, "spikeforge_leak_rounding": n.leak_rounding}
    if n.membrane_floor is not None:
        meta["spikeforge_membrane_floor"] = n.membrane_floor
    for k, w in enumerate(weights):
        size = w.shape[0]
        fc, cell = f"fc{k + 1}", f"lif{k + 1}"
        nodes[fc] = nir.Linear(w.detach().cpu().numpy().astype(np.float32))
        full = lambda v: np.full(size, float(v), dtype=np.float32)  # noqa: E731
        if n.beta_q == (1 << n.beta_bits):
            nodes[cell] = nir.IF(r=full(1 / dt), v_threshold=full(n.threshold), v_reset=full(0), metadata=dict(meta))
        else:
            tau = dt / (1 - n.beta)
            nodes[cell] = nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0), v_threshold=full(n.threshold),
                                  v_reset=full(0), metadata=dict(meta))
        edges += [(prev, fc), (fc, cell)]
        prev = cell
    nodes["output"] = nir.Output({"output": np.array([L[-1]])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"generator": "spikeforge", "timesteps": cfg.network.timesteps})


def read_nir(path: str | Path, base: SpikeforgeConfig, dt: float = 1.0) -> tuple[SpikeforgeConfig, list[torch.Tensor]]:
    import nir

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"NIR file {p} does not exist")
    try:
        graph = nir.read(str(p))
    except Exception as e:  # a truncated or foreign file: say which, not a traceback from h5py
        raise NirError(f"{p}: not a readable NIR file ({type(e).__name__}: {e})") from None
    return from_nir(graph, base, dt)


def write_nir(path: str | Path, cfg: SpikeforgeConfig, weights: list[torch.Tensor], dt: float = 1.0) -> None:
    import nir

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), to_nir(cfg, weights, dt))
