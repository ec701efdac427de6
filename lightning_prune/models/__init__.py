"""Small real models (MLP, CNNs, ResNet, ViT) and generic classification and regression LightningModules."""

from lightning_prune.models.classifier import Classifier
from lightning_prune.models.cnn import SmallCNN
from lightning_prune.models.depthwise import DepthwiseCNN, DepthwiseSeparableBlock
from lightning_prune.models.mlp import MLP
from lightning_prune.models.regressor import Regressor
from lightning_prune.models.resnet import BasicBlock, ResNet
from lightning_prune.models.vit import ViT

__all__ = [
    "MLP",
    "BasicBlock",
    "Classifier",
    "DepthwiseCNN",
    "DepthwiseSeparableBlock",
    "Regressor",
    "ResNet",
    "SmallCNN",
    "ViT",
]
