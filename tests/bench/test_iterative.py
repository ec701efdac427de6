"""The iterative benchmark (what holding masks costs per step) at scale=quick: every arm runs and holds its sparsity."""

import json

from lightning_prune.bench.__main__ import available, dispatch


def test_iterative_quick_writes_the_promised_keys(tmp_path):
    out = tmp_path / "iterative.json"
    assert dispatch(["iterative", "scale=quick", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits"
    assert set(result["step_ms"]) == {"dense", "noop_callback", "masked", "modelpruning"}
    assert set(result["models"]) == {"cnn", "mlp"}
    assert result["masked_over_dense"] > 0
    assert result["masked_over_modelpruning"] > 0
    assert result["masked_over_noop_callback"] > 0
    # Both pruning arms really held the sparsity while the dense arms stayed dense.
    assert result["sparsity_held"]["masked"] >= 0.79
    assert result["sparsity_held"]["modelpruning"] >= 0.79
    assert result["sparsity_held"]["dense"] < 0.01
    assert result["sparsity_held"]["noop_callback"] < 0.01
    assert result["torch_threads"] == 1
    provenance = result["provenance"]
    assert provenance["command"] == f"python -m lightning_prune.bench iterative scale=quick out={out}"
    assert provenance["complete"] is True
    assert provenance["config"]["rounds"] == 1


def test_dispatch_lists_the_iterative_benchmark_on_a_bad_name(capsys):
    assert dispatch(["nope"]) == 2
    assert "iterative" in capsys.readouterr().out
    assert "iterative" in available()
