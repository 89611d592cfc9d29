"""Micro-batching: concurrent requests' texts run through the model together.

One forward pass over 16 texts costs far less than 16 passes over one, on a CPU as on a GPU; a
server that runs each request alone wastes that. Requests join a queue, one worker gathers them
into batches and runs each batch in a single model thread, so the event loop keeps accepting
(and refusing, past the bound) requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from llara.errors import LlaraError

log = logging.getLogger(__name__)

REJOIN_SHARE = 0.25  # of a batch's model time, the longest wait for its clients' next texts


@dataclass
class Encoded:
    """One request's share of a batch: L2-normalised float32 rows, tokens read, and truncations."""

    embeddings: np.ndarray
    tokens: list[int]
    truncated: list[bool]


def encode_texts(encoder, texts: list[str], side: str, batch_size: int) -> Encoded:
    """Embed texts exactly as `LlaraEncoder.encode` does (its prompts, length-sorted batches and
    forward pass), and also report each text's token count and whether it was cut."""
    import torch

    prompts = encoder.prompts
    text_ids = prompts.text_ids(texts)
    sequences = [prompts.wrap(ids, side, encoder.max_length[side]) for ids in text_ids]
    overhead = sum(len(p) for p in prompts.pieces[side])
    truncated = [len(seq) < len(ids) + overhead for seq, ids in zip(sequences, text_ids, strict=True)]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out = torch.empty((len(texts), encoder.dim), dtype=torch.float32)
    for idx in encoder._batches(order, sequences, batch_size, None):  # the encoder's own batching
        out[idx] = encoder._embed([sequences[i] for i in idx])
    out = torch.nn.functional.normalize(out, dim=-1)
    return Encoded(out.numpy(), [len(s) for s in sequences], truncated)


class Overloaded(Exception):
    """More requests are waiting than the server admits."""


@dataclass
class _Job:
    texts: list[str]
    side: str
    arrived: float
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gathers concurrent requests into model batches.

    Requests join a queue; one worker takes them, oldest first, up to `max_batch` texts, and runs
    them as one batch in a single model thread, so the event loop keeps accepting requests
    meanwhile. Before a batch it waits a little for company:

    - a request that finds the model idle waits up to `wait_s` (from its arrival) for others;
    - after a batch that answered several requests, the worker waits for those clients to send
      their next texts, and starts as soon as they have; at most a quarter of that batch's model
      time (a batch twice the size costs far less than twice the time), and at most `rejoin_s`.
      Without this, clients that send again as soon as they are answered split into two cohorts
      that take turns in the model, each batch half the size it could be. Requests already
      waiting pay that wait when the clients do not come back: never more than a quarter.

    At most `max_pending` requests are admitted (queued or in the model); past that `submit` raises
    Overloaded at once.
    """

    def __init__(
        self,
        encode: Callable[[list[str], str], Encoded],
        max_batch: int = 32,
        wait_s: float = 0.005,
        max_pending: int = 256,
        rejoin_s: float = 0.25,
    ) -> None:
        self.encode, self.max_batch, self.wait_s, self.max_pending = encode, max_batch, wait_s, max_pending
        self.rejoin_s = rejoin_s
        self.jobs: deque[_Job] = deque()
        self.queued_texts = 0
        self.pending = 0  # admitted requests not yet answered
        self.batches = 0
        self.texts = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llara-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="llara-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self.jobs:  # none after a graceful shutdown: uvicorn waits for open requests
            if not job.future.done():
                job.future.set_exception(Overloaded())
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], side: str) -> Encoded:
        if self.pending >= self.max_pending:
            raise Overloaded
        loop = asyncio.get_running_loop()
        job = _Job(texts, side, loop.time(), loop.create_future())
        self.pending += 1
        self.jobs.append(job)
        self.queued_texts += len(texts)
        self._wake.set()
        try:
            return await job.future
        finally:
            self.pending -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        answered = 0  # requests in the last batch, when there were several: their clients may send again
        rejoin = 0.0  # how long to wait for them
        while True:
            free_since = loop.time()
            expected = len(self.jobs) + answered  # requests worth waiting for
            while not self.jobs:
                self._wake.clear()
                await self._wake.wait()
            # An event, not wait_for(queue.get()): a timeout there can drop an item it already took.
            while self.queued_texts < self.max_batch:
                if answered:
                    if len(self.jobs) >= expected:
                        break
                    remaining = free_since + rejoin - loop.time()
                else:
                    remaining = self.jobs[0].arrived + self.wait_s - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._encode_batch, batch)
            except Exception as e:  # the model failed: those requests get the error, the server goes on
                answered = 0
                if not isinstance(e, LlaraError):
                    log.exception("encoding a batch of %d texts failed", sum(len(j.texts) for j in batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            answered = len(batch) if len(batch) > 1 else 0
            rejoin = min(self.rejoin_s, REJOIN_SHARE * (loop.time() - started))
            self.batches += 1
            self.texts += sum(len(j.texts) for j in batch)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():  # a cancelled request leaves a done future
                    job.future.set_result(result)

    def _take(self) -> list[_Job]:
        """The oldest jobs up to max_batch texts (at least one job, however large)."""
        batch: list[_Job] = []
        n = 0
        while self.jobs and (not batch or n + len(self.jobs[0].texts) <= self.max_batch):
            job = self.jobs.popleft()
            self.queued_texts -= len(job.texts)
            if job.future.done():
                continue
            batch.append(job)
            n += len(job.texts)
        return batch

    def _encode_batch(self, batch: list[_Job]) -> list[Encoded]:
        """In the model thread: one encoder call per prompt side, split back per request."""
        results: dict[int, Encoded] = {}
        for side in ("passage", "query"):
            jobs = [j for j in batch if j.side == side]
            if not jobs:
                continue
            enc = self.encode([t for j in jobs for t in j.texts], side)
            start = 0
            for j in jobs:
                end = start + len(j.texts)
                results[id(j)] = Encoded(enc.embeddings[start:end], enc.tokens[start:end], enc.truncated[start:end])
                start = end
        return [results[id(j)] for j in batch]
