"""`llara serve`: an OpenAI-compatible embeddings endpoint, and search over a `llara index`.

Endpoints (FastAPI on uvicorn):

- ``POST /v1/embeddings``: the OpenAI embeddings API (``model``, ``input``: a string or a list of
  strings, ``encoding_format``: float | base64), plus ``input_type``: passage (EBAE prompt, the
  default) | query (EBAR prompt). Embeddings equal `llara encode`'s for the same model and texts.
- ``POST /search``: ``{"query", "top_k", "method": dense | bm25 | hybrid}`` over the index (and, for
  bm25 and hybrid, the corpus it was built from); ids, scores and titles.
- ``GET /health``, ``GET /v1/models``.

Concurrent requests are gathered into model batches (`MicroBatcher`): texts from many clients run
in one forward pass, which is where the throughput of a CPU or GPU lies. Admission is bounded; past
the bound a request is refused at once with 503 rather than queued without end. Every error is a
JSON body in OpenAI's shape ``{"error": {"message", "type", "code"}}`` with a 4xx status; nothing a
client sends can stop the server or show it a traceback.

Modules: `options` (ServeOptions), `server` (binding, uvicorn, SIGTERM), `app` (the FastAPI routes, errors, the API
key and body-size guard), `batching` (the micro-batcher), `service` (model, index, corpus, BM25,
fusion). Only `app` and `server` need FastAPI and uvicorn (``pip install "llara[serve]"``).
"""

from llara.serving.options import ServeOptions
from llara.serving.server import run_server

__all__ = ["ServeOptions", "run_server"]
