"""`llara serve` as a client sees it: the real server in a subprocess on a free loopback port, spoken
to over HTTP with the official `openai` client and httpx.

One server (tiny model, an index of 60 arXiv papers, an API key) is shared by the module; a second
one, with a one-request queue and a long batching wait, shows the 503 path and a SIGTERM that
answers the request in flight. The references are computed in this process with the functions
`llara encode`, `llara index` and `llara search` run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from llara.retrieval.fusion import Fusion
from llara.serving.service import fuse_ranked

KEY = "test-key-123"
DOCS = 60


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def headers(self, key: str | None = KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def launch(log: Path, *args: str, key: str | None = None) -> subprocess.Popen:
    """`python -m llara serve --port 0 ...` in the background (see `ready`)."""
    env = {k: v for k, v in os.environ.items() if k != "LLARA_API_KEY"}
    cmd = [sys.executable, "-m", "llara", "serve", "--port", "0", "--precision", "fp32", *map(str, args)]
    if key:
        cmd += ["--api-key", key]
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the server
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def ready(proc: subprocess.Popen, log: Path, key: str | None = None, timeout: float = 300) -> Server:
    """Wait for the server's "llara serve: NAME on URL" line, then for /health to answer."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if url is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("llara serve: ") and " on http://" in line:
                    url = line.rsplit(" on ", 1)[1].strip()
        if url is not None:
            try:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                if httpx.get(f"{url}/health", headers=headers, timeout=5).status_code == 200:
                    return Server(proc, url, log)
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")


@dataclass
class Setup:
    corpus: Path
    queries: Path
    index: Path
    docs: list[dict]
    texts: list[str]  # format_document(doc): what BM25 reads
    passages: list[str]  # what `llara encode` embeds: the documents' passages (every abstract is long here)
    doc_emb: np.ndarray  # `llara encode`'s rows, one per passage, in corpus order
    encoder: object  # the server's model, loaded here (fp32) for query-side references


def make_setup(tmp: Path, model: Path, data: Path) -> Setup:
    from llara.data.beir import format_document
    from llara.inference.corpus import encode_corpus_file
    from llara.inference.encoder import LlaraEncoder
    from llara.retrieval.index import build_index

    lines = (data / "corpus.jsonl").read_text().splitlines()[:DOCS]
    (tmp / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (tmp / "queries.jsonl").write_text("\n".join((data / "queries.jsonl").read_text().splitlines()[:5]) + "\n")
    docs = [json.loads(line) for line in lines]
    encoder = LlaraEncoder.from_pretrained(model, precision="fp32")
    encode_corpus_file(encoder, tmp / "corpus.jsonl", tmp / "emb", show_progress_bar=False)
    build_index(tmp / "emb", tmp / "idx")
    doc_emb = np.concatenate([np.load(p) for p in sorted((tmp / "emb").glob("emb-*.npy"))])
    texts = [format_document(d) for d in docs]
    passages = encoder.passages(docs).texts
    assert len(passages) == len(doc_emb) > len(docs)
    return Setup(tmp / "corpus.jsonl", tmp / "queries.jsonl", tmp / "idx", docs, texts, passages, doc_emb, encoder)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir, arxiv_tagged_dir):
    """The references, the shared server and the slow one, started side by side (startup is mostly
    imports, and the machine has more than one core)."""
    tmp = tmp_path_factory.mktemp("serve")
    # One request admitted at a time, and each waits 1 s for company: a request is reliably in
    # flight while a test sends another, or SIGTERM.
    slow_args = ("--max-queue", "1", "--batch-wait-ms", "1000")
    slow = launch(tmp / "slow-server.log", "--model", tiny_model_dir, "--served-model-name", "tiny", *slow_args)
    try:
        setup = make_setup(tmp, tiny_model_dir, arxiv_tagged_dir)
        # no --corpus: the server finds it through the index's embeddings manifest
        main = launch(
            tmp / "server.log",
            "--model", tiny_model_dir, "--index", setup.index, "--served-model-name", "tiny",
            "--max-inputs", "64", "--max-body-bytes", "200000",
            key=KEY,
        )  # fmt: skip
    except BaseException:
        slow.kill()
        raise
    started = []
    try:
        started.append(ready(main, tmp / "server.log", KEY))
        started.append(ready(slow, tmp / "slow-server.log"))
        yield setup, *started
    finally:
        for proc in (main, slow):
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


@pytest.fixture(scope="module")
def setup(servers) -> Setup:
    return servers[0]


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def slow_server(servers) -> Server:
    return servers[2]


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def assert_served_normally(server: Server) -> None:
    """A good request right after a bad one is answered as usual."""
    body = {"model": "tiny", "input": "library classification"}
    r = httpx.post(f"{server.url}/v1/embeddings", json=body, headers=server.headers(), timeout=30)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 64


# ---------------------------------------------------------------------------------------- embeddings
def test_openai_client_embeddings_equal_llara_encode(client, setup):
    # the client asks for base64 by default and decodes it; float must give the same numbers
    r = client.embeddings.create(model="tiny", input=setup.passages[:DOCS])
    got = np.array([d.embedding for d in r.data])
    assert [d.index for d in r.data] == list(range(DOCS)) and got.shape == setup.doc_emb[:DOCS].shape
    assert cosines(got, setup.doc_emb[:DOCS]).min() >= 0.9999
    as_float = client.embeddings.create(model="tiny", input=setup.passages[:3], encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in as_float.data]), got[:3])
    # usage counts the tokens the model read; a whole abstract sent as one text is one passage, cut, and
    # the response says how many were
    r = client.embeddings.create(model="tiny", input=setup.texts)
    ids = setup.encoder.prompts.text_ids(setup.texts)
    room = 256 - sum(len(p) for p in setup.encoder.prompts.pieces["passage"])
    assert r.model_extra["truncated"] == sum(len(i) > room for i in ids) > 0
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0 and r.model == "tiny"


def test_query_side_and_single_string(client, setup):
    queries = ["how are books classified", "information retrieval evaluation"]
    r = client.embeddings.create(model="tiny", input=queries, extra_body={"input_type": "query"})
    want = setup.encoder.encode_queries(queries)
    assert cosines(np.array([d.embedding for d in r.data]), want).min() >= 0.9999
    one = client.embeddings.create(model="tiny", input=setup.passages[0])
    assert len(one.data) == 1 and cosines(np.array(one.data[0].embedding), setup.doc_emb[0]) >= 0.9999


def test_concurrent_single_texts_are_batched_and_each_gets_its_own(server, setup):
    before = httpx.get(f"{server.url}/health", headers=server.headers()).json()

    async def one(http: httpx.AsyncClient, i: int) -> tuple[int, list[float]]:
        r = await http.post("/v1/embeddings", json={"model": "tiny", "input": setup.passages[i]})
        assert r.status_code == 200, r.text
        return i, r.json()["data"][0]["embedding"]

    async def main() -> list[tuple[int, list[float]]]:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=60) as http:
            return await asyncio.gather(*(one(http, i % DOCS) for i in range(64)))

    for i, emb in asyncio.run(main()):
        assert cosines(np.array(emb), setup.doc_emb[i]) >= 0.9999
    after = httpx.get(f"{server.url}/health", headers=server.headers()).json()
    assert after["texts"] - before["texts"] == 64
    assert after["batches"] - before["batches"] < 64  # some requests shared a forward pass
    assert after["pending"] == 0


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    health = httpx.get(f"{server.url}/health", headers=server.headers()).json()
    assert health["status"] == "ok" and health["dim"] == 64 and health["methods"] == ["dense", "bm25", "hybrid"]


def fake_encode(log: list[tuple[int, str]], seconds: float = 0.0):
    """An encoder stand-in: each text's 'embedding' is its own number; records each call's size."""
    from llara.serving.batching import Encoded

    def encode(texts: list[str], side: str) -> Encoded:
        log.append((len(texts), side))
        time.sleep(seconds)
        sign = 1.0 if side == "passage" else -1.0
        return Encoded(np.array([[sign * float(t)] for t in texts]), [1] * len(texts), [False] * len(texts))

    return encode


def test_batcher_keeps_clients_in_one_batch_and_routes_each_answer():
    """16 clients that send again once answered (some sooner than others) end up sharing every
    forward pass, not split into cohorts taking turns, and each gets its own text's result,
    whichever side it asked for."""
    from llara.serving.batching import MicroBatcher

    calls: list[tuple[int, str]] = []

    async def main():
        batcher = MicroBatcher(fake_encode(calls, 0.2), max_batch=32, wait_s=0.001, rejoin_s=1.0)
        batcher.start()

        async def client(c: int):
            for n in range(10):
                text, side = str(100 * c + n), ("query" if c % 4 == 0 else "passage")
                got = await batcher.submit([text], side)
                assert got.embeddings[0, 0] == (-1 if side == "query" else 1) * float(text)
                await asyncio.sleep(0.001 * c)  # clients take different times to send again (< 1/4 of 0.2 s)

        await asyncio.gather(*(client(c) for c in range(16)))
        await batcher.stop()
        return batcher

    batcher = asyncio.run(main())
    assert batcher.texts == 160 and batcher.pending == 0
    # Ideally 10 passes of all 16 clients (without the rejoin wait: 19, two cohorts taking turns). A loaded
    # machine can miss the first pass's 1-ms gathering or a rejoin, which costs an extra pass, not cohorts.
    assert batcher.batches <= 12
    full = calls.count((4, "query")), calls.count((12, "passage"))  # one encoder call per side
    assert min(full) >= 8, calls


def test_batcher_refuses_past_its_bound_at_once():
    from llara.serving.batching import MicroBatcher, Overloaded

    async def main():
        batcher = MicroBatcher(fake_encode([], 0.2), max_batch=32, wait_s=0.0, max_pending=2)
        batcher.start()
        first = [asyncio.create_task(batcher.submit([str(i)], "passage")) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await batcher.submit(["9"], "passage")
        results = await asyncio.gather(*first)
        await batcher.stop()
        return [r.embeddings[0, 0] for r in results]

    assert asyncio.run(main()) == [0.0, 1.0]


# ---------------------------------------------------------------------------------------- search
def search(server: Server, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/search", json=body, headers=server.headers(), timeout=30)


def test_dense_search_equals_llara_search(server, setup, tmp_path):
    from llara.data.beir import read_queries
    from llara.retrieval.index import DenseIndex, search_to_run_file
    from llara.retrieval.runs import read_trec_run

    search_to_run_file(DenseIndex(setup.index), setup.encoder, setup.queries, tmp_path / "run.trec", top_k=10)
    run = read_trec_run(tmp_path / "run.trec")
    titles = {d["_id"]: d["title"] for d in setup.docs}
    for qid, text in read_queries(setup.queries).items():
        r = search(server, query=text, top_k=10)
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        assert [h["rank"] for h in hits] == list(range(1, 11))
        assert {h["id"] for h in hits} == set(run[qid])
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        for h in hits:
            assert h["score"] == pytest.approx(run[qid][h["id"]], abs=1e-5)
            assert h["title"] == titles[h["id"]]


def test_bm25_and_hybrid_search(server, setup):
    from llara.retrieval.bm25 import BM25

    query = setup.docs[3]["title"]  # a paper's own title: BM25 ranks that paper first
    bm25 = BM25([d["_id"] for d in setup.docs], setup.texts).search(["q"], [query], k=100)["q"]
    r = search(server, query=query, top_k=5, method="bm25")
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert [h["id"] for h in hits] == [d for d, _ in sorted(bm25.items(), key=lambda kv: (-kv[1], kv[0]))][:5]
    assert hits[0]["id"] == setup.docs[3]["_id"] and hits[0]["title"] == setup.docs[3]["title"]

    dense = [(h["id"], h["score"]) for h in search(server, query=query, top_k=100).json()["results"]]
    bm25_hits = [(h["id"], h["score"]) for h in search(server, query=query, top_k=100, method="bm25").json()["results"]]
    hybrid = search(server, query=query, top_k=5, method="hybrid").json()["results"]
    # the server chose its fusion at start on held-out weak pairs, as `llara evaluate` does, and says so
    fusion = httpx.get(f"{server.url}/health", headers=server.headers(), timeout=30).json()["fusion"]
    assert fusion["method"] == "auto" and fusion["weight_source"] == "weak pairs" and fusion["evidence"]["pairs"] > 0
    fused = fuse_ranked(bm25_hits, dense, Fusion(**fusion))[:5]
    assert [(h["id"], pytest.approx(h["score"])) for h in hybrid] == fused


def test_reciprocal_rank_fusion():
    lists = [("a", 3.0), ("b", 2.0), ("c", 1.0)], [("c", 0.9), ("a", 0.1)]
    fused = dict(fuse_ranked(*lists, Fusion("rrf")))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62) and fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert list(fused) == ["a", "c", "b"]
    weighted = dict(fuse_ranked(*lists, Fusion("rrf", 0.25)))  # BM25 (the first list) 0.75, dense 0.25
    assert weighted["a"] == pytest.approx(0.75 / 61 + 0.25 / 62) and weighted["b"] == pytest.approx(0.75 / 62)


# ---------------------------------------------------------------------------------------- bad input
BAD = [
    ("malformed JSON", b'{"model": "tiny", "input": ', 400, "not valid JSON"),
    ("not an object", b'["a", "b"]', 400, "JSON object"),
    ("not UTF-8", b'{"model": "tiny", "input": "\xff\xfe"}', 400, "not valid JSON"),
    ("nested too deep", b"[" * 100_000, 400, "not valid JSON"),
    ("input a number", {"model": "tiny", "input": 5}, 400, "string or a list of strings"),
    ("input missing", {"model": "tiny"}, 400, "missing 'input'"),
    ("empty list", {"model": "tiny", "input": []}, 400, "empty list"),
    ("empty string", {"model": "tiny", "input": ["a", ""]}, 400, "input[1] is an empty string"),
    ("list of numbers", {"model": "tiny", "input": ["a", 3]}, 400, "input[1] must be a string"),
    ("token ids", {"model": "tiny", "input": [[1, 2, 3]]}, 400, "token-id input"),
    ("too many inputs", {"model": "tiny", "input": ["a"] * 65}, 400, "at most 64"),
    ("lone surrogate", b'{"model": "tiny", "input": "a\\ud800b"}', 400, "lone surrogate"),
    ("unknown model", {"model": "gpt-4", "input": "a"}, 404, "does not exist"),
    ("model missing", {"input": "a"}, 400, "missing 'model'"),
    ("bad encoding_format", {"model": "tiny", "input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ("bad input_type", {"model": "tiny", "input": "a", "input_type": "question"}, 400, "input_type"),
    ("wrong dimensions", {"model": "tiny", "input": "a", "dimensions": 8}, 400, "dimensions"),
    ("body over the limit", {"model": "tiny", "input": "a" * 250_000}, 413, "limit"),
]


@pytest.mark.parametrize("body, status, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_embeddings_request_gets_clear_error(server, body, status, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{server.url}/v1/embeddings", headers=server.headers(), timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] and "code" in error
    assert "Traceback" not in r.text
    assert_served_normally(server)


def test_body_over_the_limit_without_content_length(server):
    def chunks():
        for _ in range(30):
            yield b"x" * 10_000

    r = httpx.post(f"{server.url}/v1/embeddings", content=chunks(), headers=server.headers(), timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    assert_served_normally(server)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "top_k": "10"}, "top_k"),
        ({"query": "x", "method": "sparse"}, "method"),
        ({"query": ""}, "empty string"),
        ({"top_k": 3}, "missing 'query'"),
    ],
)
def test_bad_search_request_gets_clear_error(server, body, message):
    r = search(server, **body)
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    assert search(server, query="library").status_code == 200


def test_unknown_model_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert err.value.body["code"] == "model_not_found"


def test_unknown_route_and_method(server):
    r = httpx.get(f"{server.url}/v1/nothing", headers=server.headers())
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/v1/embeddings", headers=server.headers())
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_over_long_text_is_truncated_and_said_so(server):
    r = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": "tiny", "input": ["library " * 2000, "short"]},
        headers=server.headers(),
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["truncated"] == 1 and r.headers["x-llara-truncated"] == "1"


# ---------------------------------------------------------------------------------------- safety
def test_api_key_is_required_on_every_request(server):
    for key in (None, "wrong-key"):
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/embeddings")):
            r = httpx.request(method, f"{server.url}{path}", headers=server.headers(key), json={})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="tiny", input="a")
    assert_served_normally(server)


def test_non_loopback_host_needs_an_api_key(tiny_model_dir, monkeypatch, capsys):
    from llara.cli import app, main

    monkeypatch.delenv("LLARA_API_KEY", raising=False)
    argv = ["llara", "serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0", "--port", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()  # stops before loading the model or binding the address
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--api-key" in err and "Traceback" not in err
    # ... and the key may come from the environment instead
    import typer

    params = {p.name: p for p in typer.main.get_command(app).commands["serve"].params}
    assert params["api_key"].envvar == "LLARA_API_KEY"


def in_flight(server: Server, text: str) -> tuple[threading.Thread, dict]:
    """Send one embeddings request from a thread; return once the server holds it."""
    out: dict = {}

    def send():
        out["response"] = httpx.post(f"{server.url}/v1/embeddings", json={"model": "tiny", "input": text}, timeout=60)

    thread = threading.Thread(target=send)
    thread.start()
    for _ in range(600):
        if httpx.get(f"{server.url}/health").json()["pending"] == 1:
            return thread, out
        time.sleep(0.05)
    pytest.fail("the request never reached the server")


def test_full_queue_answers_503_at_once(slow_server, setup):
    thread, out = in_flight(slow_server, setup.texts[0])
    r = httpx.post(f"{slow_server.url}/v1/embeddings", json={"model": "tiny", "input": "b"}, timeout=60)
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and "Retry-After" in r.headers
    assert out == {}  # refused while the first was still waiting
    thread.join(60)
    assert out["response"].status_code == 200
    r = httpx.post(f"{slow_server.url}/v1/embeddings", json={"model": "tiny", "input": "b"}, timeout=60)
    assert r.status_code == 200


def test_sigterm_answers_the_request_in_flight_then_exits_0(slow_server, setup):
    thread, out = in_flight(slow_server, setup.passages[1])
    slow_server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    r = out["response"]
    assert r.status_code == 200
    assert cosines(np.array(r.json()["data"][0]["embedding"]), setup.doc_emb[1]) >= 0.9999
    assert slow_server.proc.wait(60) == 0
    assert "Traceback" not in slow_server.log_text()
