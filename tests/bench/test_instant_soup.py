"""bench instant_soup: a quick composed run writes every arm's figures, the claims and its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_prune.bench.__main__ import dispatch
from lightning_prune.bench._compose import compose_benchmark


def test_instant_soup_quick_writes_arms_claims_and_provenance(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert dispatch(["instant_soup", "scale=quick", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["dataset"] in ("mnist", "digits")  # MNIST when ../shared/data/mnist exists
    assert result["arms"] == ["oneshot", "isp", "imp"]
    (row,) = result["results"]
    assert row["sparsity"] == 0.8
    for arm in ("isp", "imp", "oneshot"):
        assert set(row[arm]) >= {"test_acc", "wall_s", "mask_steps", "total_steps", "test_acc_per_seed"}
        assert 0.0 <= row[arm]["test_acc"] <= 1.0
        assert row[arm]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert row["oneshot"]["mask_steps"] == 0
    assert row["isp"]["mask_steps"] > row["isp"]["ingredient_steps"] > 0  # ingredient steps are counted
    assert row["imp"]["mask_steps"] > 0
    assert set(row["claims"]) >= {"isp_ge_imp_minus_0.5pt", "isp_wall_le_imp_fifth", "isp_gt_oneshot"}
    provenance = result["provenance"]
    assert provenance["complete"] is True
    assert provenance["command"].startswith("python -m lightning_prune.bench instant_soup scale=quick")
    assert provenance["config"]["isp"]["num_ingredients"] == 2


def test_no_denoising_ablation_is_isp_with_n_zero() -> None:
    cfg = compose_benchmark("instant_soup", ["ablation=no_denoising"])
    assert list(cfg.arms) == ["isp"]
    assert (cfg.isp.num_ingredients, cfg.isp.lookahead_steps) == (1, 0)
    assert cfg.isp.step_ratio == compose_benchmark("instant_soup").isp.step_ratio  # everything else as in main


@pytest.mark.slow
def test_transfer_setting_pretrains_on_some_digits_and_prunes_on_the_others(tmp_path: Path) -> None:
    out = tmp_path / "transfer.json"
    assert dispatch(["instant_soup", "setting=transfer_mnist", "scale=quick", "budget_epochs=3", f"out={out}"]) == 0
    result = json.loads(out.read_text())
    assert result["setting"] == "transfer-mnist"
    assert result["model"].endswith("-> 5")  # five classes on each side of the transfer
    (row,) = result["results"]
    assert row["setting"] == "transfer-mnist"
    assert set(row) >= {"isp", "imp", "isp_n0", "oneshot"}
    assert row["isp_n0"]["mask_steps"] > 0
    assert "ingredient_steps" in row["isp_n0"]
    assert row["isp_n0"]["ingredient_steps"] == 0  # N = 0: the ingredients never train
    assert "soup_minus_n0_pt" in row["claims"]
    cfg = compose_benchmark("instant_soup", ["setting=transfer_mnist"])
    assert list(cfg.transfer.pretrain_classes) == [0, 1, 2, 3, 4]
    assert list(cfg.sparsities) == [0.8, 0.9, 0.95]
    assert len(cfg.seeds) == 5


def test_transfer_bert_setting_reads_digits_as_pixel_tokens() -> None:
    from lightning_prune.bench.instant_soup.models import PixelTokenBert, network

    cfg = compose_benchmark("instant_soup", ["setting=transfer_bert"])
    assert cfg.setting == "transfer-bert"
    net = network(cfg, (1, 8, 8), 5)
    assert isinstance(net, PixelTokenBert)
    assert net.bert.config.vocab_size == cfg.bert.levels
    logits = net(torch.rand(3, 1, 8, 8))
    assert logits.shape == (3, 5)
