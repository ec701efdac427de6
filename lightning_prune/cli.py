"""LightningCLI entry point: configure the callbacks the way a Lightning project already does, in YAML.

    python -m lightning_prune.cli fit --config examples/cli/iterative.yaml

``model`` and ``data`` take any LightningModule and LightningDataModule by ``class_path`` (the zoo's
:class:`~lightning_prune.models.Classifier`, :class:`~lightning_prune.data.DigitsDataModule`, or yours);
``trainer.callbacks`` takes the pruning callbacks by ``class_path`` (``lightning_prune.IterativePruning``)
with their constructor arguments as ``init_args``. Each method has a documented config under
``examples/cli/``. Needs the ``cli`` extra (``jsonargparse[signatures]``).
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.cli import ArgsType, LightningCLI

# lightning 2.6 + torch 2.13 warn about a pytree internal on every fit; it says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def main(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (``sys.argv`` when ``None``), build model, data and Trainer, and run the subcommand.

    A bad ``class_path``, a misspelled or mistyped ``init_args`` key, or a value a constructor refuses fails
    before training, naming it (jsonargparse's usage error, or the constructor's ``ValueError``).
    """
    return LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    # The callbacks' progress lines (pruning steps, gate verdicts, exports), as the Hydra app shows them.
    logging.basicConfig(format="[%(name)s] %(message)s")
    logging.getLogger("lightning_prune").setLevel(logging.INFO)
    main()
