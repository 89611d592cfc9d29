"""Property-based tests: readers return the right data or raise LlaraError (never anything else), and
the prompt builder keeps its promises for every text and length."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llara.data.beir import read_corpus, read_qrels, read_queries
from llara.data.io import iter_jsonl, skip_bad_rows
from llara.errors import LlaraError
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import SIDES, SPECIAL_TOKENS
from llara.retrieval.runs import read_trec_run, write_trec_run
from tests.conftest import make_tokenizer

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

unicode_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)  # controls and all planes
surrogate = st.characters(categories=("Cs",))
some_text = unicode_text.filter(lambda s: s.strip())
json_id = st.one_of(
    st.integers(0, 10**15),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
        lambda s: not any(c.isspace() for c in s)  # whitespace ids are refused: a TREC run could not hold them
    ),
)


# One folder for the whole module, removed at interpreter exit: thousands of examples must not leave
# thousands of folders behind in /tmp.
SCRATCH_ROOT = tempfile.TemporaryDirectory(prefix="llara-fuzz-")


def scratch(content: bytes, name: str = "f.jsonl") -> Path:
    """Each example gets its own file (hypothesis forbids function-scoped fixtures like tmp_path)."""
    folder = Path(tempfile.mkdtemp(dir=SCRATCH_ROOT.name))
    path = folder / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------------- arbitrary input
line_bytes = st.one_of(
    st.binary(max_size=40),
    unicode_text.map(lambda s: s.encode("utf-8")),
    st.builds(lambda s: json.dumps({"_id": s, "text": s}).encode(), st.text(max_size=20)),  # may hold \\udXXX
    st.builds(lambda i, s: json.dumps({"_id": i, "title": s}, ensure_ascii=False).encode(), json_id, unicode_text),
    st.builds(lambda a, b: f"{a}\t{b}\t1".encode(), some_text, some_text),
    st.builds(lambda a, b, x: f"{a} Q0 {b} 1 {x} t".encode(), some_text, some_text, st.floats()),
    st.sampled_from([b"[" * 5000, b'{"a": ' + b"9" * 5000 + b"}", b"\xef\xbb\xbf{}", b"\xed\xa0\x80", b"\x00\r"]),
)
any_file = st.lists(line_bytes, max_size=8).map(lambda lines: b"\n".join(lines))
READERS = {
    "jsonl": lambda p: list(iter_jsonl(p)),
    "corpus": read_corpus,
    "queries": read_queries,
    "qrels": read_qrels,
    "run": read_trec_run,
}


def nonblank_lines(content: bytes) -> int:
    """Lines a reader must either return or count as skipped (blank ones are not rows)."""
    n = 0
    for i, raw in enumerate(content.split(b"\n")):
        raw = raw[3:] if i == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            n += bool(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            n += 1
    return n


@FUZZ
@given(content=any_file, reader=st.sampled_from(sorted(READERS)), skip=st.booleans())
def test_readers_raise_only_llara_errors(content, reader, skip):
    path = scratch(content)
    with skip_bad_rows(skip) as tally:
        try:
            result = READERS[reader](path)
        except LlaraError as e:
            assert str(path) in str(e)  # every error names its file
            if skip:
                assert e.line is None  # row errors are skipped, only file-level ones stop
            return
    if skip and reader in ("corpus", "run", "jsonl"):  # nothing vanishes: every row is kept or counted
        kept = sum(len(v) for v in result.values()) if reader == "run" else len(result)
        assert kept + tally.count == nonblank_lines(content)


# --------------------------------------------------------------------------------- valid input round-trips
corpus_rows = st.lists(  # empty and blank texts included: an empty document is legal (BEIR), kept
    st.fixed_dictionaries({"_id": json_id, "text": unicode_text}, optional={"title": unicode_text}),
    min_size=1,
    max_size=6,
    unique_by=lambda r: str(r["_id"]),
)


@FUZZ
@given(rows=corpus_rows, ascii_only=st.booleans(), crlf=st.booleans(), bom=st.booleans())
def test_corpus_round_trip(rows, ascii_only, crlf, bom):
    end = "\r\n" if crlf else "\n"
    text = "".join(json.dumps(r, ensure_ascii=ascii_only) + end for r in rows)
    path = scratch(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    expected = {str(r["_id"]): {"title": r.get("title", ""), "text": r["text"]} for r in rows}
    assert read_corpus(path) == expected


@FUZZ
@given(rows=corpus_rows, where=st.integers(0, 5), bad=surrogate, raw=st.booleans())
def test_lone_surrogates_are_named_by_line(rows, where, bad, raw):
    """A surrogate escaped in JSON (\\ud800) or written as raw bytes (ED A0 80) is a bad row, not a crash."""
    where = where % len(rows)
    rows[where] = {**rows[where], "text": "ok " + bad}
    lines = []
    for r in rows:
        lines.append(json.dumps(r, ensure_ascii=not raw).encode("utf-8", "surrogatepass") + b"\n")
    path = scratch(b"".join(lines))
    with pytest.raises(LlaraError) as err:
        read_corpus(path)
    assert err.value.line == where + 1
    assert ("not valid UTF-8" in err.value.message) if raw else (err.value.field == "text")
    with skip_bad_rows() as tally:
        if len(rows) > 1:
            assert str(rows[where]["_id"]) not in read_corpus(path)
    assert tally.count == (1 if len(rows) > 1 else 0)


tsv_id = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\t\n\r"), min_size=1, max_size=20)
tsv_id = tsv_id.filter(lambda s: s.strip() and s != "query-id")


@FUZZ
@given(
    judgements=st.dictionaries(st.tuples(tsv_id, tsv_id), st.integers(-2, 3), min_size=1, max_size=8),
    header=st.booleans(),
)
def test_qrels_round_trip(judgements, header):
    text = ("query-id\tcorpus-id\tscore\n" if header else "") + "".join(
        f"{q}\t{d}\t{r}\n" for (q, d), r in judgements.items()
    )
    expected: dict = {}
    for (q, d), r in judgements.items():
        expected.setdefault(q, {})[d] = r
    assert read_qrels(scratch(text.encode(), "test.tsv")) == expected


run_id = st.text(st.characters(exclude_categories=("Cs", "Z", "Cc")), min_size=1, max_size=20)
run_id = run_id.filter(lambda s: len(s.split()) == 1 and s.split()[0] == s)  # str.split() knows more spaces


@FUZZ
@given(run=st.dictionaries(run_id, st.dictionaries(run_id, st.floats(-1e6, 1e6), min_size=1, max_size=5), max_size=5))
def test_trec_run_round_trip(run):
    path = scratch(b"", "run.trec")
    write_trec_run(path, run)
    back = read_trec_run(path)
    assert back.keys() == run.keys()
    for qid, scores in run.items():
        assert back[qid].keys() == scores.keys()
        assert all(abs(back[qid][d] - s) <= 1e-6 for d, s in scores.items())


# --------------------------------------------------------------------------------- prompt builder
@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    tokenizer = make_tokenizer(tmp_path_factory.mktemp("tok"))
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    return {name: PromptBuilder(tokenizer, name) for name in ("reference", "paper", "repllama", "mean")}


@FUZZ
@given(
    text=unicode_text | st.text(st.sampled_from("the retrieval é 字 \x00\n"), max_size=400),
    recipe=st.sampled_from(["reference", "paper", "repllama"]),
    side=st.sampled_from(SIDES),
    data=st.data(),
)
def test_wrap_keeps_suffix_and_length(builders, text, recipe, side, data):
    b = builders[recipe]
    prefix, suffix = b.pieces[side]
    ids = b.text_ids([text])[0]
    # max_length near the prompt's own length, and near the point where the text starts to be cut
    room = data.draw(st.one_of(st.integers(-3, 4), st.integers(len(ids) - 3, len(ids) + 3)), label="room")
    max_length = len(prefix) + len(suffix) + room
    if room < 1:
        with pytest.raises(LlaraError, match="leaves no room for text"):
            b.build([text], side, max_length)
        return
    truncated_before = b.truncated
    [seq] = b.build([text], side, max_length)
    assert len(seq) <= max_length
    assert seq[: len(prefix)] == prefix and seq[len(seq) - len(suffix) :] == suffix
    assert seq[len(prefix) : len(seq) - len(suffix)] == ids[:room]
    assert seq[-b.recipe.pool_tokens :] == b.special_ids(side)
    assert b.truncated - truncated_before == (len(ids) > room)


@FUZZ
@given(
    texts=st.lists(unicode_text, min_size=1, max_size=5),
    recipe=st.sampled_from(["reference", "paper", "mean"]),
    side=st.sampled_from(SIDES),
    max_length=st.integers(40, 90),
    multiple_of=st.sampled_from([1, 8]),
)
def test_left_padding_and_position_ids(builders, texts, recipe, side, max_length, multiple_of):
    b = builders[recipe]
    seqs = b.build(texts, side, max_length)
    batch = b.pad(seqs, multiple_of=multiple_of)
    width = batch["input_ids"].shape[1]
    longest = max(len(s) for s in seqs)
    assert width % multiple_of == 0 and longest <= width < longest + multiple_of
    k = b.recipe.pool_tokens
    for i, seq in enumerate(seqs):
        pad = width - len(seq)
        assert batch["input_ids"][i, pad:].tolist() == seq
        assert batch["input_ids"][i, :pad].tolist() == [b.pad_id] * pad
        assert batch["attention_mask"][i].tolist() == [0] * pad + [1] * len(seq)
        assert batch["position_ids"][i, pad:].tolist() == list(range(len(seq)))
        if k:  # "last" pooling reads the final k columns: they must be this row's special tokens
            assert batch["input_ids"][i, -k:].tolist() == b.special_ids(side)


@settings(max_examples=20, deadline=None)
@given(text=st.text(surrogate, min_size=1, max_size=3))
def test_lone_surrogate_text_is_a_clear_error(builders, text):
    with pytest.raises(LlaraError, match="text 1 is not valid Unicode"):
        builders["reference"].build(["fine", "a" + text], "passage", 64)


# --------------------------------------------------------------------------------- joint EBAE/EBAR mask
@FUZZ
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    recipe=st.sampled_from(["reference", "paper"]),
)
def test_joint_mask_and_positions(builders, lengths, recipe):
    """Against a from-scratch reference: causal over real tokens, padding masked (rows see only
    themselves), the EBAR suffix blind to the EBAE suffix, and EBAR positions restarting where EBAE's do."""
    from llara.training.pretrain.collator import PretrainCollator

    b = builders[recipe]
    collator = PretrainCollator(b, exclude_ids=[])
    p, s1, s2 = len(collator.prefix), len(collator.ebae_suffix), len(collator.ebar_suffix)
    features = [{"text_ids": [7] * n, "own_ids": [7], "next_ids": [8]} for n in lengths]
    batch = collator(features)
    mask, pos, ids = batch["attention_mask"][:, 0], batch["position_ids"], batch["input_ids"]
    width = ids.shape[1]
    assert width == p + max(lengths) + s1 + s2
    ebae = range(width - s2 - s1, width - s2)
    ebar = range(width - s2, width)
    for i, n in enumerate(lengths):
        pad = width - (p + n + s1 + s2)
        assert ids[i, pad:].tolist() == collator.prefix + [7] * n + collator.ebae_suffix + collator.ebar_suffix
        assert batch["real"][i].tolist() == [False] * pad + [True] * (width - pad)
        for q in range(width):
            for k_ in range(width):
                if q < pad:
                    allowed = k_ == q
                else:
                    allowed = pad <= k_ <= q and not (q in ebar and k_ in ebae)
                assert bool(mask[i, q, k_]) == allowed, (i, q, k_)
        real_pos = pos[i, pad:].tolist()
        assert real_pos[: p + n + s1] == list(range(p + n + s1))  # prefix, text, EBAE: plain counting
        ebae_start = p + n
        assert real_pos[p + n + s1 :] == list(range(ebae_start, ebae_start + s2))  # EBAR sits after the text
        assert batch["ebae_special"][i].nonzero().flatten().tolist() == list(ebae)[-b.recipe.pool_tokens :]
        assert batch["ebar_special"][i].nonzero().flatten().tolist() == list(ebar)[-b.recipe.pool_tokens :]
        assert ids[i, batch["ebae_special"][i]].tolist() == b.special_ids("passage")
        assert ids[i, batch["ebar_special"][i]].tolist() == b.special_ids("query")


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from llara.modeling.loading import load_model
    from llara.modeling.prompts import add_special_tokens
    from llara.modeling.recipes import load_recipe

    model, tokenizer = load_model(tiny_model_dir)
    add_special_tokens(model, tokenizer, load_recipe("reference"))
    return model.eval(), tokenizer


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(0, 20), min_size=1, max_size=3), recipe=st.sampled_from(["reference", "paper"]))
def test_joint_pass_states_equal_separate_passes(tiny_lm, lengths, recipe):
    """The model itself, not just the mask tensor: every suffix token's last hidden state in the
    joint pass equals the one from its own separate, ordinary pass, whatever the padding."""
    import torch

    from llara.training.pretrain.collator import PretrainCollator

    model, tokenizer = tiny_lm
    collator = PretrainCollator(PromptBuilder(tokenizer, recipe), exclude_ids=[])
    s1, s2 = len(collator.ebae_suffix), len(collator.ebar_suffix)
    g = torch.Generator().manual_seed(sum(lengths))
    features = [
        {"text_ids": torch.randint(3, 300, (n,), generator=g).tolist(), "own_ids": [5], "next_ids": [6]}
        for n in lengths
    ]

    def states(batch):
        with torch.no_grad():
            out = model.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                use_cache=False,
            )
        return out.last_hidden_state

    joint = states(collator(features))
    ebae, ebar = (states(b) for b in collator.separate(features))
    torch.testing.assert_close(joint[:, -s2 - s1 : -s2], ebae[:, -s1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(joint[:, -s2:], ebar[:, -s2:], atol=1e-4, rtol=1e-4)
