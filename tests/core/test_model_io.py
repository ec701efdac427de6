"""The one reader of batches and outputs: what each callback gets from the batches and outputs users bring."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from lightning_prune.core import model_io


class Keywords(nn.Module):
    """A Hugging Face-style forward: keyword inputs, an output object with ``.logits``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return SimpleNamespace(logits=self.embed(input_ids) * attention_mask[..., None], loss=None)


def test_batches_split_into_inputs_and_targets() -> None:
    x, y = torch.zeros(2, 3), torch.tensor([0, 1])
    net = nn.Linear(3, 2)
    assert model_io.split_batch(net, x) == (x, None)
    inputs, targets = model_io.split_batch(net, (x, y, "extra"))
    assert inputs is x
    assert targets is y
    inputs, targets = model_io.split_batch(net, {"input_ids": x, "attention_mask": x, "labels": y})
    assert sorted(inputs) == ["attention_mask", "input_ids"]
    assert targets is y


def test_a_module_hook_overrides_the_defaults() -> None:
    net = nn.Linear(3, 2)
    net.split_batch = lambda batch: (batch["image"], batch["class_id"])
    batch = {"image": torch.ones(4, 3), "class_id": torch.tensor([1, 0, 1, 1])}
    logits, targets = model_io.scored(net, batch)
    assert logits.shape == (4, 2)
    assert torch.equal(targets, batch["class_id"])


def test_an_unreadable_batch_names_its_shape_and_the_hook() -> None:
    with pytest.raises(ValueError, match=r"cannot read a str batch.*split_batch\(self, batch\)"):
        model_io.split_batch(nn.Linear(3, 2), "text")
    with pytest.raises(ValueError, match=r"carries no targets.*split_batch"):
        model_io.scored(nn.Linear(3, 2), torch.zeros(2, 3))


def test_keyword_inputs_and_logits_objects() -> None:
    ids = torch.tensor([[1, 2, 3], [4, 0, 1]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor([[1, 2, -100], [4, 0, 1]]),
    }
    logits, targets = model_io.scored(Keywords(), batch)
    assert logits.shape == (5, 3)
    assert targets.tolist() == [1, 2, 4, 0, 1]


def test_a_causal_lm_is_scored_on_the_next_token() -> None:
    class TinyForCausalLM(nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return nn.functional.one_hot(input_ids, 6).float()  # "predicts" the token it sees

    ids = torch.tensor([[1, 2, 3, 4]])
    model = nn.Sequential()
    model.add_module("lm", TinyForCausalLM())
    assert model_io.is_causal_lm(model)
    logits, targets = model_io.align(TinyForCausalLM()(ids), ids, causal=True)
    assert targets.tolist() == [2, 3, 4]
    assert logits.argmax(-1).tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "output",
    [
        torch.ones(2, 3),
        (torch.ones(2, 3), "aux"),
        {"logits": torch.ones(2, 3)},
        SimpleNamespace(logits=torch.ones(2, 3)),
    ],
)
def test_logits_are_found_in_every_output_kind(output: Any) -> None:
    assert model_io.logits_of(output).shape == (2, 3)


def test_no_logits_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot find logits"):
        model_io.logits_of({"hidden": torch.ones(2)})


def test_sample_helpers_keep_the_input_kind() -> None:
    inputs = {"input_ids": torch.arange(6).view(3, 2), "mask": torch.ones(3, 2)}
    first = model_io.first_samples(inputs)
    assert first["input_ids"].tolist() == [[0, 1]]
    tiled = model_io.repeat_samples(first, 5)
    assert tiled["mask"].shape == (5, 2)
    assert model_io.batch_size_of(tiled) == 5
    args, kwargs = model_io.as_args((torch.ones(1), torch.zeros(1)))
    assert len(args) == 2
    assert kwargs == {}
