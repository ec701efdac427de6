"""The zoo's transformer: shapes, refusals, and the Hydra config recipes select with model=vit."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lightning_prune.models import ViT
from tests.helpers import REPO


def test_vit_classifies_images_of_any_patchable_size():
    net = ViT((3, 28, 28), 5, patch_size=4, dim=32, depth=1, heads=4, mlp_dim=64)
    assert net(torch.zeros(2, 3, 28, 28)).shape == (2, 5)
    assert net.pos_embed.shape == (1, 7 * 7 + 1, 32)
    assert isinstance(net.blocks[0].attn, torch.nn.MultiheadAttention)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch_size": 3}, r"patch_size=3 must divide the image size 8x8"),
        ({"dim": 30, "heads": 4}, r"dim=30 must be a multiple of heads=4"),
    ],
)
def test_vit_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViT((1, 8, 8), 10, **kwargs)


def test_model_vit_config_builds():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=["model=vit"])
    net = instantiate(cfg.model.net, input_shape=[1, 8, 8], num_classes=10)
    assert isinstance(net, ViT)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
