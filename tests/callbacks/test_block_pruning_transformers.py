"""ICE's block-by-block mode on transformer blocks, in user-written Trainers: BlockPruning + LayerFreezing.

BERT and Llama (grouped-query attention) from tiny configs, trained on sklearn's digits as token
sequences with dict batches and loaders passed straight to ``fit``; our ViT (``nn.MultiheadAttention``)
through the DigitsDataModule. Each block loses half its heads (whole KV groups) and MLP units, the
export reloads from its record alone, and the logits match.
"""

import json

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_prune import BlockPruning, LayerFreezing, load_model
from lightning_prune.core.structured import count_parameters
from lightning_prune.core.transformer_layout import attention_layouts, mlp_layouts
from lightning_prune.models import Classifier
from lightning_prune.models.vit import ViT
from tests.hf_models import digit_tokens, tiny_bert, tiny_llama


class HFModule(pl.LightningModule):
    """A Hugging Face model in a LightningModule, written as users do: ``self.model(**batch).loss``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def validation_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("val_loss", out.loss)
        if out.logits.dim() == 2:
            self.log("val_acc", (out.logits.argmax(-1) == batch["labels"]).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def token_loaders(causal: bool) -> tuple[DataLoader, DataLoader]:
    ids, labels = digit_tokens(600)
    rows = [{"input_ids": i, "labels": i if causal else y} for i, y in zip(ids, labels, strict=True)]
    return DataLoader(rows[:480], batch_size=48, shuffle=True), DataLoader(rows[480:], batch_size=120)


@pytest.mark.parametrize(
    ("make", "causal", "heads", "units"),
    [(tiny_bert, False, (4, 2), (64, 32)), (tiny_llama, True, (4, 2), (48, 24))],
    ids=["bert", "llama-gqa"],
)
def test_hf_blocks_lose_heads_and_units_and_the_export_reloads(make, causal, heads, units, trainer_kwargs, tmp_path):
    torch.manual_seed(0)
    module = HFModule(make())
    dense = count_parameters(module)
    pruning = BlockPruning(step_ratio=0.5, warmup_epochs=1, monitor="val_loss", stop_when_done=True)
    freezing = LayerFreezing(fraction=0.3, max_move=None)
    trainer = pl.Trainer(max_epochs=4, callbacks=[pruning, freezing], **trainer_kwargs)
    trainer.fit(module, *token_loaders(causal))

    history = pruning.pruning_state.history
    assert [record["block"].rsplit(".", 1)[-1] for record in history] == ["0", "1"]
    assert all(sum(record["heads_removed"].values()) == heads[0] - heads[1] for record in history)
    assert [layout.num_heads for layout in attention_layouts(module).values()] == [heads[1]] * 2
    assert [layout.units for layout in mlp_layouts(module).values()] == [units[1]] * 2
    assert module.model.config.intermediate_size == units[1]
    assert freezing.frozen
    assert all(name.startswith("model.") for name in freezing.frozen)
    pruned = count_parameters(module)
    assert pruned < dense

    record = json.loads((tmp_path / "pruned_model.json").read_text())
    assert record["model"]["model"]["config"]["intermediate_size"] == units[1]
    reloaded = load_model(tmp_path / "pruned_model.pt")
    ids = next(iter(token_loaders(causal)[1]))["input_ids"][:16]
    module.eval()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, module(input_ids=ids).logits)
    assert count_parameters(reloaded) == pruned
    print(f"{make.__name__}: params {dense} -> {pruned}, val_loss {float(trainer.callback_metrics['val_loss']):.3f}")


def test_vit_encoder_blocks_lose_mlp_units_and_keep_multihead_attention(digits, trainer_kwargs, tmp_path):
    torch.manual_seed(0)
    model = Classifier(ViT((1, 8, 8), 10, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64), 10, (1, 8, 8))
    pruning = BlockPruning(step_ratio=0.5, warmup_epochs=2, stop_when_done=True)
    freezing = LayerFreezing(fraction=0.3, max_move=None)
    trainer = pl.Trainer(max_epochs=5, callbacks=[pruning, freezing], **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    assert [record["block"] for record in pruning.pruning_state.history] == ["net.blocks.0", "net.blocks.1"]
    assert [block.mlp[0].out_features for block in model.net.blocks] == [32, 32]
    assert [block.attn.num_heads for block in model.net.blocks] == [4, 4]  # MHA heads are the residual width
    assert any(name.startswith("net.blocks.") for name in freezing.frozen)
    assert trainer.callback_metrics["val/acc"] > 0.5
    reloaded = load_model(tmp_path / "pruned_model.pt")
    x = digits.val_dataloader().dataset[0][0].unsqueeze(0)
    torch.testing.assert_close(reloaded(x), model.eval()(x))


def test_llama_resumes_from_a_checkpoint_taken_after_heads_were_removed(trainer_kwargs, tmp_path):
    """Lightning loads the shrunk state into a fresh full-size model: layers and head counts follow, no pickle."""
    torch.manual_seed(0)
    first = HFModule(tiny_llama())
    args = {"step_ratio": 0.5, "warmup_epochs": 1, "monitor": "val_loss", "export_dir": None}
    kwargs = {**trainer_kwargs, "enable_checkpointing": True}
    pl.Trainer(max_epochs=3, callbacks=[BlockPruning(**args)], **kwargs).fit(first, *token_loaders(True))
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert state["model.model.layers.1.self_attn.k_proj.weight"].shape[0] == 8

    resumed, pruning = HFModule(tiny_llama()), BlockPruning(**args)
    pl.Trainer(max_epochs=4, callbacks=[pruning], **kwargs).fit(resumed, *token_loaders(True), ckpt_path=ckpt)
    assert pruning.pruning_state.step == 2
    attn = resumed.model.model.layers[1].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.num_key_value_groups) == (16, 8, 2)
    assert resumed.model.config.num_key_value_heads == 1
    ids = next(iter(token_loaders(True)[1]))["input_ids"][:2, :8]
    assert resumed.model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0).shape == (2, 11)


def test_timm_vit_blocks_lose_fused_heads_and_units(digits, trainer_kwargs, tmp_path):
    from lightning_prune import load_pruned
    from tests.hf_models import tiny_timm_vit

    torch.manual_seed(0)
    model = Classifier(tiny_timm_vit(), 10, (1, 8, 8), optimizer="adamw", lr=3e-3)
    pruning = BlockPruning(step_ratio=0.5, block_types=["Block"], warmup_epochs=1, stop_when_done=True)
    callbacks = [pruning, LayerFreezing(fraction=0.3, max_move=None)]
    trainer = pl.Trainer(max_epochs=3, callbacks=callbacks, limit_train_batches=8, **trainer_kwargs)
    trainer.fit(model, datamodule=digits)
    attn = model.net.blocks[1].attn
    assert (attn.num_heads, attn.attn_dim, attn.qkv.out_features, attn.proj.in_features) == (2, 16, 48, 16)
    assert [block.mlp.fc1.out_features for block in model.net.blocks] == [32, 32]
    record = json.loads((tmp_path / "pruned_model.json").read_text())
    assert record["model"] is None  # timm's VisionTransformer records no constructor arguments: you build it
    fresh = load_pruned(Classifier(tiny_timm_vit(), 10, (1, 8, 8)), tmp_path / "pruned_model.pt").eval()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(fresh(x), model.eval()(x))


def test_blocks_with_nothing_to_remove_are_refused_before_training(digits, trainer_kwargs):
    model = Classifier(ViT((1, 8, 8), 10, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32), 10, (1, 8, 8))
    trainer = pl.Trainer(max_epochs=3, callbacks=[BlockPruning(block_types=["LayerNorm"])], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"block\(s\) \['net.blocks.0.norm1', .*\] hold nothing it can remove"):
        trainer.fit(model, datamodule=digits)
    assert trainer.global_step == 0
