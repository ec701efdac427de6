"""What a run ends with: the summary says what the weights are, a short run says so, a NaN model is never exported.

Every pruner, on its small real run (tests/faults/setups.py): a normal run reports exactly what is measured on
its export and ``finished: true``; a run the Trainer stops early warns and says ``finished: false`` with the
reason; weights gone NaN after the last step (also with ``on_nonfinite="skip"``) fail the fit before anything
is exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.faults.setups import (
    PRUNERS,
    SETUPS,
    PoisonAtTrainEnd,
    Setup,
    StopAt,
    measure,
    nan_loss_from,
    trainer,
)

SKIPPING = [name for name in PRUNERS if "on_nonfinite" in SETUPS[name].make().__dict__]  # IterativePruning, Block
TOLERANCE = {"sparsity": 1e-3}  # counts are exact


def _section(root: Path, setup: Setup) -> dict:
    return json.loads((root / "summary.json").read_text())[setup.section]


def _assert_report_is_measured(setup: Setup, pruner, model, root: Path) -> dict:
    """The section's figures and its ``measured`` block equal what the exported weights say; returns the section."""
    section = _section(root, setup)
    exported = torch.load(root / "pruned_model.pt", weights_only=True)["state_dict"]
    torch.testing.assert_close(exported, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    truth = measure(setup, pruner, exported)
    reported = section.get("measured")
    assert reported, f"no 'measured' block in summary[{setup.section!r}]: {sorted(section)}"
    assert set(reported) <= set(truth), f"measured keys the catalogue cannot check: {set(reported) - set(truth)}"
    assert {"sparsity", "params"} & set(reported) & set(section), "the section reports neither sparsity nor params"
    for key, value in reported.items():
        assert value == pytest.approx(truth[key], abs=TOLERANCE.get(key, 0)), key
        if key in section:
            assert section[key] == pytest.approx(truth[key], abs=TOLERANCE.get(key, 0)), key
    assert pruner.pruning_state.sparsity == pytest.approx(truth["sparsity"], abs=TOLERANCE["sparsity"])
    return section


def _assert_nothing_exported(root: Path, setup: Setup) -> None:
    assert not (root / "pruned_model.pt").exists()
    summary = json.loads((root / "summary.json").read_text()) if (root / "summary.json").exists() else {}
    assert setup.section not in summary


@pytest.mark.parametrize("name", PRUNERS)
def test_normal_run_reports_what_the_weights_are(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = setup.make(), setup.model()
    trainer(setup, tmp_path, trainer_kwargs, [pruner]).fit(model, datamodule=setup.data())
    section = _assert_report_is_measured(setup, pruner, model, tmp_path)
    assert section["finished"] is True
    assert "shortfall" not in section
    assert pruner.pruning_state.step > 0


@pytest.mark.parametrize("name", PRUNERS)
def test_schedule_cut_short_warns_and_says_unfinished(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    pruner, model = setup.make(), setup.model()
    run = trainer(setup, tmp_path, trainer_kwargs, [pruner, StopAt(setup.stop_at)])
    with pytest.warns(UserWarning, match=f"{name} ended before its schedule finished"):
        run.fit(model, datamodule=setup.data())
    assert run.global_step == setup.stop_at
    section = _assert_report_is_measured(setup, pruner, model, tmp_path)
    assert section["finished"] is False
    assert "not reached" in section["shortfall"]
    assert f"step {setup.stop_at}" in section["shortfall"]


@pytest.mark.parametrize("name", PRUNERS)
def test_weights_nan_after_the_last_step_are_not_exported(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    poison = PoisonAtTrainEnd()
    run = trainer(setup, tmp_path, trainer_kwargs, [setup.make(), poison])
    with pytest.raises(FloatingPointError, match="not finite") as error:
        run.fit(setup.model(), datamodule=setup.data())
    assert poison.name
    assert poison.name in str(error.value)  # names the layer
    _assert_nothing_exported(tmp_path, setup)


def _fit_diverging(setup: Setup, root: Path, trainer_kwargs: dict, from_epoch: int, **pruner_kwargs) -> str:
    model = nan_loss_from(setup.model(), from_epoch)
    run = trainer(setup, root, trainer_kwargs, [setup.make(**pruner_kwargs)])
    with pytest.raises(FloatingPointError, match="not finite") as error:
        run.fit(model, datamodule=setup.data())
    names = [name for name, _ in model.named_parameters()]
    assert any(name in str(error.value) for name in names), str(error.value)  # names a layer
    _assert_nothing_exported(root, setup)
    return str(error.value)


@pytest.mark.parametrize("name", PRUNERS)
def test_loss_nan_after_the_last_step_fails_before_export(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    _fit_diverging(setup, tmp_path, trainer_kwargs, setup.last_epoch)


@pytest.mark.parametrize("name", SKIPPING)
def test_loss_nan_after_the_last_step_fails_also_when_skipping(name, tmp_path, trainer_kwargs):
    setup = SETUPS[name]
    _fit_diverging(setup, tmp_path, trainer_kwargs, setup.last_epoch, on_nonfinite="skip")


@pytest.mark.parametrize("name", SKIPPING)
def test_loss_nan_mid_schedule_with_skipped_steps_fails_before_export(name, tmp_path, trainer_kwargs):
    """The steps after the divergence are skipped (on_nonfinite="skip"), and the all-NaN model is still refused."""
    setup = SETUPS[name]
    _fit_diverging(setup, tmp_path, trainer_kwargs, 0, on_nonfinite="skip")
