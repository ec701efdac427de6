"""Small builders shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.optim.optimizer import register_optimizer_step_pre_hook

from lightning_prune.models import Classifier, ResNet, SmallCNN

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"


def cnn_classifier(widths: tuple[int, ...] = (16, 16, 32, 32), **kwargs: object) -> Classifier:
    return Classifier(SmallCNN((1, 8, 8), 10, widths=widths), 10, (1, 8, 8), **kwargs)


def resnet_classifier(
    blocks: tuple[int, ...] = (2, 2), widths: tuple[int, ...] = (16, 32), **kwargs: object
) -> Classifier:
    return Classifier(ResNet((1, 8, 8), 10, blocks=blocks, widths=widths), 10, (1, 8, 8), **kwargs)


@contextmanager
def warnings_before_first_step(everything: list[str] | None = None) -> Iterator[list[str]]:
    """The messages of the warnings emitted before the first ``step()`` of any torch optimizer inside the block.

    Every warning is recorded (``always``: none hidden by an earlier identical one); a global optimizer pre-hook
    notes how many there were when the first step began. The list is filled when the block ends, and
    ``everything``, when given, with every message of the block.
    """
    early: list[str] = []
    at_first_step: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def note(*args: Any) -> None:
            if not at_first_step:
                at_first_step.append(len(caught))

        handle = register_optimizer_step_pre_hook(note)
        try:
            yield early
        finally:
            handle.remove()
            early.extend(str(w.message) for w in caught[: at_first_step[0] if at_first_step else len(caught)])
            if everything is not None:
                everything.extend(str(w.message) for w in caught)
