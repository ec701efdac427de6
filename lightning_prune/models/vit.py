"""A tiny Vision Transformer (Dosovitskiy et al. 2021) written the way users write one: ``nn.MultiheadAttention``.

Patch embedding (a strided conv), a learned class token and position embedding, pre-norm encoder blocks,
and a linear head on the class token. It is the zoo's transformer: attention's packed ``in_proj_weight``
is what pruners and exporters meet in real transformer code, unlike a conv net's plain layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Split the image into ``patch_size`` squares, embed, prepend a class token, run ``depth`` blocks, classify.

    Args:
        input_shape: ``(channels, height, width)``; height and width must be multiples of ``patch_size``.
        num_classes: outputs of the head.
        patch_size: side of a square patch.
        dim: embedding width (a multiple of ``heads``).
        depth: number of encoder blocks.
        heads: attention heads per block.
        mlp_dim: hidden width of each block's MLP.

    Raises:
        ValueError: when the image does not split into whole patches or ``dim`` into whole heads.

    Example::

        >>> import torch
        >>> ViT((1, 8, 8), 10, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_dim: int = 128,
    ) -> None:
        super().__init__()
        # Constructor arguments as plain data: an export records them, so load_model rebuilds this net.
        self.hparams = {
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "patch_size": patch_size,
            "dim": dim,
            "depth": depth,
            "heads": heads,
            "mlp_dim": mlp_dim,
        }
        channels, height, width = (int(size) for size in input_shape)
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide the image size {height}x{width}")
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        patches = (height // patch_size) * (width // patch_size)
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])
