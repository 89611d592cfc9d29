"""The faster training step (training/speed.py) computes what the step before it computed.

Exact in fp32: the special-token rows trained on their own (vs PEFT's full-matrix layer) and LoRA
updates added in one addmm, eager CPU attention (vs SDPA), packed pretraining rows (vs padded
ones). Under bf16 autocast: frozen projection weights held in bf16 give the same forward values as
fp32 ones cast by autocast, train only the intended weights, and the final model is merged into the
exact fp32 base.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llara.modeling.embedder import embed
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import load_recipe
from llara.training.common import SPECIAL_PARAM, param_groups, prepare_model, special_token_ids, uses_cpu_attention
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.loss import joint_loss
from llara.training.pretrain.options import PretrainOptions
from llara.training.pretrain.trainer import run_pretrain
from llara.training.speed import CPU_ATTENTION, decoder_layers, restore_fp32_base
from tests.test_pretrain_loss import TEXTS, joint_features

SLOW_PATH = {"lean_lora": False, "cpu_attention": False, "bf16_base": False}


def build(model_dir, tmp_path, **switches):
    """A prepared LoRA model (its LoRA B matrices non-zero, the same for every call), a joint batch
    (padded, one example without a next chunk) and a fine-tuning batch."""
    model, tokenizer = load_model(model_dir)
    recipe = load_recipe("reference")
    opts = PretrainOptions(output=Path(tmp_path) / "unused", max_steps=1, **switches)
    model = prepare_model(model, tokenizer, recipe, opts)
    generator = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = (torch.randn(p.shape, generator=generator) * 0.05).to(p.dtype)
    prompts = PromptBuilder(tokenizer, recipe)
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe))
    features = joint_features(prompts.text_ids(TEXTS))
    collator = PretrainCollator(prompts, exclude, lm_loss=True, pack=uses_cpu_attention(opts, model.config))
    passages = prompts.pad(prompts.build(TEXTS, "passage", 48))
    return model, recipe, collator(features), passages


def step(model, recipe, joint, passages, autocast=False):
    """Joint pretraining loss + a fine-tuning-style embedding sum: values and every gradient."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, parts = joint_loss(model, joint)
        emb = embed(model, passages, recipe)
    (loss + emb.sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in parts.items()}, emb.detach(), grads


def assert_same(a, b, tol):
    (loss_a, parts_a, emb_a, grads_a), (loss_b, parts_b, emb_b, grads_b) = a, b
    assert parts_a.keys() == parts_b.keys() == {"ebae", "ebar", "lm"}
    assert torch.allclose(loss_a, loss_b, rtol=tol, atol=0), (loss_a, loss_b)
    for k in parts_a:
        assert torch.allclose(parts_a[k], parts_b[k], rtol=tol, atol=0), k
    assert (emb_a - emb_b).abs().max() < tol
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        scale = grads_a[name].abs().max()
        assert (grads_a[name] - grads_b[name]).abs().max() <= tol * scale, name


@pytest.mark.parametrize("switch", ["lean_lora", "cpu_attention"])
def test_each_exact_switch_keeps_losses_and_gradients_in_fp32(tiny_model_dir, tmp_path, switch):
    before = step(*build(tiny_model_dir, tmp_path, **SLOW_PATH))
    after = step(*build(tiny_model_dir, tmp_path, **{**SLOW_PATH, switch: True}))
    assert_same(before, after, tol=2e-5)


def test_fast_exact_path_in_fp32_equals_the_slow_one(tiny_model_dir, tmp_path):
    model, recipe, joint, passages = build(tiny_model_dir, tmp_path, bf16_base=False)
    assert model.config._attn_implementation == CPU_ATTENTION
    assert joint["input_ids"].shape[0] == 1 and joint["real"].all()  # packed: no padding left
    assert joint["slots"].shape[0] == 4 and (joint["slots"] < 0).any()  # ... which the padded layout had
    assert_same(step(*build(tiny_model_dir, tmp_path, **SLOW_PATH)), step(model, recipe, joint, passages), tol=2e-5)


def test_lean_lora_keeps_the_state_dict_and_the_merge(tiny_model_dir, tmp_path):
    from llara.training.common import merged_model

    slow, *_ = build(tiny_model_dir, tmp_path, **SLOW_PATH)
    fast, *_ = build(tiny_model_dir, tmp_path, **{**SLOW_PATH, "lean_lora": True})
    assert slow.state_dict().keys() == fast.state_dict().keys()
    for name, p in fast.named_parameters():
        if SPECIAL_PARAM in name:
            p.data += 0.5  # trained rows
            dict(slow.named_parameters())[name].data += 0.5
    a, b = merged_model(slow).state_dict(), merged_model(fast).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_base_trains_exactly_the_intended_weights(tiny_model_dir, tmp_path):
    model, *_ = build(tiny_model_dir, tmp_path, precision="bf16")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n or SPECIAL_PARAM in n for n in trainable)
    assert len([n for n in trainable if SPECIAL_PARAM in n]) == 1
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in trainable)
    frozen = {n: p for n, p in decoder_layers(model).named_parameters() if not p.requires_grad}
    projections = {n for n in frozen if n.endswith("proj.base_layer.weight")}
    assert len(projections) == 7 * len(decoder_layers(model))  # LoRA on q k v o gate up down
    assert all(frozen[n].dtype == (torch.bfloat16 if n in projections else torch.float32) for n in frozen)
    assert model.get_input_embeddings().weight.dtype == torch.float32  # saved in checkpoints as before
    assert sum(p.numel() for g in param_groups(model, 1e-4, 1e-3, 0.0) for p in g["params"]) == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    # The exact fp32 weights come back for the merge.
    assert restore_fp32_base(model, str(tiny_model_dir))
    fresh, _ = load_model(tiny_model_dir)
    originals = dict(decoder_layers(fresh).named_parameters())
    for name, p in decoder_layers(model).named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, originals[name.replace(".base_layer.", ".")]), name


def test_bf16_base_gives_autocast_values_and_loss_curve(tiny_model_dir, tmp_path):
    """The first pass is autocast's to the bit; then ten AdamW steps on the same batch stay close
    (gradients may differ in bf16 rounding: the normed inputs' gradients add up in bf16)."""
    curves = {}
    for name, switches in {"autocast": {"bf16_base": False}, "bf16 base": {}}.items():
        model, recipe, joint, passages = build(tiny_model_dir, tmp_path, precision="bf16", **switches)
        optimizer = torch.optim.AdamW(param_groups(model, 1e-3, 1e-2, 0.0), lr=1e-3)
        curves[name] = []
        for _ in range(10):
            loss, _, emb, _ = step(model, recipe, joint, passages, autocast=True)
            optimizer.step()
            curves[name].append((float(loss), emb))
    assert curves["autocast"][0][0] == curves["bf16 base"][0][0]
    assert torch.equal(curves["autocast"][0][1], curves["bf16 base"][0][1])
    for (a, _), (b, _) in zip(curves["autocast"], curves["bf16 base"], strict=True):
        assert abs(a - b) / a < 2e-3, curves
    assert curves["bf16 base"][-1][0] < curves["bf16 base"][0][0]  # it trains


def test_pretrain_in_bf16_merges_into_the_exact_fp32_base(tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(TEXTS) + ".\n\nThe index is a model of data. A query reads the library.\n")
    o = PretrainOptions(output=tmp_path / "out", max_steps=2, train_batch_size=2, save_every=2, precision="bf16")
    out = run_pretrain(str(tiny_model_dir), corpus, o)
    saved, base = load_file(out / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    norms = [k for k in base if "norm" in k]
    assert norms and all(torch.equal(saved[k], base[k]) for k in norms)  # untrained: bit for bit the fp32 base
    key = "model.layers.0.self_attn.q_proj.weight"
    assert saved[key].dtype == torch.float32 and not torch.equal(saved[key], base[key])  # LoRA merged in


def test_resume_in_bf16_continues_exactly(tiny_model_dir, tmp_path):
    """A run killed after its step-2 checkpoint and resumed ends where the uninterrupted one does
    (the bf16 weights and the LM head's cached copy follow the loaded checkpoint)."""
    import shutil

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((" ".join(TEXTS) + ".\n\nThe index is a model of data. A query reads the library.\n") * 3)

    def opts(name, **kw):
        sizes = {"max_steps": 4, "train_batch_size": 2, "save_every": 2}
        return PretrainOptions(output=tmp_path / name, precision="bf16", **sizes, **kw)

    full = run_pretrain(str(tiny_model_dir), corpus, opts("a"))
    killed = opts("b")
    run_pretrain(str(tiny_model_dir), corpus, killed)
    shutil.rmtree(killed.output)
    shutil.rmtree(killed.checkpoint_dir / "checkpoint-4")
    resumed = run_pretrain(str(tiny_model_dir), corpus, opts("b", resume=True))
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_cheap_dropout_keeps_the_rate_the_scale_and_the_seeding():
    from torch import nn

    from llara.training.speed import CheapDropout

    drop = nn.Dropout(0.05)
    drop.__class__ = CheapDropout
    x = torch.ones(1000, 1000, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.95) < 0.002  # 1e6 draws: 4 standard deviations ~ 0.0009
    assert y.dtype == x.dtype and torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.95))
    y.float().sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through the kept elements only
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # torch's seed governs the masks
    assert not torch.equal(drop(x), y)  # ... and each call draws a new one
    rows = (y != 0).float().mean(dim=1)
    assert rows.std() < 0.02  # no structure across rows (16-bit words read in order)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_cheap_dropout_replaces_lora_dropout_on_cpu(tiny_model_dir, tmp_path):
    from llara.training.speed import CheapDropout

    model, *_ = build(tiny_model_dir, tmp_path, lora_dropout=0.1)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(type(m) is CheapDropout and m.p == 0.1 for m in drops)
    slow, *_ = build(tiny_model_dir, tmp_path, lora_dropout=0.1, cheap_dropout=False)
    assert not any(isinstance(m, CheapDropout) for m in slow.modules())


def test_one_switch_turns_every_fast_path_off(tiny_model_dir, tmp_path):
    from llara.training.speed import CheapDropout

    model, *_ = build(tiny_model_dir, tmp_path, fast_paths=False, lora_dropout=0.1, precision="bf16")
    assert model.config._attn_implementation == "sdpa"
    assert not any(getattr(type(m), "_llara_lean", False) or isinstance(m, CheapDropout) for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # no bf16-held base


def test_fast_paths_fail_closed_where_no_test_proves_them(tiny_model_dir, tmp_path, monkeypatch):
    from llara import compat
    from llara.testing import make_tiny_model
    from llara.training.common import fast_path, fast_paths_off

    opts = PretrainOptions(output=tmp_path / "unused", max_steps=1)
    assert fast_paths_off(opts) is None and fast_path(opts, "lean_lora")
    ds = PretrainOptions(output=tmp_path / "unused", max_steps=1, deepspeed="configs/ds_zero1.json")
    assert "DeepSpeed" in fast_paths_off(ds) and not fast_path(ds, "lean_lora")
    monkeypatch.setattr(compat, "caps", lambda: {"peft": "0.0.1"})  # a PEFT newer than any tested
    assert "peft" in fast_paths_off(opts) and not fast_path(opts, "cheap_dropout")
    monkeypatch.undo()
    gemma2, _ = load_model(make_tiny_model(tmp_path / "gemma2", arch="gemma2"))
    assert not fast_path(opts, "cpu_attention", gemma2.config)  # soft-capped attention: transformers' own
    assert fast_path(opts, "cpu_attention", load_model(tiny_model_dir)[0].config)


def test_lean_lora_leaves_a_layer_whose_peft_internals_moved_to_peft(tiny_model_dir, tmp_path, monkeypatch):
    from llara import compat
    from llara.training.speed import lean_lora

    model, *_ = build(tiny_model_dir, tmp_path, lean_lora=False)
    monkeypatch.setitem(compat.PEFT_INTERNALS, "lora_linear", (*compat.PEFT_INTERNALS["lora_linear"], "renamed_attr"))
    swapped = lean_lora(model)
    tokens = sum(compat.is_trainable_tokens_layer(m) for m in model.modules())  # embedding and tied LM head
    assert swapped == tokens == 2  # the special-token rows only: no LoRA linear layer was swapped
    assert not any(getattr(type(m), "_llara_lean", False) for m in model.modules() if compat.is_lora_linear(m))
