"""Sharded strategies: FSDP cannot run on this CPU, so every pruner refuses it (and its kin) at setup."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

from tests.faults.setups import PRUNERS, SETUPS


def test_fsdp_cannot_run_on_a_cpu_here():
    """The measured reason no pruner is tested under FSDP: Lightning 2.6 refuses it without a GPU."""
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        pl.Trainer(accelerator="cpu", devices=2, strategy="fsdp")


@pytest.mark.parametrize("kind", [FSDPStrategy, ModelParallelStrategy], ids=["fsdp", "model_parallel"])
@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_refuses_a_sharded_strategy_at_setup(name, kind):
    setup = SETUPS[name]
    pruner = setup.make()
    trainer = SimpleNamespace(strategy=kind(), callbacks=[pruner])  # a real Trainer cannot hold it on a CPU
    with pytest.raises(ValueError, match=rf"{name} does not support strategy={kind.__name__}: .*strategy='ddp'"):
        pruner.setup(trainer, setup.model(), "fit")
