import json

import pytest
import torch
from torch import nn

import lightning_prune.core.latency_budget.table as table_module
from lightning_prune.core.latency_budget.table import LatencyTable, layer_spec
from lightning_prune.core.timing import TimingSettings

SETTINGS = TimingSettings(warmup=1, repeats=3, threads=1)
CONV = layer_spec(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), (1, 8, 8, 8), norm=True)


class CountingTimer:
    """Stands in for the clock: ms = c_in x c_out / 100, and counts how often it is asked."""

    def __init__(self):
        self.calls = []

    def __call__(self, layer, inputs):
        first = layer[0] if isinstance(layer, nn.Sequential) else layer
        self.calls.append(tuple(inputs.shape))
        return first.weight.shape[0] * first.weight.shape[1] / 100


def test_layer_spec_builds_the_layer_at_any_width_in_its_real_input_shape():
    assert CONV.signature == "conv2d(k=3x3,s=2x2,p=1x1,d=1x1,dw=0,bias=0,norm=1)@8x8"
    layer = CONV.build(4, 12)
    assert isinstance(layer[1], nn.BatchNorm2d)
    assert layer(CONV.example(2, 4)).shape == (2, 12, 4, 4)
    linear = layer_spec(nn.Linear(64, 10), (1, 64), norm=False)
    assert linear.signature == "linear(bias=1,norm=0)@-"
    assert linear.build(32, 5)(linear.example(3, 32)).shape == (3, 5)
    depthwise = layer_spec(nn.Conv2d(8, 8, 3, groups=8), (1, 8, 6, 6), norm=False)
    assert depthwise.depthwise
    assert depthwise.build(8, 4).groups == 4
    grouped = layer_spec(nn.Conv2d(8, 8, 3, groups=2), (1, 8, 6, 6), norm=False)
    assert (grouped.groups, grouped.depthwise) == (2, False)
    assert grouped.signature.endswith(",g=2)@6x6")
    assert grouped.build(8, 8).groups == 2


def test_entries_are_timed_once_saved_and_reused(tmp_path):
    path, timer = tmp_path / "lut.json", CountingTimer()
    table = LatencyTable(torch.device("cpu"), SETTINGS, 16, path, timer=timer)
    assert table(CONV, 8, 16) == pytest.approx(1.28)
    assert table(CONV, 8, 16) == pytest.approx(1.28)
    assert table(CONV, 4, 8) == pytest.approx(0.32)
    assert timer.calls == [(16, 8, 8, 8), (16, 4, 8, 8)]  # real input shape at the batch size, once per entry
    table.save()
    again = LatencyTable(torch.device("cpu"), SETTINGS, 16, path, timer=CountingTimer())
    assert again.loaded == 2
    assert again(CONV, 8, 16) == pytest.approx(1.28)
    assert again.timer.calls == []


def test_another_device_or_setting_builds_its_own_table_and_keeps_the_others(tmp_path, monkeypatch):
    path = tmp_path / "lut.json"
    first = LatencyTable(torch.device("cpu"), SETTINGS, 16, path, timer=CountingTimer())
    first(CONV, 8, 16)
    first.save()
    monkeypatch.setattr(table_module, "device_name", lambda device: "Some Other CPU")
    timer = CountingTimer()
    other = LatencyTable(torch.device("cpu"), SETTINGS, 16, path, timer=timer)
    assert other.loaded == 0
    assert other.key != first.key
    other(CONV, 8, 16)
    assert len(timer.calls) == 1  # rebuilt on the new device
    other.save()
    tables = json.loads(path.read_text())["tables"]
    assert set(tables) == {first.key, other.key}
    assert tables[other.key]["device"] == "Some Other CPU"
    monkeypatch.undo()
    bigger_batch = LatencyTable(torch.device("cpu"), SETTINGS, 32, path, timer=CountingTimer())
    assert bigger_batch.loaded == 0  # the batch size is part of the key too


def test_real_timer_gives_positive_and_width_ordered_entries():
    table = LatencyTable(torch.device("cpu"), TimingSettings(warmup=2, repeats=9, threads=1), 64)
    spec = layer_spec(nn.Conv2d(64, 64, 3, padding=1), (1, 64, 16, 16), norm=True)
    small, large = table(spec, 8, 8), table(spec, 64, 64)
    assert 0 < small < large
    assert table.timed == 2
    assert len(table) == 2
