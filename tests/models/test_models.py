import pytest
import torch

from lightning_prune.models import MLP, Classifier, ResNet, SmallCNN


@pytest.mark.parametrize(
    ("net", "shape"),
    [
        (MLP((1, 28, 28), 10), (3, 1, 28, 28)),
        (SmallCNN((1, 28, 28), 10), (3, 1, 28, 28)),
        (SmallCNN((3, 8, 8), 5, widths=(4, 4, 4, 4, 4, 4)), (3, 3, 8, 8)),
        (ResNet((1, 28, 28), 10, blocks=(4, 4, 4)), (3, 1, 28, 28)),
    ],
)
def test_models_map_inputs_to_logits(net, shape):
    assert net(torch.zeros(shape)).shape == (3, net(torch.zeros(shape)).shape[1])


def test_resnet_blocks_and_stage_checks():
    net = ResNet((1, 8, 8), 10, blocks=(4, 4, 4))
    assert len(net.blocks()) == 12
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet((1, 8, 8), 10, blocks=(1, 1), widths=(8,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"scheduler": "step"}, "scheduler must be one of"),
        ({"lr": 0}, "lr must be > 0"),
    ],
)
def test_classifier_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Classifier(MLP((4,), 2), 2, (4,), **kwargs)
