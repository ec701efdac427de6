import pytest
from torch import nn

from lightning_prune.core.selection import head_module_name, select_parameters, validate_selector
from lightning_prune.models import ResNet, SmallCNN


def test_defaults_skip_head_norms_and_biases():
    net = SmallCNN((1, 8, 8), 10, widths=(4, 4))
    assert select_parameters(net) == ["features.0.weight", "features.3.weight"]
    assert head_module_name(net) == "classifier"


def test_head_and_biases_when_asked():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert select_parameters(net, prune_head=True, include_biases=True) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_name_regex_and_exclusions():
    net = ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(4, 8))
    names = select_parameters(net, include_names=r"stages\.", exclude_names=[r"shortcut"])
    assert names == [
        "stages.0.0.conv1.weight",
        "stages.0.0.conv2.weight",
        "stages.1.0.conv1.weight",
        "stages.1.0.conv2.weight",
    ]
    assert select_parameters(net, include_types=["BatchNorm2d"], include_names=r"^stem")[0] == "stem.1.weight"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include_types": ["Conv9d"]}, r"unknown module type\(s\) \['Conv9d'\]; allowed:"),
        ({"include_types": []}, "include_types must be a non-empty list"),
        ({"include_types": "Linear"}, "include_types must be a non-empty list"),
        ({"include_names": "(unclosed"}, "include_names: '\\(unclosed' is not a valid regular expression"),
        ({"exclude_names": "conv"}, "exclude_names must be a list"),
    ],
)
def test_bad_selectors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_selector(**kwargs)


def test_selection_matching_nothing_names_the_candidates():
    net = SmallCNN((1, 8, 8), 10, widths=(4, 4))
    with pytest.raises(ValueError, match=r"matched nothing in SmallCNN.*could be selected: \['features.0'"):
        select_parameters(net, include_names="nonexistent")
    with pytest.raises(ValueError, match="could be selected: none"):
        select_parameters(nn.Sequential(nn.ReLU()))
