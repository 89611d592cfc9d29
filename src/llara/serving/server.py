"""Running the server: safe binding, uvicorn, and a SIGTERM that drains and exits 0."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys

from llara.errors import LlaraError
from llara.serving.options import ServeOptions

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_options(opts: ServeOptions) -> None:
    if opts.api_key is not None and not opts.api_key.strip():
        raise LlaraError("--api-key is empty")
    if not is_loopback(opts.host) and not opts.api_key:
        raise LlaraError(
            f"--host {opts.host} is reachable from other machines: set --api-key (or LLARA_API_KEY), "
            "or serve on 127.0.0.1"
        )
    for name in ("batch_size", "max_queue", "max_inputs", "max_body_bytes", "max_top_k"):
        if getattr(opts, name) < 1:
            raise LlaraError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("batch_wait_ms", "rejoin_wait_ms"):
        if not 0 <= getattr(opts, name) <= 10_000:  # (NaN fails this too)
            raise LlaraError(f"--{name.replace('_', '-')} must be between 0 and 10000")
    if not 0 <= opts.port <= 65535:
        raise LlaraError(f"--port {opts.port} is not a port number")


def _bind(host: str, port: int) -> socket.socket:
    """Bind now (listening starts once the model is loaded), so a taken port fails before loading."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise LlaraError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def run_server(opts: ServeOptions) -> None:
    """Load the model (and index, corpus), then serve until SIGTERM or Ctrl-C.

    SIGTERM stops accepting connections, answers the requests already in, and exits 0."""
    try:
        import uvicorn

        from llara.serving.app import create_app
    except ImportError:
        raise LlaraError('`llara serve` needs FastAPI and uvicorn: pip install "llara[serve]"') from None
    from llara.serving.service import Service

    _check_options(opts)
    sock = _bind(opts.host, opts.port)
    service = Service(opts)
    app = create_app(service)
    config = uvicorn.Config(
        app,
        log_config=None,  # keep llara's logging setup (--quiet, --debug)
        access_log=opts.access_log,
        timeout_graceful_shutdown=60,
        server_header=False,
    )
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    # One line that scripts (and the tests) can read the port from, even with --port 0.
    print(f"llara serve: {service.name} on http://{url_host}:{port}", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again for the previous
    # handler; the default one would end the process with -15, so a handled SIGTERM ends with 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])
    log.info("llara serve: stopped")
