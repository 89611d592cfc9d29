"""llara's "reference" (and "paper") recipe against a literal re-reading of the authors' code.

The reference (FlagEmbedding, research/LLARA) builds inputs as
    tokenizer('"')  [WITH special tokens: BOS on LLaMA]  + text ids + suffix ids (no special tokens),
pads on the left (pad = unk when the tokenizer has none), and for pretraining appends both suffixes,
copies the EBAE suffix's position ids onto the EBAR suffix, hides the EBAE suffix from the EBAR
suffix, and computes ar_loss + bow (each bag-of-words term: max over the 8 special positions,
log-softmax, -mean over the target's unique ids > 2, averaged over examples with a target, / 10;
averaged over the tasks present). The functions named `ref_*` below re-read that code line by line,
independently of llara's implementation, on a tokenizer built in code that adds BOS and has no pad
token (like LLaMA-2's: unk 0, bos 1, eos 2).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from llara.inference.encoder import LlaraEncoder
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder, add_special_tokens
from llara.modeling.recipes import load_recipe
from llara.testing import make_tiny_model, make_tokenizer
from llara.training.common import special_token_ids
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.data import PretrainDataset
from llara.training.pretrain.loss import joint_loss
from llara.training.pretrain.stopwords import remove_stop_words

TOL = 1e-5
PIECES = {  # recipe -> (prefix, EBAE suffix, EBAR suffix, pooled tokens), as the reference code writes them
    "reference": (
        '"',
        '", summarize the above passage within eight words: <s1><s2><s3><s4><s5><s6><s7><s8>',
        '", predict the following passage within eight words: <s9><s10><s11><s12><s13><s14><s15><s16>',
        8,
    ),
    "paper": ("", " The original sentence: <|eos|>", " The next sentence: <|eos|>", 1),
}
TEXTS = [
    "the dense retrieval model is a query of the index.",
    "a library of information science data, text and token: next summarize!",
    "index",
    "what is a language model for search and classification of documents?",
]


@pytest.fixture(scope="module")
def bos_model(tmp_path_factory):
    """A tiny LLaMA whose tokenizer adds BOS and has no pad token, with the 16 special tokens added."""
    folder = tmp_path_factory.mktemp("bos-llama")
    make_tiny_model(folder, tokenizer=make_tokenizer(folder, add_bos=True, pad=False))
    model, tokenizer = load_model(folder)
    assert tokenizer("index")["input_ids"][0] == tokenizer.bos_token_id and tokenizer.pad_token is None
    torch.manual_seed(0)
    add_special_tokens(model, tokenizer, load_recipe("reference"))
    return model.float().eval(), tokenizer


# ------------------------------------------------------------------------------ the re-reading
def ref_ids(tok, prefix: str, suffix: str, text: str, max_len: int) -> list[int]:
    """finetune/data.py: prefix with special tokens, text truncated to what the prompt leaves."""
    prefix_ids = tok(prefix)["input_ids"]
    suffix_ids = tok(suffix, add_special_tokens=False)["input_ids"]
    room = max_len - len(prefix_ids) - len(suffix_ids)
    body = tok(text, add_special_tokens=False, truncation=True, max_length=room)["input_ids"]
    return prefix_ids + body + suffix_ids


def ref_left_pad(tok, rows: list[list[int]], multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id  # run.py: pad = unk
    width = -(-max(map(len, rows)) // multiple) * multiple
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def ref_embed(model, tok, recipe: str, side: str, texts: list[str], max_len: int) -> torch.Tensor:
    """README usage / finetune/modeling.py: hidden_states[-1][:, -k:] mean, L2-normalised."""
    prefix, s1, s2, k = PIECES[recipe]
    ids, mask = ref_left_pad(tok, [ref_ids(tok, prefix, s1 if side == "passage" else s2, t, max_len) for t in texts])
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    return F.normalize(hidden[:, -k:].mean(1), dim=-1)


def ref_pretrain_loss(model, tok, recipe: str, rows: list[dict], cutoff: int, stop_words: bool, lm: bool):
    """pretrain/data.py (dataset + collator) and pretrain/modeling.py (mask, positions, losses)."""
    prefix, s1, s2, k = PIECES[recipe]
    prefix_ids = tok(prefix, truncation=True, max_length=cutoff)["input_ids"]
    sum_ids = tok(s1, add_special_tokens=False)["input_ids"]
    pred_ids = tok(s2, add_special_tokens=False)["input_ids"]
    seqs, labels, outs_s, outs_p = [], [], [], []
    for row in rows:
        body = tok(row["input"], truncation=True, add_special_tokens=False,
                   max_length=cutoff - len(prefix_ids) - len(sum_ids) - len(pred_ids))["input_ids"]  # fmt: skip
        seq = prefix_ids + body + sum_ids + pred_ids
        seqs.append(seq)
        labels.append([-100] * len(prefix_ids) + body + [-100] * (len(sum_ids) + len(pred_ids)))
        o_s, o_p = row["output_summarize"], row["output_predict"]
        if stop_words:
            o_s, o_p = remove_stop_words(o_s), remove_stop_words(o_p)
        outs_s.append(tok(o_s, truncation=True, max_length=cutoff)["input_ids"])
        outs_p.append(tok(o_p, truncation=True, max_length=cutoff)["input_ids"])
    ids, mask = ref_left_pad(tok, seqs)
    width = ids.shape[1]
    lab = torch.tensor([[-100] * (width - len(r)) + r for r in labels])
    # positions 0..L-1 (padding included, as cache_position gives), EBAR suffix reusing the EBAE suffix's
    pos = torch.arange(width).repeat(len(rows), 1)
    n1, n2 = len(sum_ids), len(pred_ids)
    pos[:, -n2:] = pos[:, -n1 - n2 : -n1 - n2 + n2].clone()
    causal = torch.full((width, width), torch.finfo(torch.float32).min).triu(1)
    full = causal[None, None].repeat(len(rows), 1, 1, 1)
    full = full.masked_fill(mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)
    full[:, :, -n2:, -n2 - n1 : -n2] = torch.finfo(torch.float32).min
    full[:, :, torch.arange(width), torch.arange(width)] = torch.where(  # padding rows: not all -inf
        mask[:, None, :] == 0, 0.0, full[:, :, torch.arange(width), torch.arange(width)]
    )
    logits = model(input_ids=ids, attention_mask=full, position_ids=pos, use_cache=False).logits.float()
    ar = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1)) if lm else None

    def bow(special_logits, outs):
        p = torch.log_softmax(special_logits.max(dim=1).values, dim=1)
        loss, count = 0.0, 0
        for row_p, out in zip(p, outs, strict=True):
            useful = torch.unique(torch.tensor([t for t in out if t > 2], dtype=torch.long))
            if len(useful) > 0:
                loss = loss - row_p[useful].mean()
                count += 1
        return loss / count / 10 if count else 0.0

    b_s = bow(logits[:, -n2 - k : -n2], outs_s)
    b_p = bow(logits[:, -k:], outs_p)
    if b_s > 0 and b_p > 0:
        total = (b_s + b_p) / 2
    else:
        total = b_s if b_s > 0 else b_p
    return (ar + total if lm else total), seqs


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("recipe", ["reference", "paper"])
@pytest.mark.parametrize("side", ["passage", "query"])
def test_input_ids_and_embeddings_match_the_reference(bos_model, recipe, side):
    model, tok = bos_model
    prefix, s1, s2, _ = PIECES[recipe]
    max_len = 40  # short enough that the longest text is truncated
    texts = [*TEXTS, TEXTS[1] * 4]
    built = PromptBuilder(tok, recipe).build(texts, side, max_len)
    expected = [ref_ids(tok, prefix, s1 if side == "passage" else s2, t, max_len) for t in texts]
    assert built == expected
    assert all(row[0] == tok.bos_token_id for row in built)  # what llara used to leave out
    assert any(len(row) == max_len for row in built)  # truncation exercised

    encoder = LlaraEncoder(model, tok, recipe=recipe, precision="fp32", device="cpu",
                           query_max_length=max_len, passage_max_length=max_len)  # fmt: skip
    ours = torch.from_numpy(encoder.encode(texts, side=side, batch_size=3))
    theirs = ref_embed(model, tok, recipe, side, texts, max_len)
    assert (ours - theirs).abs().max() < TOL


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"input": TEXTS[0], "output_summarize": TEXTS[0], "output_predict": TEXTS[1]},
    {"input": TEXTS[1] * 3, "output_summarize": TEXTS[1] * 3, "output_predict": TEXTS[3]},  # truncated
    {"input": TEXTS[2], "output_summarize": TEXTS[2], "output_predict": TEXTS[0]},
]
LAST = [dict(r, output_predict="") for r in ROWS]  # no example has a next passage: EBAE/10 alone


@pytest.mark.parametrize("recipe", ["reference", "paper"])
@pytest.mark.parametrize("rows", [ROWS, LAST], ids=["both-tasks", "no-next-passage"])
@pytest.mark.parametrize("stop_words", [False, True])
@pytest.mark.parametrize("lm", [False, True])
def test_pretraining_loss_matches_the_reference(bos_model, tmp_path, recipe, rows, stop_words, lm):
    model, tok = bos_model
    cutoff = 72
    recipe_ = load_recipe(recipe)
    prompts = PromptBuilder(tok, recipe_)
    exclude = set(tok.all_special_ids) | set(special_token_ids(tok, recipe_))
    collator = PretrainCollator(prompts, exclude, lm_loss=lm)
    dataset = PretrainDataset(write_rows(tmp_path / "rows.jsonl", rows), tok, cutoff - collator.prompt_length(),
                              target_length=cutoff, remove_stop_words=stop_words)  # fmt: skip
    features = list(dataset.chunks())
    batch = collator(features)
    expected, ref_seqs = ref_pretrain_loss(model, tok, recipe, rows, cutoff, stop_words, lm)
    # the same joint rows, token for token, none longer than --chunk-tokens
    ours = [row[real].tolist() for row, real in zip(batch["input_ids"], batch["real"], strict=True)]
    assert ours == ref_seqs
    assert max(len(s) for s in ours) == cutoff
    with torch.no_grad():
        total, parts = joint_loss(model, batch)
    total = total.detach()
    assert abs(float(total) - float(expected)) < TOL, (float(total), float(expected))
    assert ("ebar" in parts) == (rows is ROWS)


def test_chunk_tokens_bounds_the_joint_row(bos_model, tmp_path):
    """--chunk-tokens is the whole joint row (prefix + text + both suffixes), as the reference's cutoff_len."""
    _, tok = bos_model
    recipe = load_recipe("reference")
    collator = PretrainCollator(PromptBuilder(tok, recipe), set(tok.all_special_ids))
    corpus = tmp_path / "c.txt"
    # one long sentence (cut at the budget) and a document of whole sentences (packed below it)
    corpus.write_text(" ".join(TEXTS[3].rstrip("?") for _ in range(30)) + "\n\n" + " ".join(TEXTS * 20) + "\n")
    for chunk_tokens in (64, 80):
        dataset = PretrainDataset(corpus, tok, chunk_tokens - collator.prompt_length(), target_length=chunk_tokens)
        batch = collator(list(dataset.chunks()))
        lengths = batch["real"].sum(1)
        assert lengths.max() == chunk_tokens and (lengths <= chunk_tokens).all()
        assert (lengths < chunk_tokens).any()


def test_stop_word_removal_is_the_references():
    assert remove_stop_words("The index, of a Library: isn't it? data_text 42!") == "index Library data text 42"
