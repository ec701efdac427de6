from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_prune.bench.soup import main
from tests.helpers import MNIST_DIR


@pytest.mark.skipif(not MNIST_DIR.exists(), reason="needs MNIST IDX files in ../shared/data/mnist")
def test_soup_quick_writes_the_issue_keys(tmp_path: Path):
    out = tmp_path / "soup.json"
    assert main(["--quick", "--sparsities", "0.8", "--data-dir", str(MNIST_DIR), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "mnist"
    (row,) = result["results"]
    assert row["sparsity"] == 0.8
    for arm in ("isp", "imp", "oneshot", "isp_n0"):
        assert set(row[arm]) >= {"test_acc", "wall_s", "mask_steps"}
        assert 0.0 <= row[arm]["test_acc"] <= 1.0
        assert row[arm]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert row["oneshot"]["mask_steps"] == 0
    assert row["isp"]["mask_steps"] > row["isp_n0"]["mask_steps"]  # ingredient steps are counted
    assert row["imp"]["mask_steps"] > 0
    assert set(row["claims"]) >= {"isp_ge_imp_minus_0.5pt", "isp_wall_le_imp_fifth", "isp_gt_oneshot"}
