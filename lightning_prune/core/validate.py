"""Constructor-argument checks shared by every callback: one wording for every refusal.

Each check names the argument, the value it got and what is allowed, so a bad value in a recipe or a
LightningCLI YAML is fixed from the message alone (Hydra appends the config key).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool`` (YAML ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool``.

    Example::

        >>> is_number(0.5), is_number(True), is_number(float("nan")), is_number("0.5")
        (True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_int(name: str, value: Any, low: int, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= low`` (or ``None`` when ``optional``).

    Example::

        >>> check_int("finetune_epochs", -1, low=0)
        Traceback (most recent call last):
        ...
        ValueError: finetune_epochs must be an integer >= 0, got -1
    """
    if optional and value is None:
        return
    if not is_int(value) or value < low:
        suffix = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {low}{suffix}, got {value!r}")


def check_fraction(name: str, value: Any, closed_low: bool = False, closed_high: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in (0, 1), with the ends included as asked.

    Example::

        >>> check_fraction("target_sparsity", 1.0)
        Traceback (most recent call last):
        ...
        ValueError: target_sparsity must be in (0, 1), got 1.0
    """
    inside = (
        is_number(value) and (value >= 0 if closed_low else value > 0) and (value <= 1 if closed_high else value < 1)
    )
    if not inside:
        interval = f"{'[' if closed_low else '('}0, 1{']' if closed_high else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def check_positive_list(name: str, values: Any, strictly: bool = True) -> None:
    """Raise ``ValueError`` unless ``values`` is a non-empty list of finite numbers ``> 0`` (``>= 0``)."""
    if (
        not isinstance(values, list)
        or not values
        or not all(is_number(v) and (v > 0 or (not strictly and v == 0)) for v in values)
    ):
        bound = "> 0" if strictly else ">= 0"
        raise ValueError(f"{name} must be a non-empty list of finite numbers {bound}, got {values!r}")


def check_output_dir(name: str, path: Any) -> str | None:
    """``path`` with ``~`` expanded, refused at once when it cannot become a writable directory.

    A bad export path otherwise fails only after all training, as a bare OS error. Nothing is created here.

    Raises:
        ValueError: naming the argument, the path and what is in the way.
    """
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str) or None, got {path!r}")
    expanded = Path(path).expanduser()
    if expanded.exists() and not expanded.is_dir():
        raise ValueError(f"{name}={str(path)!r} is an existing file, not a directory; give a directory path")
    _check_creatable(name, path, expanded)
    return str(expanded)


def check_output_file(name: str, path: Any) -> str | None:
    """Like :func:`check_output_dir` for a file to write (``lut_path``): not a directory, its folder creatable."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a path (str) or None, got {path!r}")
    expanded = Path(path).expanduser()
    if expanded.is_dir():
        example = str(expanded / "table.json")
        raise ValueError(f"{name}={str(path)!r} is a directory; give a file path such as {example!r}")
    _check_creatable(name, path, expanded.parent)
    return str(expanded)


def _check_creatable(name: str, given: Any, directory: Path) -> None:
    ancestor = directory
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name}={str(given)!r} lies below {str(ancestor)!r}, which is a file, not a directory")
    if not os.access(ancestor, os.W_OK):
        raise ValueError(f"{name}={str(given)!r} cannot be created or written: {str(ancestor)!r} is not writable")
