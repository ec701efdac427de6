from __future__ import annotations

import json
from pathlib import Path

from lightning_prune.bench.__main__ import dispatch

ARM_KEYS = {"test_acc", "gen_gap", "cer", "kept_params", "per_megabatch", "wall_s"}


def test_app_quick_benchmark_writes_the_promised_json(tmp_path: Path) -> None:
    out = tmp_path / "app.json"
    assert dispatch(["app", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "digits"
    for arm in ("dense", "app", "oneshot"):
        assert set(result[arm]) >= ARM_KEYS, arm
        assert len(result[arm]["per_megabatch"]) == result["setup"]["num_megabatches"]
        assert 0 <= result[arm]["test_acc"] <= 1
        assert -1 <= result[arm]["gen_gap"] <= 1
    assert result["dense"]["kept_params"] == result["dense"]["params"]
    # APP and one-shot end at the same size, about 1/3 of the pruned layers' weights
    assert result["app"]["kept_params"] == result["oneshot"]["kept_params"] < result["dense"]["kept_params"]
    assert [r["sparsity"] for r in result["oneshot"]["per_megabatch"]] == [result["oneshot"]["sparsity"]] * 3
    assert "environment" in result
