"""One contrastive forward/backward of a fixed global batch, split over the ranks of a process group.

`torchrun --nproc_per_node 2 tests/finetune_ddp_worker.py MODEL_DIR OUT.pt` runs it on 2 CPU processes
(gloo); test_finetune_loss.py calls `step(MODEL_DIR)` in one process and compares.
"""

from __future__ import annotations

import sys

import torch

from llara.modeling.embedder import embed
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder, add_special_tokens
from llara.modeling.recipes import load_recipe
from llara.training.finetune.data import ContrastiveCollator
from llara.training.finetune.loss import info_nce

QUERIES = ["what is dense retrieval", "how to index a library", "query language model", "the next sentence"]
GROUPS = [
    ["dense passage retrieval", "library classification"],
    ["index of a library system", "token embedding vector"],
    ["large language model query", "user data text"],
    ["predict the following sentence", "summarize the above words"],
]


def step(model_dir: str, rank: int = 0, size: int = 1) -> dict:
    model, tokenizer = load_model(model_dir)
    recipe = load_recipe("reference")
    torch.manual_seed(0)  # the new special-token rows are drawn at random: same draw everywhere
    add_special_tokens(model, tokenizer, recipe)
    model.train()
    per = len(QUERIES) // size
    local = list(zip(QUERIES, GROUPS, strict=True))[rank * per : (rank + 1) * per]
    batch = ContrastiveCollator(PromptBuilder(tokenizer, recipe), 48, 64)(local)
    if size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)  # averages gradients over ranks
    q, p = embed(model, batch["query"], recipe), embed(model, batch["passage"], recipe)
    loss = info_nce(q, p, 0.05, cross_device=size > 1)
    loss.backward()
    module = model.module if size > 1 else model
    grads = {n: w.grad.detach().clone() for n, w in module.named_parameters() if w.grad is not None}
    return {"loss": loss.item(), "grads": grads}


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    out = step(sys.argv[1], dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        torch.save(out, sys.argv[2])
    dist.destroy_process_group()
