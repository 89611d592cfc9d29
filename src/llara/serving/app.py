"""The HTTP layer: routes, request validation, OpenAI-shaped errors, the API key and body-size guard."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llara.errors import LlaraError
from llara.serving.batching import Encoded, MicroBatcher, Overloaded
from llara.serving.service import HYBRID_DEPTH, METHODS, Service, fuse_ranked

SIDES = {"passage": "passage", "document": "passage", "query": "query"}  # input_type -> prompt side
DRAIN_LIMIT = 64 << 20  # bytes of an over-large body read (and dropped) so the client sees the 413


class ApiError(Exception):
    """An error answered as OpenAI's JSON shape {"error": {"message", "type", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def _overloaded(what: str) -> ApiError:
    return ApiError(
        503, f"server busy: {what}; retry shortly", "server_error", "overloaded", headers={"Retry-After": "1"}
    )


async def _send_json(send, status: int, payload: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of every route: the API key, then the body size limit.

    It reads the body itself (at most `max_body` bytes kept) so an over-large one is refused with 413
    before any JSON parsing, and hands the buffered body on to the app."""

    def __init__(self, app, api_key: str | None, max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.api_key is not None:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            # compare_digest: the time taken does not tell how much of a guessed key was right
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                err = ApiError(
                    401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"
                )
                return await _send_json(send, 401, err.body(), [(b"www-authenticate", b"Bearer")])
        body = bytearray()
        too_big = False
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > DRAIN_LIMIT):
            too_big = True  # refuse without reading: the connection closes after the answer
        else:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if len(body) + len(chunk) > self.max_body:
                    too_big = True
                    body.clear()
                    if declared is None:  # chunked: stop reading; the connection closes after the answer
                        break
                elif not too_big:
                    body += chunk
                more = message.get("more_body", False)
        if too_big:
            err = ApiError(413, f"request body over the {self.max_body}-byte limit", code="request_too_large")
            return await _send_json(send, 413, err.body())

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _parse_json(raw: bytes) -> dict:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # ValueError covers bad UTF-8 too
        raise ApiError(400, f"body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"body must be a JSON object, got {_kind(data)}", code="invalid_json")
    return data


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object"
    )


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string, got {_kind(value)}", param=where)
    if not value:
        raise ApiError(400, f"{where} is an empty string", param=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(
            400, f"{where} is not valid Unicode (lone surrogate at character {e.start})", param=where
        ) from None
    return value


def _texts(data: dict, max_inputs: int) -> list[str]:
    if "input" not in data:
        raise ApiError(400, "missing 'input': a string or a list of strings", param="input")
    value = data["input"]
    if isinstance(value, str):
        return [_check_text(value, "input")]
    if not isinstance(value, list):
        raise ApiError(400, f"'input' must be a string or a list of strings, got {_kind(value)}", param="input")
    if not value:
        raise ApiError(400, "'input' is an empty list", param="input")
    if len(value) > max_inputs:
        raise ApiError(400, f"'input' has {len(value)} texts; at most {max_inputs} per request", param="input")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value) or any(isinstance(v, list) for v in value):
        raise ApiError(400, "token-id input is not supported: send the texts as strings", param="input")
    return [_check_text(v, f"input[{i}]") for i, v in enumerate(value)]


def _choice(data: dict, key: str, allowed: Sequence[str], default: str) -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if value not in allowed:
        raise ApiError(400, f"'{key}' must be one of {', '.join(allowed)}, got {json.dumps(value)[:80]}", param=key)
    return value


def _encode_vector(vec: np.ndarray, fmt: str) -> str | list[float]:
    if fmt == "base64":  # what the openai client asks for by default: little-endian float32 bytes
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.tolist()


def create_app(service: Service) -> FastAPI:
    """The FastAPI application over a loaded Service."""

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    opts = service.opts
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        batcher = MicroBatcher(
            service.encode, opts.batch_size, opts.batch_wait_ms / 1000, opts.max_queue, opts.rejoin_wait_ms / 1000
        )
        batcher.start()
        state["batcher"] = batcher
        # FAISS and BM25 run here, one at a time, off the event loop
        state["search"] = ThreadPoolExecutor(1, thread_name_prefix="llara-search")
        yield
        await batcher.stop()
        state["search"].shutdown(wait=True)

    app = FastAPI(title="llara", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=opts.api_key, max_body=opts.max_body_bytes)

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(e)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(e.status_code, str(e.detail))
        return error(ApiError(e.status_code, message, code=code, headers=getattr(e, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error(ApiError(400, f"invalid request: {e.errors()[:1]}"))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, e: Exception) -> JSONResponse:
        # the traceback goes to the server's log (uvicorn prints it), never to the client
        return error(ApiError(500, "internal error; see the server log", "server_error", "internal_error"))

    async def embed(texts: list[str], side: str) -> Encoded:
        try:
            return await state["batcher"].submit(texts, side)
        except Overloaded:
            raise _overloaded(f"{opts.max_queue} requests waiting") from None
        except LlaraError as e:
            raise ApiError(400, str(e)) from None

    @app.get("/health")
    async def health() -> JSONResponse:
        b = state["batcher"]
        stats = {"pending": b.pending, "queued_texts": b.queued_texts, "batches": b.batches, "texts": b.texts}
        return JSONResponse({"status": "ok", **service.info(), **stats})

    def model_card() -> dict:
        return {"id": service.name, "object": "model", "created": service.created, "owned_by": "llara"}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> JSONResponse:
        if name != service.name:
            raise _unknown_model(name)
        return JSONResponse(model_card())

    def _unknown_model(name) -> ApiError:
        message = f"the model {json.dumps(name)[:100]} does not exist; this server has {service.name!r}"
        return ApiError(404, message, code="model_not_found", param="model")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        data = _parse_json(await request.body())
        if "model" not in data:
            raise ApiError(400, f"missing 'model' (this server has {service.name!r})", param="model")
        if data["model"] != service.name:
            raise _unknown_model(data["model"])
        texts = _texts(data, opts.max_inputs)
        fmt = _choice(data, "encoding_format", ("float", "base64"), "float")
        side = SIDES[_choice(data, "input_type", tuple(SIDES), "passage")]
        dims = data.get("dimensions")
        if dims is not None and dims != service.encoder.dim:
            raise ApiError(
                400, f"'dimensions' must be {service.encoder.dim} (the model's) if given", param="dimensions"
            )
        enc = await embed(texts, side)
        tokens, truncated = sum(enc.tokens), sum(enc.truncated)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_vector(v, fmt)}
                for i, v in enumerate(enc.embeddings)
            ],
            "model": service.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "truncated": truncated,  # texts cut to the recipe's max length (the prompt is always kept)
        }
        return JSONResponse(body, headers={"X-Llara-Truncated": str(truncated)})

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        data = _parse_json(await request.body())
        query = _check_text(data.get("query"), "query") if "query" in data else None
        if query is None:
            raise ApiError(400, "missing 'query': a string", param="query")
        method = _choice(data, "method", METHODS, "dense")
        top_k = data.get("top_k", 10)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= opts.max_top_k:
            raise ApiError(400, f"'top_k' must be a whole number from 1 to {opts.max_top_k}", param="top_k")
        if not service.can(method):
            need = {"dense": "an index (--index)", "bm25": "a corpus (--corpus)"}.get(method, "--index and a corpus")
            raise ApiError(400, f"method {method!r} needs {need}; this server can: {service.info()['methods']}")
        loop = asyncio.get_running_loop()
        pool = state["search"]
        truncated = 0
        depth = top_k if method != "hybrid" else max(top_k, HYBRID_DEPTH)
        lists = {}
        if method in ("dense", "hybrid"):
            enc = await embed([query], "query")
            truncated = int(enc.truncated[0])
            lists["dense"] = await loop.run_in_executor(pool, service.dense_hits, enc.embeddings[0], depth)
        if method in ("bm25", "hybrid"):
            lists["bm25"] = await loop.run_in_executor(pool, service.bm25_hits, query, depth)
        if method == "hybrid":
            hits = fuse_ranked(lists["bm25"], lists["dense"], service.fusion)[:top_k]
        else:
            hits = lists[method]
        titles = service.titles or {}
        results = [
            {"rank": r, "id": d, "score": s, "title": titles.get(d) if service.titles is not None else None}
            for r, (d, s) in enumerate(hits[:top_k], start=1)
        ]
        body = {"object": "list", "query": query, "method": method, "model": service.name, "results": results}
        body["truncated"] = truncated
        return JSONResponse(body, headers={"X-Llara-Truncated": str(truncated)})

    return app
