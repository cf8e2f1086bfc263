"""NIR in and out: a trained network round-trips bit for bit (and keeps training identically), a
subtract-reset network carries its mode, and every unsupported graph is refused naming the node."""

import numpy as np
import nir
import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import load_config
from spikeforge.golden import GoldenBackend, model
from spikeforge.nir_io import RESET_KEY, NirError, from_nir, read_nir, to_nir, write_nir
from spikeforge.train import train

BASE = load_config("configs/digits.toml")


def test_round_trip_through_a_file_is_exact_and_trains_the_same(tmp_path):
    cfg = BASE.replace(network={"layers": [64, 20, 10]}, training={"epochs": 1})
    w = model.init_weights(cfg, seed=3)
    write_nir(tmp_path / "net.nir", cfg, w)
    cfg2, w2 = read_nir(tmp_path / "net.nir", BASE)
    assert cfg2.network.layers == (64, 20, 10) and cfg2.neuron == cfg.neuron
    assert all(torch.equal(a, b) for a, b in zip(w, w2))
    a = train(cfg, backend=GoldenBackend(cfg, w), samples=32, epochs=1, progress=False).report["weights_sha256"]
    b = train(cfg2, backend=GoldenBackend(cfg2, w2), samples=32, epochs=1, progress=False).report["weights_sha256"]
    assert a == b


def test_reset_modes():
    w = model.init_weights(BASE)
    g = to_nir(BASE, w)
    assert g.nodes["lif1"].metadata[RESET_KEY] == "subtract"
    assert from_nir(g, BASE)[0].neuron.reset == "subtract"
    for node in ("lif1", "lif2"):
        g.nodes[node].metadata.pop(RESET_KEY)
    assert from_nir(g, BASE)[0].neuron.reset == "zero"  # NIR's own meaning: reset to v_reset = 0
    g.nodes["lif1"].v_reset = np.full(128, 5.0)
    with pytest.raises(NirError, match="node 'lif1': v_reset = 5.0"):
        from_nir(g, BASE)


def test_if_neurons_for_beta_one():
    cfg = BASE.replace(neuron={"beta": 1.0}, network={"layers": [64, 8, 10]})
    g = to_nir(cfg, model.init_weights(cfg))
    assert isinstance(g.nodes["lif1"], nir.IF)
    assert from_nir(g, BASE)[0].neuron.beta == 1.0


def _graph(changes=None):
    w = model.init_weights(BASE.replace(network={"layers": [64, 6, 10]}))
    g = to_nir(BASE.replace(network={"layers": [64, 6, 10]}), w)
    for (node, attr), value in (changes or {}).items():
        setattr(g.nodes[node], attr, value)
    return g


@pytest.mark.parametrize("changes, msg", [
    ({("fc1", "weight"): np.full((6, 64), 0.5, dtype=np.float32)}, r"node 'fc1': weight\[0, 0\] = 0.5 is not an integer"),
    ({("fc1", "weight"): np.full((6, 64), 300.0, dtype=np.float32)}, r"node 'fc1': weights span .* 8-bit range"),
    ({("lif1", "tau"): np.array([8.0, 8, 8, 8, 8, 9], dtype=np.float32)}, r"node 'lif1': tau differs between neurons"),
    ({("lif1", "r"): np.full(6, 1.0, dtype=np.float32)}, r"node 'lif1': r = 1.0, but .* r = tau / dt"),
    ({("lif1", "v_leak"): np.full(6, 2.0, dtype=np.float32)}, r"node 'lif1': v_leak must be 0"),
    ({("lif1", "v_threshold"): np.full(6, 10.5, dtype=np.float32)}, r"node 'lif1': v_threshold = 10.5"),
    ({("lif2", "v_threshold"): np.full(10, 100.0, dtype=np.float32)}, r"node 'lif2': neuron parameters .* differ"),
])
def test_unsupported_parameters_name_the_node(changes, msg):
    with pytest.raises(NirError, match=msg):
        from_nir(_graph(changes), BASE)


def test_unsupported_nodes_and_shapes():
    g = _graph()
    g.nodes["fc1"] = nir.Affine(np.ones((6, 64), dtype=np.float32), np.ones(6, dtype=np.float32))
    with pytest.raises(NirError, match="node 'fc1': non-zero bias"):
        from_nir(g, BASE)
    g = _graph()
    g.nodes["fc2"] = nir.Conv1d(None, np.ones((10, 6, 1)), 1, 0, 1, 1, np.zeros(10))
    with pytest.raises(NirError, match="node 'fc2': Conv1d is not supported"):
        from_nir(g, BASE)
    g = _graph()
    g.nodes["lif1"] = nir.CubaLIF(tau_syn=np.ones(6), tau_mem=np.ones(6), r=np.ones(6), v_leak=np.zeros(6),
                                  v_threshold=np.ones(6))
    with pytest.raises(NirError, match="node 'lif1': CubaLIF is not supported"):
        from_nir(g, BASE)
    g = _graph()
    g.edges.append(("fc1", "output"))
    with pytest.raises(NirError, match="node 'fc1' feeds 2 nodes"):
        from_nir(g, BASE)


def test_cli_map_and_train_with_nir(tmp_path, capsys):
    out = tmp_path / "trained.nir"
    assert main(["train", "--samples", "16", "--epochs", "1", "--quiet", "--nir-out", str(out)]) == 0
    assert main(["map", "--nir", str(out), "--cores", "3"]) == 0
    assert "L1[0:" in capsys.readouterr().out
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    assert main(["map", "--nir", str(tmp_path / "junk.nir")]) == 2
    assert "not a readable NIR file" in capsys.readouterr().err
    assert main(["train", "--backend", "rtl", "--nir-out", str(out)]) == 2
