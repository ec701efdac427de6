"""The run summary: one JSON file (``summary.json``) that each callback and the app add their section to.

Every value goes through :func:`to_jsonable` (tensors to lists, non-finite floats to ``null``), so the file is
plain JSON any tool reads; the merge is written to a temporary file and renamed, so a crash mid-write leaves the
previous summary whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def write_summary(path: str | os.PathLike, section: str, data: Mapping[str, Any]) -> Path:
    """Merge ``data`` under ``section`` into the JSON summary at ``path`` (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary[section] = to_jsonable(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False))
    tmp.replace(path)
    return path


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
