from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lightning_prune.run  # noqa: F401  (registers recipes/ as the config group `recipe`)
from lightning_prune import InstantSoupPruning, IterativePruning
from lightning_prune.callbacks.instant_soup.ingredients import DataSource, forked_rng
from tests.callbacks.instant_soup.helpers import FAST, fit_soup
from tests.helpers import REPO, cnn_classifier


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_ingredients": 0}, "num_ingredients must be an integer >= 1, got 0"),
        ({"num_ingredients": -3}, "num_ingredients must be an integer >= 1, got -3"),
        ({"num_ingredients": 2.5}, "num_ingredients must be an integer >= 1"),
        ({"target_sparsity": None}, r"target_sparsity must be in \(0, 1\) for variant='isp', got None"),
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \(0, 1\)"),
        ({"step_ratio": 0.0}, r"step_ratio must be in \(0, 1\), got 0.0"),
        ({"variant": "soup"}, r"variant must be one of \['isp', 'ims'\], got 'soup'"),
        ({"combine": "mean"}, "combine must be one of"),
        ({"loss": "hinge"}, "loss must be one of"),
        ({"importance": "snip"}, "importance must be one of"),
        ({"scope": "local"}, "scope must be one of"),
        ({"lookahead_steps": -1}, "lookahead_steps must be an integer >= 0, got -1"),
        ({"warmup_steps": -5}, "warmup_steps must be an integer >= 0"),
        ({"calibration_steps": 0}, "calibration_steps must be an integer >= 1 or None, got 0"),
        ({"lr_multipliers": []}, "lr_multipliers must be a non-empty list"),
        ({"lr_multipliers": 2.0}, "lr_multipliers must be a non-empty list"),
        ({"lr_multipliers": [1.0, 0.0]}, r"lr_multipliers must be a non-empty list of finite numbers > 0"),
        ({"weight_decay_multipliers": [-1.0]}, r"weight_decay_multipliers must be .* >= 0"),
        ({"copy_sparsities": [1.0]}, r"copy_sparsities must be a non-empty list of fractions in \[0, 1\)"),
        ({"variant": "ims"}, "target_sparsity must be None for variant='ims'"),
        ({"include_types": "Linear"}, "include_types must be a non-empty list"),
        ({"target_sparsity": "0.8"}, r"target_sparsity must be in \(0, 1\), got '0.8'"),
        ({"step_ratio": "0.2"}, r"step_ratio must be in \(0, 1\), got '0.2'"),
        ({"num_ingredients": "3"}, "num_ingredients must be an integer >= 1, got '3'"),
        ({"lookahead_steps": "10"}, "lookahead_steps must be an integer >= 0, got '10'"),
        ({"calibration_steps": "5"}, "calibration_steps must be an integer >= 1 or None, got '5'"),
        ({"warmup_steps": "0"}, "warmup_steps must be an integer >= 0, got '0'"),
        ({"seed": "1"}, "seed must be an integer >= 0, got '1'"),
        ({"lr_multipliers": ["1.0"]}, "lr_multipliers must be a non-empty list of finite numbers > 0"),
        ({"weight_decay_multipliers": "1.0"}, "weight_decay_multipliers must be a non-empty list"),
        ({"copy_sparsities": ["0.5"]}, r"copy_sparsities must be a non-empty list of fractions in \[0, 1\)"),
        ({"export_dir": 3}, r"export_dir must be a path \(str\) or None, got 3"),
    ],
)
def test_instant_soup_bad_arguments(kwargs, match):
    arguments = {"target_sparsity": 0.8, **kwargs}
    with pytest.raises(ValueError, match=match):
        InstantSoupPruning(**arguments)


def test_instant_soup_state_key():
    key = InstantSoupPruning(target_sparsity=0.8).state_key
    assert key == "InstantSoupPruning{'variant': 'isp', 'target_sparsity': 0.8, 'include_names': None}"
    assert key != InstantSoupPruning(target_sparsity=0.5).state_key


def test_instant_soup_reaches_exact_target_and_logs_ingredient_cost(digits, trainer_kwargs, tmp_path: Path):
    soup, model, trainer = fit_soup(
        digits, trainer_kwargs, target_sparsity=0.8, step_ratio=0.4, export_dir=str(tmp_path)
    )
    state = soup.pruning_state
    assert state.step == state.num_steps == 4  # 0.4, 0.64, 0.784, 0.8
    names = list(soup._masks.masks)
    total = sum(model.get_parameter(n).numel() for n in names)
    zeros = sum(int((model.get_parameter(n) == 0).sum()) for n in names)
    assert zeros / total == pytest.approx(0.8, abs=1 / total)  # exact: masks held through training
    assert state.sparsity == pytest.approx(0.8, abs=1 / total)
    assert [r["global_step"] for r in state.history] == [3, 9, 18, 30]  # t, then +2t, +3t, +4t
    metrics = trainer.callback_metrics
    assert float(metrics["soup/ingredient_steps"]) == 4 * 2 * 3
    assert float(metrics["soup/mask_steps"]) == 30 + 24
    assert float(metrics["prune/sparsity"]) == pytest.approx(0.8, abs=1e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())["instant_soup"]
    assert summary["ingredient_steps"] == 24
    assert summary["ingredient_s"] > 0
    assert summary["mask_steps"] == 54
    assert len(summary["history"]) == 4
    assert all(r["superposed_sparsity"] <= r["sparsity"] + 1e-9 for r in summary["history"])  # a union is denser
    assert (tmp_path / "pruned_model.pt").exists()
    # the end-of-run contract: the summary's sparsity is the one measured on the weights, the schedule finished
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(zeros / total)
    assert summary["finished"] is True
    assert "shortfall" not in summary


def test_ingredients_are_deterministic_per_seed(digits, trainer_kwargs):
    masks = {}
    for run, seed in [("a", 0), ("b", 0), ("c", 1)]:
        soup, _, _ = fit_soup(digits, trainer_kwargs, max_epochs=1, target_sparsity=0.5, step_ratio=0.3, seed=seed)
        masks[run] = soup._masks.state_dict()
    for name in masks["a"]:
        assert torch.equal(masks["a"][name], masks["b"][name])
    assert any(not torch.equal(masks["a"][n], masks["c"][n]) for n in masks["a"])


def test_ingredient_batches_are_seeded_and_leave_the_global_generator_alone(digits):
    source = DataSource.from_loader(digits.train_dataloader(), "training")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    draws = []
    for seed in (7, 7, 8):
        with forked_rng(seed, torch.device("cpu")) as generator:
            draws.append([y for _, y in source.random_batches(3, generator, torch.device("cpu"))])
    torch.testing.assert_close(torch.rand(3), expected_next)
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not all(torch.equal(a, b) for a, b in zip(draws[0], draws[2]))
    assert [len(y) for y in draws[0]] == [source.batch_size] * 3


class _StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_instant_soup_resume_mid_soup_equals_uninterrupted(digits, trainer_kwargs, tmp_path: Path):
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    options = {"target_sparsity": 0.8, "step_ratio": 0.4, "calibration_steps": 4}
    full, full_model, full_trainer = fit_soup(digits, kwargs, max_epochs=4, **options)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    with pytest.warns(UserWarning, match="ended before its schedule finished"):
        half, _, _ = fit_soup(digits, kwargs, max_epochs=4, callbacks=[checkpoint, _StopAfter(1)], **options)
    assert 0 < half.pruning_state.step < half.pruning_state.num_steps  # stopped mid-soup
    loaded = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert any(key.startswith("InstantSoupPruning") for key in loaded["callbacks"])
    resumed, resumed_model, resumed_trainer = fit_soup(
        digits, kwargs, max_epochs=4, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), **options
    )
    assert resumed.pruning_state.step == full.pruning_state.step == 4
    for name, mask in full._masks.state_dict().items():
        assert torch.equal(mask, resumed._masks.masks[name])
    assert resumed.ingredient_steps == full.ingredient_steps
    torch.testing.assert_close(resumed_trainer.callback_metrics["val/acc"], full_trainer.callback_metrics["val/acc"])
    for name, param in full_model.named_parameters():
        torch.testing.assert_close(resumed_model.get_parameter(name), param)


def test_instant_model_soup_mixes_on_validation_and_stays_dense(digits, trainer_kwargs):
    soup, _, _ = fit_soup(
        digits, trainer_kwargs, max_epochs=1, variant="ims", target_sparsity=None, warmup_steps=5, num_ingredients=3
    )
    (record,) = soup.pruning_state.history
    assert record["global_step"] == 5
    assert len(record["mix_alphas"]) == 3
    assert all(0.0 <= a <= 1.0 for a in record["mix_alphas"])
    assert record["val_loss_after"] <= record["val_loss_before"]  # alpha = 0 is always a candidate
    assert soup.pruning_state.sparsity == 0.0
    assert soup.ingredient_steps == 9
    summary = json.loads((Path(trainer_kwargs["default_root_dir"]) / "summary.json").read_text())["instant_soup"]
    assert summary["finished"] is True  # dense: no sparsity reported, the measured one exported
    assert summary["sparsity"] == summary["measured"]["sparsity"] == pytest.approx(0.0, abs=1e-3)


def test_instant_soup_refuses_a_trainer_too_short_for_its_rounds(digits, trainer_kwargs):
    with pytest.raises(ValueError, match="last round runs at optimizer step 30"):
        fit_soup(digits, trainer_kwargs, max_epochs=1, target_sparsity=0.8, step_ratio=0.4)


@pytest.mark.parametrize(
    ("recipe", "key", "expected"),
    [("instant_soup", "instant_soup", InstantSoupPruning), ("imp_rewind", "iterative", IterativePruning)],
)
def test_soup_recipes_compose_and_instantiate(recipe, key, expected):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[f"recipe={recipe}"])
    callback = instantiate(cfg.callbacks[key])
    assert isinstance(callback, expected)
    assert callback.target_sparsity == 0.8
    if recipe == "imp_rewind":
        needed = callback.warmup_epochs + 8 * callback.finetune_epochs  # fixed_ratio(0.8, 0.2) has 8 steps
        assert callback.rewind_epoch == 1
        assert cfg.trainer.max_epochs == needed


class _CountingSoup(InstantSoupPruning):
    """Counts the ingredients this rank trains."""

    cooked = 0

    def _cook(self, *args, **kwargs):
        self.cooked += 1
        return super()._cook(*args, **kwargs)


class _RanksAgree(Callback):
    """Fails the fit unless every rank holds rank 0's masks and only rank 0 trained ingredients."""

    def on_train_end(self, trainer, pl_module):
        soup = next(cb for cb in trainer.callbacks if isinstance(cb, _CountingSoup))
        flat = torch.cat([m.flatten() for m in soup._masks.masks.values()]).float()
        masks = trainer.strategy.all_gather(flat)
        cooked = trainer.strategy.all_gather(torch.tensor(soup.cooked))
        assert torch.equal(masks[0], masks[1]), "ranks hold different masks"
        assert cooked.tolist() == [soup.pruning_state.num_steps * soup.num_ingredients, 0], cooked.tolist()


def test_instant_soup_decides_on_rank_zero_under_ddp(digits, trainer_kwargs, tmp_path: Path):
    pl.seed_everything(0, verbose=False)
    model = cnn_classifier(widths=(8, 8, 16, 16))
    soup = _CountingSoup(**{**FAST, "target_sparsity": 0.5, "step_ratio": 0.3})
    kwargs = {**trainer_kwargs, "devices": 2, "strategy": "ddp_spawn"}
    trainer = pl.Trainer(max_epochs=2, callbacks=[soup, _RanksAgree()], **kwargs)
    trainer.fit(model, datamodule=digits)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1][:-1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_instant_soup_on_cuda_reaches_target_and_is_deterministic(digits, trainer_kwargs):
    kwargs = {**trainer_kwargs, "accelerator": "gpu", "devices": 1}
    first, model, _ = fit_soup(digits, kwargs, max_epochs=1, target_sparsity=0.5, step_ratio=0.3)
    second, _, _ = fit_soup(digits, kwargs, max_epochs=1, target_sparsity=0.5, step_ratio=0.3)
    assert first.pruning_state.sparsity == pytest.approx(0.5, abs=1e-3)
    assert all(torch.equal(first._masks.masks[n], second._masks.masks[n]) for n in first._masks.masks)
    assert all(model.get_parameter(n).is_cuda for n in first._masks.masks)


def test_ingredients_run_under_a_progress_bar(digits, trainer_kwargs, monkeypatch):
    import lightning_prune.callbacks.instant_soup.rounds as rounds_module

    seen, original = [], rounds_module.track

    def recording_track(items, description, **kwargs):
        seen.append(description)
        return original(items, description, **kwargs)

    monkeypatch.setattr(rounds_module, "track", recording_track)
    soup, _, _ = fit_soup(digits, trainer_kwargs, target_sparsity=0.6, step_ratio=0.4)
    assert seen
    assert all("ingredients" in description for description in seen)
    assert len(seen) == soup.pruning_state.num_steps  # one bar per round
