import pytest
import torch
from torch import nn

from lightning_prune.core import ort_timing
from lightning_prune.core.ort_timing import OrtExportError, OrtModel, check_backends, export_reason, parity
from lightning_prune.core.timing import TimingSettings, interleaved_latency


def test_backends_are_checked_and_listed_once():
    assert check_backends("eager") == ["eager"]
    assert check_backends(["onnxruntime", "eager", "onnxruntime"]) == ["onnxruntime", "eager"]
    with pytest.raises(ValueError, match=r"unknown backend\(s\) \['tvm'\]; allowed: \['eager', 'onnxruntime'\]"):
        check_backends(["eager", "tvm"])
    with pytest.raises(ValueError, match=r"backend must be one of .* or a non-empty list of them, got None"):
        check_backends(None)


def test_missing_exporter_packages_name_the_deploy_extra(monkeypatch):
    monkeypatch.setattr(ort_timing.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else 1)
    with pytest.raises(ImportError, match=r"needs \['onnxscript'\]: pip install 'lightning-prune\[deploy\]'"):
        check_backends("onnxruntime")


def test_session_matches_eager_and_is_timed_in_the_same_rounds():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).train()
    session = OrtModel(model, torch.zeros(1, 1, 8, 8), threads=1)
    assert model.training  # exported in eval mode, the user's mode restored
    assert session.threads == 1
    assert session.file_bytes > 0
    assert parity(model, session, torch.randn(1, 1, 8, 8)) <= 1e-4
    assert session(torch.ones(5, 1, 8, 8))[0].shape == (5, 3)  # the batch dimension stays dynamic

    timed = interleaved_latency({"eager": model, "ort": session}, torch.zeros(4, 1, 8, 8), TimingSettings(1, 3), 2)
    assert (timed["eager"].runtime, timed["ort"].runtime) == ("eager", "onnxruntime")
    assert timed["ort"].threads == 1
    assert timed["ort"].timer == "perf_counter"
    assert len(timed["ort"].round_medians_ms) == len(timed["eager"].round_medians_ms) == 2
    assert timed["ort"].repeats == 6
    assert timed["ort"].peak_memory_mb is None


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_model_onnx_cannot_export_names_it_and_the_exporters_reason():
    with pytest.raises(OrtExportError, match=r"ONNX export of _DataDependent failed.*backend='eager'") as raised:
        OrtModel(_DataDependent(), torch.zeros(3, 4))
    message = str(raised.value)
    assert "data-dependent expression" in message  # the exporter's own summary
    assert "raised at" in message
    assert "x.sum() > 0" in message  # and the user's line that it stopped at
    assert "\x1b[" not in message
    assert len(message) < 1000


def test_export_reason_without_a_summary_is_the_first_line():
    assert export_reason(ValueError("no example input\nmore")) == "ValueError: no example input"


def test_unfolded_torch_prune_masks_are_refused_naming_the_layer_and_the_fix():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.nn.utils.prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(OrtExportError, match=r"ONNX export of Sequential failed.*layer '0' carries an unfolded"):
        OrtModel(model, torch.zeros(3, 4))
