"""InfoNCE over every passage in the batch, optionally gathered across ranks, and GradCache.

Layout: the collator puts query i's passages at rows [i * G, (i + 1) * G) with its positive first,
so for Q queries and Q * G passages the target of query i is column i * G. Every other passage in
the (global) batch is a negative: its own hard negatives and all other queries' groups.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate `t` from all ranks in rank order; only the local slice keeps its gradient
    (each rank back-propagates into its own encoder, DDP then sums the parameter gradients)."""
    rank, size = world()
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.detach().contiguous())
    parts[rank] = t
    return torch.cat(parts)


def info_nce(q: torch.Tensor, p: torch.Tensor, temperature: float, cross_device: bool = False) -> torch.Tensor:
    """Mean cross-entropy of each query against all passages (q: [Q, H], p: [Q * G, H], normalised).

    With cross_device, queries and passages of all ranks are gathered and every rank computes the same
    global loss. DDP averages gradients over ranks while each rank holds only its own share of the
    global gradient, so the backward pass is scaled by the world size; the value is left unchanged so
    logs show the true loss (equal to the one-process loss on the same global batch)."""
    size = world()[1] if cross_device else 1
    if size > 1:
        q, p = gather(q), gather(p)
    group = p.shape[0] // q.shape[0]
    scores = q @ p.T / temperature
    target = torch.arange(q.shape[0], device=q.device) * group
    loss = F.cross_entropy(scores, target)
    if size > 1:
        loss = loss * size - loss.detach() * (size - 1)  # value: loss; gradient: size x
    return loss


# -------------------------------------------------------------------------------------- GradCache
class RandomState(contextlib.AbstractContextManager):
    """Captures the RNG state at creation; `with state:` replays it, so a recomputed chunk draws the
    same dropout masks as its first, gradient-free pass."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self._fork = None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=range(torch.cuda.device_count()) if self.cuda else [])
        self._fork.__enter__()
        torch.set_rng_state(self.cpu)
        if self.cuda:
            torch.cuda.set_rng_state_all(self.cuda)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


def split(inputs: dict[str, torch.Tensor], chunk_size: int) -> list[dict[str, torch.Tensor]]:
    n = inputs["input_ids"].shape[0]
    return [{k: v[i : i + chunk_size] for k, v in inputs.items()} for i in range(0, n, chunk_size)]


def grad_cache_step(
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    queries: dict[str, torch.Tensor],
    passages: dict[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunk_size: int,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One forward/backward of a large batch with activations for only `chunk_size` texts at a time.

    1. embed every chunk without a graph (remembering each chunk's RNG state);
    2. compute the loss on the detached embeddings and back-propagate it to them only;
    3. re-run each chunk with a graph and back-propagate the cached embedding gradients into the model.
    Gradients equal the plain batch's; memory holds one chunk's activations. Returns the loss (detached)."""
    chunks = {"q": split(queries, chunk_size), "p": split(passages, chunk_size)}
    states: dict[str, list[RandomState]] = {"q": [], "p": []}
    reps: dict[str, list[torch.Tensor]] = {"q": [], "p": []}
    with torch.no_grad():
        for side, parts in chunks.items():
            for part in parts:
                states[side].append(RandomState())
                reps[side].append(encode(part))
    q = torch.cat(reps["q"]).requires_grad_()
    p = torch.cat(reps["p"]).requires_grad_()
    loss = loss_fn(q, p)
    loss.backward()
    grads = {"q": q.grad.split(chunk_size), "p": p.grad.split(chunk_size)}
    last = ("p", len(chunks["p"]) - 1)
    for side, parts in chunks.items():
        for j, part in enumerate(parts):
            # DDP: all-reduce only once, after the last chunk's backward
            with contextlib.nullcontext() if (side, j) == last else no_sync(), states[side][j]:
                emb = encode(part)
                backward((emb * grads[side][j]).sum())  # d(surrogate)/d(emb) = cached gradient
    return loss.detach()
