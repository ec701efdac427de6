"""Deployable exports of pruned zoo models: ONNX Runtime and torch.export parity, safetensors without pickle, refusals.

Tolerance: ONNX Runtime (CPU execution provider) logits match PyTorch eager within atol = rtol = 1e-4 (float32;
measured differences are ~1e-7), and so do torch.export programs (eager attention takes PyTorch's fused fast
path, the program its decomposition: ~1e-7 apart); safetensors reloads match exactly.
"""

import json
import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from lightning_prune import deploy
from lightning_prune.core.deploy import (
    FORMATS,
    check_formats,
    export_for_deploy,
    export_onnx,
    export_program,
    load_safetensors,
    save_safetensors,
)
from lightning_prune.core.export import export_pruned
from lightning_prune.core.masks import MaskSet, masks_from_scores
from lightning_prune.core.structured import remove_out_channels
from lightning_prune.models import MLP, Classifier, ViT
from tests.helpers import cnn_classifier, resnet_classifier

TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
SHAPE = (1, 8, 8)


def pruned(model: nn.Module, sparsity: float = 0.7) -> nn.Module:
    """Unstructured magnitude masks (core.masks) held in place, BatchNorm statistics made non-trivial, eval mode."""
    names = [name for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    scores = {name: model.get_parameter(name).detach().abs() for name in names}
    MaskSet(masks_from_scores(scores, sparsity)).bind(model).apply()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def shrunk_resnet() -> nn.Module:
    """A ResNet with channels physically removed through torch-pruning (core.structured)."""
    model = resnet_classifier(widths=(8, 16)).eval()
    removals = {"net.stages.0.0.conv1": [1, 2, 5], "net.stages.1.0.conv1": list(range(9))}
    remove_out_channels(model, torch.zeros(2, *SHAPE), removals)
    assert model.net.stages[1][0].conv1.out_channels == 7
    return pruned(model, 0.5)


MODELS = {
    "cnn": lambda: pruned(cnn_classifier(widths=(8, 8, 16, 16))),
    "resnet": lambda: pruned(resnet_classifier(widths=(8, 16))),
    "mlp": lambda: pruned(Classifier(MLP(SHAPE, 10, hidden=(32, 16)), 10, SHAPE)),
    "vit": lambda: pruned(Classifier(ViT(SHAPE, 10, dim=16, depth=2, heads=2, mlp_dim=32), 10, SHAPE)),
    "resnet_shrunk": shrunk_resnet,
}


def zeros(tensors) -> int:
    return sum(int((t == 0).sum()) for t in tensors)


@pytest.mark.parametrize("kind", MODELS)
def test_onnx_runtime_matches_pytorch(tmp_path, kind):
    model = MODELS[kind]()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *SHAPE)  # traced with a batch of 2: the batch dimension stays dynamic
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), **TOLERANCE)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    masked = zeros(p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)
    assert zeros(np.asarray(w) for w in weights) >= masked  # the masks are folded in: the zeros ship
    if kind == "resnet_shrunk":  # the shrink is physical: conv1 keeps 7 of 16 filters, conv2 reads 7 channels
        assert {(7, 8, 3, 3), (16, 7, 3, 3)} <= {tuple(w.shape) for w in weights}
    assert model.training is False
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("kind", ["vit", "resnet_shrunk"])
def test_torch_export_program_reloads_with_the_same_outputs(tmp_path, kind):
    model = MODELS[kind]()
    path = export_program(model, tmp_path / "model.pt2")
    program = torch.export.load(path).module()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), **TOLERANCE)


def refuse_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for owner, name in [(torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(owner, name, refuse)


@pytest.mark.parametrize("kind", ["cnn", "vit", "resnet_shrunk"])
def test_safetensors_and_record_reload_without_pickle(tmp_path, monkeypatch, kind):
    model = MODELS[kind]()
    path = save_safetensors(model, tmp_path / "model.safetensors")
    record = json.loads((tmp_path / "model.safetensors.json").read_text())
    assert record["weights"] == "model.safetensors"
    assert record["model"]["net"]["_target_"].startswith("lightning_")
    refuse_pickle(monkeypatch)
    loaded = load_safetensors(path)
    assert type(loaded) is type(model)
    assert not loaded.training
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name


class Plain(nn.Module):
    """A user's net that records no constructor arguments."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_plain_module_reloads_into_a_model_you_build(tmp_path):
    model = pruned(Plain(10))
    path = save_safetensors(model, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match=r"cannot rebuild the model: .*plain nn.Module.*load_safetensors\("):
        load_safetensors(path)
    loaded = load_safetensors(path, Plain(10))
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    assert float((loaded.fc.weight == 0).float().mean()) > 0.5


def prune_reparametrised():
    model = cnn_classifier(widths=(8, 8, 16, 16))
    torch.nn.utils.prune.l1_unstructured(model.net.classifier, "weight", amount=0.5)
    return model


def parametrised():
    model = cnn_classifier(widths=(8, 8, 16, 16))
    torch.nn.utils.parametrize.register_parametrization(model.net.features[0], "weight", nn.Identity())
    return model


@pytest.mark.parametrize(
    ("make", "formats", "error", "match"),
    [
        (cnn_classifier, ["onnx", "tflite"], ValueError, r"unknown format\(s\) \['tflite'\]; allowed: \['onnx', "),
        (cnn_classifier, "onnx", ValueError, r"must be a list of formats from \['onnx', 'safetensors', 'torch_ex"),
        (
            prune_reparametrised,
            ["safetensors"],
            ValueError,
            r"layer 'net.classifier' carries an unfolded pruning mask \(weight_orig \* weight_mask.*"
            r"prune.remove\(model.get_submodule\('net.classifier'\), 'weight'\)",
        ),
        (parametrised, ["onnx"], ValueError, r"layer 'net.features.0' computes \['weight'\] through .*parametrize"),
        (
            lambda: MLP(SHAPE, 10, hidden=(8,)),
            ["safetensors", "torch_export"],
            ValueError,
            r"exporting MLP to model.pt2 traces it and needs an example input: pass example=",
        ),
    ],
)
def test_export_bad_input(tmp_path, make, formats, error, match):
    with pytest.raises(error, match=match):
        export_for_deploy(make(), tmp_path / "model", formats)
    assert not list(tmp_path.iterdir())


def test_an_output_path_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ValueError, match=r"onnx output=.*model.onnx' is a directory; give a file path"):
        export_for_deploy(cnn_classifier(), tmp_path / "model", ["safetensors", "onnx"])
    with pytest.raises(ValueError, match=r"path=.*model.onnx' is a directory"):
        export_onnx(cnn_classifier(), tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # nothing written before the refusal


def test_missing_packages_name_the_extra(monkeypatch):
    real = deploy.importlib.util.find_spec
    monkeypatch.setattr(deploy.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    with pytest.raises(ImportError, match=r"needs \['onnxscript'\]: pip install 'lightning-prune\[deploy\]'"):
        check_formats(["onnx", "safetensors"], "export.formats")
    assert check_formats(["safetensors", "torch_export", "safetensors"]) == ["safetensors", "torch_export"]
    assert set(FORMATS) == {"onnx", "safetensors", "torch_export"}


def test_a_failed_export_loses_nothing_already_written(tmp_path, monkeypatch):
    """An ONNX export dying half-way keeps pruned_model.pt, the previous .onnx and the other formats."""
    model = MODELS["cnn"]()
    pt = export_pruned(model, tmp_path / "pruned_model.pt")
    (tmp_path / "pruned_model.onnx").write_bytes(b"an earlier run's onnx file")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    class HalfWritten:
        def save(self, destination, **kwargs):
            destination.write_bytes(b"half an onnx file")
            raise OSError("No space left on device")

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: HalfWritten())
    with pytest.raises(RuntimeError, match=r"failed for \['onnx'\]:\n  onnx: OSError: No space left.*\nwritten: "):
        export_for_deploy(model, tmp_path / "pruned_model", ["onnx", "safetensors"])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {name: after[name] for name in before} == before  # .pt, its record, the earlier .onnx: untouched
    assert sorted(set(after) - set(before)) == ["pruned_model.safetensors", "pruned_model.safetensors.json"]
    assert torch.load(pt, weights_only=True)["state_dict"].keys() == model.state_dict().keys()
