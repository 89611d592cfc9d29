"""The joint EBAE + EBAR pass equals two separate passes (losses and gradients), and the loss is right."""

import math

import pytest
import torch

from llara import compat
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder, add_special_tokens
from llara.modeling.recipes import load_recipe
from llara.training.common import special_token_ids
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.loss import bow_loss, joint_loss, task_losses, two_pass_loss

TEXTS = [
    "the dense retrieval model is a query of the index",
    "a library of information science data text token next summarize",
    "index",
    "what is a language model for search and classification of documents",
]


def setup(model_dir, recipe_name: str, lm_loss: bool = True):
    model, tokenizer = load_model(model_dir)
    recipe = load_recipe(recipe_name)
    torch.manual_seed(0)
    add_special_tokens(model, tokenizer, recipe)
    prompts = PromptBuilder(tokenizer, recipe)
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe))
    collator = PretrainCollator(prompts, exclude, lm_loss=lm_loss)
    return model.float().train(), collator, joint_features(prompts.text_ids(TEXTS))


def joint_features(ids: list[list[int]]) -> list[dict]:
    """Pretraining examples of TEXTS' ids: different lengths (a padded batch), one example without a
    next chunk (EBAE only)."""
    return [
        {"text_ids": ids[0], "own_ids": ids[0], "next_ids": ids[1]},
        {"text_ids": ids[1], "own_ids": ids[1], "next_ids": None},
        {"text_ids": ids[2], "own_ids": ids[2], "next_ids": ids[3]},
        {"text_ids": ids[3], "own_ids": ids[3], "next_ids": ids[0]},
    ]


def losses_and_grads(model, fn, *batches):
    model.zero_grad(set_to_none=True)
    total, parts = fn(model, *batches)
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return total.detach(), {k: v.detach() for k, v in parts.items()}, grads


@pytest.mark.parametrize("recipe", ["reference", "paper"])
def test_joint_pass_equals_two_passes(tiny_model_dir, recipe):
    model, collator, features = setup(tiny_model_dir, recipe)
    joint = collator(features)
    assert len({len(f["text_ids"]) for f in features}) > 1 and not joint["real"].all()  # really padded
    total_j, parts_j, grads_j = losses_and_grads(model, joint_loss, joint)
    total_s, parts_s, grads_s = losses_and_grads(model, two_pass_loss, *collator.separate(features))
    assert set(parts_j) == set(parts_s) == {"ebae", "ebar", "lm"}
    for k in parts_j:
        assert torch.allclose(parts_j[k], parts_s[k], atol=1e-4), k
    assert torch.allclose(total_j, total_s, atol=1e-4)
    assert grads_j.keys() == grads_s.keys() and len(grads_j) > 10
    for name in grads_j:
        assert torch.allclose(grads_j[name], grads_s[name], atol=1e-4), name
    # Each task's gradient alone matches too (not just their sum).
    for task in ("ebae", "ebar"):
        model.zero_grad(set_to_none=True)
        task_losses(model, joint)[task].backward()
        g_joint = model.get_input_embeddings().weight.grad.clone()
        model.zero_grad(set_to_none=True)
        batch = collator.separate(features)[0 if task == "ebae" else 1]
        task_losses(model, batch)[task].backward()
        assert torch.allclose(g_joint, model.get_input_embeddings().weight.grad, atol=1e-4), task


def ebar_logits(model, batch):
    return compat.logits_at(
        model,
        batch["ebar_special"],
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    )


def test_mask_and_positions_matter(tiny_model_dir):
    """Without the EBAR-cannot-see-EBAE block or the reused positions, EBAR's logits change: the
    equivalence test above can fail."""
    model, collator, features = setup(tiny_model_dir, "reference")
    joint, (_, ebar_only) = collator(features), collator.separate(features)
    with torch.no_grad():
        reference = ebar_logits(model, ebar_only)
        assert (ebar_logits(model, joint) - reference).abs().max() < 1e-5
        leaky = dict(joint, attention_mask=joint["attention_mask"] | torch.ones_like(joint["attention_mask"]).tril())
        assert (ebar_logits(model, leaky) - reference).abs().max() > 1e-3
        shifted = dict(joint, position_ids=(joint["real"].long().cumsum(-1) - 1).clamp(min=0))
        assert (ebar_logits(model, shifted) - reference).abs().max() > 1e-3


def test_only_needed_rows_reach_the_lm_head(tiny_model_dir):
    rows = []
    for lm in (False, True):
        model, collator, features = setup(tiny_model_dir, "reference", lm_loss=lm)
        head = model.get_output_embeddings()
        handle = head.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape))
        with torch.no_grad():
            joint_loss(model, collator(features))
        handle.remove()
    n_text = sum(len(f["text_ids"]) for f in features)
    assert rows[0][0] == 4 * 16  # 8 EBAE + 8 EBAR special positions per example, nothing else
    assert rows[1][0] == 4 * 16 + n_text  # plus one row per predicted passage token


def test_bow_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 3.0]]])  # [B=1, k=2, V=4]
    targets = torch.tensor([[1, 3, -1]])
    loss, valid = bow_loss(logits, targets)
    pooled = torch.tensor([1.0, 2.0, 0.0, 3.0])  # max over the 2 positions
    logz = math.log(sum(math.exp(v) for v in pooled.tolist()))
    assert valid.tolist() == [True]
    assert loss.item() == pytest.approx(-((2.0 - logz) + (3.0 - logz)) / 2, abs=1e-6)
    _, valid = bow_loss(logits, torch.tensor([[-1, -1, -1]]))
    assert valid.tolist() == [False]


def test_targets_exclude_special_ids_and_repeat(tiny_model_dir):
    _, collator, _ = setup(tiny_model_dir, "reference")
    special = sorted(collator.exclude)[:2]
    targets = collator.targets([[5, 5, 7, *special], None])
    assert targets[0].tolist()[:2] == [5, 7] and set(targets[0].tolist()[2:]) <= {-1}
    assert (targets[1] == -1).all()


def test_joint_pass_equals_two_passes_smollm2(smollm2_dir):
    model, collator, features = setup(smollm2_dir, "reference")
    features = features[:2]
    with torch.no_grad():
        _, parts_j = joint_loss(model, collator(features))
        _, parts_s = two_pass_loss(model, *collator.separate(features))
    for k in parts_j:
        assert torch.allclose(parts_j[k], parts_s[k], atol=1e-4), k
    assert 5.0 < parts_j["ebae"].item() < 12.0  # near docs/method.md's ~8.4 start, below ln(49152) + margin
