"""The app's ``export.formats`` option: a recipe run writes ONNX and safetensors beside pruned_model.pt."""

import json

import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir

import lightning_prune.run as app
from lightning_prune import deploy, load_model
from tests.helpers import REPO


def train(tmp_path, monkeypatch, *overrides):
    built, build = {}, app.build

    def keep(cfg):
        built["parts"] = build(cfg)
        return built["parts"]

    monkeypatch.setattr(app, "build", keep)
    base = ["recipe=iterative", "debug=fast", f"paths.output_dir={tmp_path}", "model.net.widths=[8,8,16,16]"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        app.train(compose("run", overrides=[*base, *overrides]))
    return built.get("parts")


def test_a_recipe_run_exports_onnx_and_safetensors_that_match(tmp_path, monkeypatch):
    datamodule, trained, _ = train(tmp_path, monkeypatch, "export.formats=[onnx,safetensors]")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["deploy"] == {"onnx": "pruned_model.onnx", "safetensors": "pruned_model.safetensors"}
    x, _ = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        expected = load_model(tmp_path / "pruned_model.pt")(x)  # the .pt and its record are still there
        torch.testing.assert_close(trained.eval()(x), expected)
        torch.testing.assert_close(deploy.load_safetensors(tmp_path / "pruned_model.safetensors")(x), expected)
    session = ort.InferenceSession(str(tmp_path / "pruned_model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)
    assert float((trained.net.features[0].weight == 0).float().mean()) > 0  # pruned zeros went with it


def test_an_unknown_format_fails_before_training(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"export.formats: unknown format\(s\) \['tflite'\]; allowed: \['onnx', "):
        train(tmp_path, monkeypatch, "export.formats=[onnx,tflite]")
    assert not (tmp_path / "checkpoints").exists()
