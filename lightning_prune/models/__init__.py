"""Small real models (MLP, CNN, ResNet) and a generic classification LightningModule."""

from lightning_prune.models.classifier import Classifier
from lightning_prune.models.cnn import SmallCNN
from lightning_prune.models.mlp import MLP
from lightning_prune.models.resnet import BasicBlock, ResNet

__all__ = ["MLP", "BasicBlock", "Classifier", "ResNet", "SmallCNN"]
