"""Index types on small clustered data, and an index that refuses what it was not built for."""

import json

import faiss
import numpy as np
import pytest

from llara.errors import LlaraError
from llara.inference.corpus import encode_corpus_file
from llara.modeling.prompts import Passages
from llara.modeling.recipes import load_recipe
from llara.retrieval.index import DenseIndex, IndexParams, build_index
from llara.retrieval.options import BUILD_TYPES, INDEX_TYPES, hnsw_ef_search

N, DIM = 3000, 32


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class FakeEncoder:
    """Stands in for LlaraEncoder: returns planted vectors, so the index tests need no model."""

    def __init__(self, vectors: np.ndarray, model: str = "m1", recipe: str = "reference") -> None:
        self.vectors, self.dim = vectors, vectors.shape[1]
        self.recipe = load_recipe(recipe)
        self.max_length = {"query": 64, "passage": 256}
        self.amp_dtype = None
        self._model = model

    def fingerprint(self) -> str:
        return self._model

    def encode_corpus(self, docs, **kwargs) -> np.ndarray:
        return self.vectors[[int(d["text"]) for d in docs]]

    def passages(self, docs, long_documents="split", max_length=None) -> Passages:
        return Passages([d["text"] for d in docs], list(range(len(docs))), len(docs))  # every document fits

    def encode_documents(self, docs, long_documents="split", **kwargs) -> tuple[np.ndarray, Passages]:
        return self.encode_corpus(docs), self.passages(docs)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emb")
    vectors = clustered(N, 0)
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": str(i)}) + "\n" for i in range(N)))
    encode_corpus_file(FakeEncoder(vectors), corpus, folder / "emb", chunk_size=700, show_progress_bar=False)
    return folder / "emb", vectors


@pytest.fixture(scope="module")
def indexes(embeddings, tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    params = IndexParams(ef_construction=100, ef_search=64, nprobe=8)
    return {t: build_index(embeddings[0], root / t, t, params) and DenseIndex(root / t) for t in INDEX_TYPES}


def recall_at_10(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)]))


def test_flat_is_exact(indexes, embeddings):
    vectors = embeddings[1]
    queries = clustered(40, 1)
    _, rows = indexes["flat"].search(queries, 10)
    brute = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    assert recall_at_10(rows, brute) == 1.0
    assert indexes["flat"].ids[rows[0, 0]] == f"d{rows[0, 0]}"


def test_hnsw_ivf_and_ivfpq_find_the_exact_neighbours(indexes):
    queries = clustered(100, 2)
    _, exact = indexes["flat"].search(queries, 10)
    _, hnsw = indexes["hnsw"].search(queries, 10)
    _, hnswsq = indexes["hnswsq"].search(queries, 10)
    _, ivf = indexes["ivf"].search(queries, 10)
    _, ivfpq = indexes["ivfpq"].search(queries, 10)
    assert recall_at_10(hnsw, exact) >= 0.95
    assert recall_at_10(hnswsq, exact) >= 0.95
    assert recall_at_10(ivf, exact) >= 0.9
    assert recall_at_10(ivfpq, exact) >= 0.5
    meta = indexes["ivfpq"].meta
    assert meta["params"]["pq_m"] == 8 and DIM % meta["params"]["pq_m"] == 0 and meta["params"]["nlist"] >= 8
    # a wider search finds more of the exact neighbours
    indexes["hnsw"].configure(ef_search=8)
    _, narrow = indexes["hnsw"].search(queries, 10)
    indexes["hnsw"].configure(ef_search=64)
    assert recall_at_10(narrow, exact) < recall_at_10(hnsw, exact)
    indexes["hnswsq"].configure(ef_search=8)
    _, narrow = indexes["hnswsq"].search(queries, 10)
    indexes["hnswsq"].configure(ef_search=64)
    assert recall_at_10(narrow, exact) < recall_at_10(hnswsq, exact)
    # so do more IVF cells, and all of them is an exact scan of the float vectors
    ivf_index = indexes["ivf"]
    ivf_index.configure(nprobe=1)
    _, one_cell = ivf_index.search(queries, 10)
    ivf_index.configure(nprobe=ivf_index.meta["params"]["nlist"])
    _, every_cell = ivf_index.search(queries, 10)
    ivf_index.configure(nprobe=8)
    assert recall_at_10(one_cell, exact) < recall_at_10(ivf, exact) < recall_at_10(every_cell, exact) == 1.0


def test_ivf_defaults_reach_high_recall(embeddings, tmp_path):
    build_index(embeddings[0], tmp_path / "ivf", "ivf")
    index = DenseIndex(tmp_path / "ivf")
    p = index.meta["params"]
    assert (p["nlist"], p["nprobe"]) == (N // 39, -(-(N // 39) // 8))  # 4 sqrt(N) capped at N/39; nlist / 8
    assert faiss.extract_index_ivf(index.index).nprobe == p["nprobe"]  # stored in the index
    queries = clustered(100, 2)
    _, rows = index.search(queries, 10)
    brute = np.argsort(-(queries @ embeddings[1].T), axis=1)[:, :10]
    assert recall_at_10(rows, brute) >= 0.95


def test_auto_picks_the_type_by_collection_size(embeddings, tmp_path):
    assert IndexParams().choose_type(IndexParams.flat_max) == "flat"
    assert IndexParams().choose_type(IndexParams.flat_max + 1) == "hnswsq"
    small = build_index(embeddings[0], tmp_path / "small", params=IndexParams(flat_max=N))  # auto is the default
    assert (small["index_type"], small["requested_type"]) == ("flat", "auto")
    large = build_index(embeddings[0], tmp_path / "large", "auto", IndexParams(flat_max=N - 1))
    assert (large["index_type"], large["requested_type"]) == ("hnswsq", "auto")
    index = DenseIndex(tmp_path / "large")  # opens as the type it was built as, its search settings stored
    refine = faiss.downcast_index(index.index)
    graph = faiss.downcast_index(refine.base_index)
    assert (type(refine).__name__, type(graph).__name__) == ("IndexRefineFlat", "IndexHNSWSQ")
    assert index.meta["params"]["ef_search"] == hnsw_ef_search(N) == graph.hnsw.efSearch
    assert refine.k_factor == IndexParams.refine_factor


def test_default_search_beam_grows_with_the_collection():
    beams = [IndexParams().resolve(n, 576, "hnsw").ef_search for n in (10**4, 10**5, 10**6, 10**7)]
    assert beams == sorted(beams) and beams[0] >= 10
    assert IndexParams(ef_search=40).resolve(10**6, 576, "hnsw").ef_search == 40  # a given value wins


def test_cli_index_defaults_come_from_index_params(embeddings, tmp_path):
    from typer.testing import CliRunner

    from llara.cli import app
    from llara.retrieval.options import IndexType

    assert tuple(t.value for t in IndexType) == BUILD_TYPES
    runner = CliRunner()
    res = runner.invoke(app, ["index", "--embeddings", str(embeddings[0]), "--output", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["index_type"] == "flat" and meta["requested_type"] == "auto"
    defaults = IndexParams().resolve(N, DIM, "flat")
    assert meta["params"] == {k: v for k, v in vars(defaults).items()}
    args = ["--type", "ivf", "--nprobe", "3", "--nlist", "20"]
    res = runner.invoke(app, ["index", "--embeddings", str(embeddings[0]), "--output", str(tmp_path / "b"), *args])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert (meta["index_type"], meta["params"]["nlist"], meta["params"]["nprobe"]) == ("ivf", 20, 3)


def test_metadata_records_model_recipe_dim_and_type(indexes):
    meta = indexes["hnsw"].meta
    assert (meta["model"], meta["recipe"], meta["dim"], meta["count"], meta["index_type"]) == (
        "m1",
        "reference",
        DIM,
        N,
        "hnsw",
    )


@pytest.mark.parametrize(
    "other, field",
    [
        (dict(model="m2"), "model"),
        (dict(recipe="paper"), "recipe"),
        (dict(vectors=np.zeros((1, DIM + 1), np.float32)), "dim"),
    ],
)
def test_queries_from_another_model_recipe_or_dim_are_refused(indexes, embeddings, other, field):
    indexes["flat"].check_encoder(FakeEncoder(embeddings[1]))  # the right one passes
    enc = FakeEncoder(**{"vectors": embeddings[1], **other})
    with pytest.raises(LlaraError) as e:
        indexes["flat"].check_encoder(enc)
    assert e.value.field == field


def test_index_whose_files_do_not_match_its_metadata_is_refused(embeddings, tmp_path):
    folder = tmp_path / "idx"
    build_index(embeddings[0], folder, "flat")
    DenseIndex(folder)
    ids = (folder / "ids.txt").read_text()
    (folder / "ids.txt").write_text(ids.replace("d1\n", "dX\n", 1))  # same size, other content
    with pytest.raises(LlaraError, match="ids.txt"):
        DenseIndex(folder)
    (folder / "ids.txt").write_text(ids)
    other = faiss.IndexFlatIP(DIM)
    other.add(clustered(10, 3))
    faiss.write_index(other, str(folder / "index.faiss"))
    with pytest.raises(LlaraError, match="index.faiss"):
        DenseIndex(folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"]["index.faiss"]["bytes"] = (folder / "index.faiss").stat().st_size
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LlaraError, match="meta.json says"):
        DenseIndex(folder)


def test_index_refuses_to_overwrite_a_folder_that_is_not_an_index(embeddings, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LlaraError, match="not a llara index"):
        build_index(embeddings[0], tmp_path / "mine", "flat")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(LlaraError, match="index type"):
        build_index(embeddings[0], tmp_path / "x", "annoy")
    with pytest.raises(LlaraError, match="pq-m"):
        build_index(embeddings[0], tmp_path / "x", "ivfpq", IndexParams(pq_m=5))
    assert not (tmp_path / "x").exists()
