"""A real training process killed with SIGKILL mid-run resumes to the uninterrupted result."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import REPO
from tests.test_run import run_app

COMMON = [
    "recipe=iterative",
    "model=resnet",
    "trainer.enable_progress_bar=false",
    "callbacks.model_checkpoint.save_top_k=-1",  # keep epoch=N.ckpt for every epoch
    "callbacks.model_checkpoint.save_last=false",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
]
MODES = {
    "unstructured": [],
    "structured": ["callbacks=[default,block_pruning]", "callbacks.block_pruning.step_ratio=0.5"],
}
SECTION = {"unstructured": "iterative", "structured": "block_pruning"}


def _kill_after(run_dir, epoch, args):
    cmd = [sys.executable, "-m", "lightning_prune.run", *args, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 240
    while not list((run_dir / "checkpoints").glob(f"epoch={epoch}-*.ckpt")):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the run produced no checkpoint in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.returncode


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, mode):
    args = COMMON + MODES[mode]
    full = run_app(*args, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    assert _kill_after(killed, 5, args) == -signal.SIGKILL  # killed inside epoch 6, between pruning steps
    assert not (killed / "summary.json").exists()
    (last_complete,) = (killed / "checkpoints").glob("epoch=4-*.ckpt")
    resumed = run_app(*args, f"hydra.run.dir={killed}", f"ckpt_path='{last_complete}'")  # quoted: '=' in the name
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = torch.load(tmp_path / "full" / "pruned_model.pt", weights_only=True)
    got = torch.load(killed / "pruned_model.pt", weights_only=True)
    assert got["architecture"] == expected["architecture"]
    torch.testing.assert_close(got["state_dict"], expected["state_dict"])
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", killed)]
    assert summaries[0][SECTION[mode]]["sparsity"] == summaries[1][SECTION[mode]]["sparsity"]
    assert summaries[0]["run"]["metrics"]["test/acc"] == summaries[1]["run"]["metrics"]["test/acc"]


@pytest.mark.parametrize(
    ("ckpt", "message"),
    [("missing.ckpt", r"ckpt_path='.*missing.ckpt' does not exist"), ("corrupt.ckpt", "is not a readable checkpoint")],
)
def test_bad_resume_checkpoint_fails_before_training(tmp_path, ckpt, message):
    (tmp_path / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated")
    result = run_app(
        "recipe=iterative", "debug=fast", f"ckpt_path={tmp_path / ckpt}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
