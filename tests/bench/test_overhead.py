import json

from lightning_prune.bench.__main__ import available, dispatch


def test_overhead_quick_writes_the_issue_keys(tmp_path):
    out = tmp_path / "overhead.json"
    assert dispatch(["overhead", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] in {"mnist", "digits"}
    assert set(result["step_ms"]) == {"dense", "noop_callback", "masked", "modelpruning"}
    assert result["masked_over_dense"] > 0
    assert result["masked_over_modelpruning"] > 0
    assert result["masked_over_noop_callback"] > 0
    # Both pruning arms really held the sparsity while the dense arm stayed dense.
    assert result["sparsity_held"]["masked"] >= 0.79
    assert result["sparsity_held"]["modelpruning"] >= 0.79
    assert result["sparsity_held"]["dense"] < 0.01
    assert result["sparsity_held"]["noop_callback"] < 0.01


def test_dispatch_lists_benchmarks_on_a_bad_name(capsys):
    assert dispatch(["nope"]) == 2
    assert "overhead" in capsys.readouterr().out
    assert "overhead" in available()
