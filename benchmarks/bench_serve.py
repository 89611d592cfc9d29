"""`llara serve` under load: sequential vs concurrent clients, latency, correctness, memory.

Starts `llara serve` as a subprocess on a free loopback port, then, with single-text requests
(CISI titles, ``input_type: query``, base64 as the openai client asks):

1. reference embeddings: every distinct text once, in batched requests;
2. sequential: one client, one request at a time (--sequential requests or --phase-seconds);
3. concurrent: --clients clients at once (asyncio + httpx), --requests requests in all.

Every answer is checked against its reference: status 200, one embedding, cosine >= 0.999 and its
own reference the nearest (an answer swapped between requests is caught, unless two texts embed
alike). Prints texts/s of both phases and their ratio, p50/p99 latency, the server's mean batch
size, and its RSS and peak RSS (VmHWM) after start-up and at the end; then SIGTERMs the server and
checks that it exits 0.

    python benchmarks/bench_serve.py --model smollm2
    python benchmarks/bench_serve.py --model tiny  # a random 2-layer model built in code, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def start(model: str, log: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "llara", "serve", "--model", model, "--host", "127.0.0.1", "--port", "0", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        text = log.read_text(errors="replace")
        if url is None and " on http://" in text:
            url = next(line for line in text.splitlines() if line.startswith("llara serve:")).rsplit(" on ", 1)[1]
        if url:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("server did not start")


def memory(pid: int) -> dict[str, float]:
    """Resident and peak resident memory (MiB) from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def decode(item: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")


class Checker:
    """Verifies each answer against the reference embeddings of all texts."""

    def __init__(self, refs: np.ndarray) -> None:
        self.refs = refs
        self.checked = self.wrong = 0
        self.min_cos = 1.0

    def check(self, i: int, r: httpx.Response) -> None:
        self.checked += 1
        if r.status_code != 200:
            self.wrong += 1
            print(f"request for text {i}: HTTP {r.status_code} {r.text[:200]}")
            return
        data = r.json()["data"]
        v = decode(data[0]) if len(data) == 1 else None
        sims = self.refs @ v if v is not None else None
        # its own reference must be the nearest (texts that truncate to the same tokens tie)
        if sims is None or sims[i] < 0.999 or sims[i] < sims.max() - 1e-6:
            self.wrong += 1
            print(f"request for text {i}: wrong answer (best match {None if sims is None else int(np.argmax(sims))})")
            return
        self.min_cos = min(self.min_cos, float(sims[i]))


def body(model: str, text: str | list[str]) -> dict:
    return {"model": model, "input": text, "input_type": "query", "encoding_format": "base64"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="as for llara serve, or 'tiny' (a random model built here)")
    ap.add_argument("--texts", type=int, default=500, help="distinct texts (CISI titles)")
    ap.add_argument("--sequential", type=int, default=300, help="requests sent one at a time")
    ap.add_argument("--requests", type=int, default=5000, help="requests sent by the concurrent clients")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--phase-seconds", type=float, default=240, help="stop a phase after this long")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("server_args", nargs="*", help="more `llara serve` options, after --")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = args.model
    if model == "tiny":
        from llara.testing import make_tiny_model

        model = str(make_tiny_model(tmp / "tiny"))
    titles = []
    with open(CISI, encoding="utf-8") as f:
        for line in f:
            title = json.loads(line).get("title", "").strip()
            if title and title not in titles:
                titles.append(title)
            if len(titles) == args.texts:
                break
    texts = titles

    t0 = time.perf_counter()
    proc, url = start(model, tmp / "server.log", args.server_args)
    name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    info = httpx.get(f"{url}/health").json()
    print(f"server: {name} ({info['recipe']}, {info['precision']}, dim {info['dim']}) ready in "
          f"{time.perf_counter() - t0:.1f} s at {url}")  # fmt: skip
    mem_start = memory(proc.pid)

    with httpx.Client(base_url=url, timeout=120) as http:
        refs = []
        for start_ in range(0, len(texts), 32):
            r = http.post("/v1/embeddings", json=body(name, texts[start_ : start_ + 32]))
            r.raise_for_status()
            refs.extend(decode(d) for d in r.json()["data"])
        refs = np.stack(refs)
        checker = Checker(refs)
        gap = (refs @ refs.T - 2 * np.eye(len(refs))).max()
        print(f"references: {len(texts)} texts; the closest two distinct texts have cosine {gap:.4f}")

        seq_lat = []
        t0 = time.perf_counter()
        for n in range(args.sequential):
            i = n % len(texts)
            s = time.perf_counter()
            r = http.post("/v1/embeddings", json=body(name, texts[i]))
            seq_lat.append(time.perf_counter() - s)
            checker.check(i, r)
            if time.perf_counter() - t0 > args.phase_seconds:
                break
        seq_time = time.perf_counter() - t0
    before = httpx.get(f"{url}/health").json()

    conc_lat: list[float] = []
    lost: list[str] = []
    rss_trace: list[int] = []

    async def client(http: httpx.AsyncClient, counter: list[int], deadline: float) -> None:
        while counter[0] < args.requests and time.perf_counter() < deadline:
            n = counter[0]
            counter[0] += 1
            i = (n * 7919) % len(texts)  # a different text order from the sequential phase
            s = time.perf_counter()
            try:
                r = await http.post("/v1/embeddings", json=body(name, texts[i]))
            except httpx.HTTPError as e:  # no answer at all: a lost request
                lost.append(f"{type(e).__name__}: {e}")
                continue
            conc_lat.append(time.perf_counter() - s)
            checker.check(i, r)
            if len(conc_lat) % 1000 == 0:  # does memory level off, or grow with requests served?
                rss_trace.append(round(memory(proc.pid)["VmRSS"]))

    async def concurrent() -> float:
        limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            counter = [0]
            t0 = time.perf_counter()
            deadline = t0 + args.phase_seconds
            await asyncio.gather(*(client(http, counter, deadline) for _ in range(args.clients)))
            return time.perf_counter() - t0

    conc_time = asyncio.run(concurrent())
    after = httpx.get(f"{url}/health").json()
    mem_end = memory(proc.pid)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)

    seq_rate, conc_rate = len(seq_lat) / seq_time, len(conc_lat) / conc_time
    batches = after["batches"] - before["batches"]
    figures = {
        "model": args.model,
        "precision": info["precision"],
        "cpu": "AVX512-BF16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2",
        "cores": os.cpu_count(),
        "sequential": {"requests": len(seq_lat), "texts_per_s": seq_rate, "p50_ms": pct(seq_lat, 50),
                       "p99_ms": pct(seq_lat, 99)},
        "concurrent": {"clients": args.clients, "requests": len(conc_lat), "texts_per_s": conc_rate,
                       "p50_ms": pct(conc_lat, 50), "p99_ms": pct(conc_lat, 99),
                       "mean_batch": (after["texts"] - before["texts"]) / max(batches, 1)},
        "speedup": conc_rate / seq_rate,
        "checked": checker.checked,
        "wrong": checker.wrong,
        "lost": len(lost),
        "min_cosine": checker.min_cos,
        "rss_mib": {"start": mem_start, "end": mem_end, "every_1000_requests": rss_trace},
        "sigterm_exit_code": code,
    }  # fmt: skip
    s, c = figures["sequential"], figures["concurrent"]
    print(
        f"sequential: {s['requests']} requests, {seq_rate:.1f} texts/s, p50 {s['p50_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms"
    )
    print(
        f"{args.clients} clients: {c['requests']} requests, {conc_rate:.1f} texts/s, p50 {c['p50_ms']:.1f} ms, "
        f"p99 {c['p99_ms']:.1f} ms, mean batch {c['mean_batch']:.1f} texts"
    )
    print(f"speed-up concurrent / sequential: {figures['speedup']:.2f}x")
    print(
        f"checked {checker.checked} answers: {checker.wrong} wrong, {len(lost)} lost (no answer), "
        f"min cosine to the reference {checker.min_cos:.6f}"
    )
    if len(conc_lat) + len(lost) < args.requests:
        print(f"note: --phase-seconds ended the concurrent phase after {len(conc_lat) + len(lost)} requests")
    print(f"server RSS after start {mem_start['VmRSS']:.0f} MiB (peak {mem_start['VmHWM']:.0f}), "
          f"at the end {mem_end['VmRSS']:.0f} MiB (peak {mem_end['VmHWM']:.0f}); SIGTERM exit code {code}")  # fmt: skip
    print(f"server RSS every 1000 concurrent requests (MiB): {rss_trace}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
