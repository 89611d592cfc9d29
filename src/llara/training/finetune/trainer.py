"""Contrastive fine-tuning on the shared training machinery (llara.training.common, HF Trainer).

ContrastiveTrainer only adds what is specific to retrieval: the InfoNCE loss over query and passage
embeddings, negatives gathered across ranks, and the GradCache training step. LoRA, special-token
learning rate, bf16, checkpoints, --resume, --max-time and the final merged save come from
llara.training.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import torch
from transformers import TrainerCallback

from llara import compat
from llara.modeling.config import ModelConfig
from llara.modeling.embedder import embed
from llara.modeling.loading import device_of_rank, load_model
from llara.modeling.prompts import PromptBuilder
from llara.settings import LongDocuments
from llara.training.common import (
    LlaraTrainer,
    checkpoint_step,
    finish,
    finished_checkpoint,
    prepare_model,
    resume_checkpoint,
    save_from_checkpoint,
    say_plan,
    training_arguments,
    training_plan,
    use_bf16,
    uses_cpu_attention,
)
from llara.training.finetune.data import ContrastiveCollator, TrainDataset, read_train_file
from llara.training.finetune.loss import grad_cache_step, info_nce
from llara.training.finetune.options import GRAD_CACHE_DEEPSPEED, FinetuneOptions
from llara.training.memory import ModelShape, available_memory, plan_finetune

log = logging.getLogger(__name__)


class EpochSampling(TrainerCallback):
    """Tell the dataset which epoch it serves, so every epoch samples fresh (but reproducible) groups."""

    def __init__(self, dataset: TrainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class ContrastiveTrainer(LlaraTrainer):
    opts: FinetuneOptions

    def _loss(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return info_nce(q, p, self.opts.temperature, self.opts.negatives_cross_device)

    def _record(self, inputs: dict, loss: torch.Tensor) -> None:
        tokens = int(inputs["query"]["attention_mask"].sum() + inputs["passage"]["attention_mask"].sum())
        self.record(tokens=tokens, contrastive=loss.detach())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        q = embed(model, inputs["query"], self.recipe)
        p = embed(model, inputs["passage"], self.recipe)
        loss = self._loss(q, p)
        self._record(inputs, loss)
        return (loss, {"q": q, "p": p}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.opts.grad_cache:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = compat.prepare_inputs(self, inputs)
        scale = 1.0 / compat.accumulation_steps(self)  # as the Trainer scales a plain loss

        def encode(part: dict) -> torch.Tensor:
            with compat.loss_context(self):
                return embed(model, part, self.recipe)

        loss = grad_cache_step(
            encode,
            inputs["query"],
            inputs["passage"],
            self._loss,
            self.opts.grad_cache_chunk,
            backward=lambda surrogate: self.accelerator.backward(surrogate * scale),
            no_sync=lambda: self.accelerator.no_sync(model),
        )
        self._record(inputs, loss)
        return loss * scale


def finetune(model: str, train_file: str | Path, opts: FinetuneOptions, trust_remote_code: bool = False) -> dict:
    """Fine-tune `model` on query/pos/neg rows and save a merged HF folder at opts.output."""
    compat.check_training_stack()
    opts = opts.resolve()  # the device's profile fills what was left unset: a new, frozen object
    opts.validate()
    examples = read_train_file(train_file)  # all input checks happen before anything is written
    checkpoint = resume_checkpoint(opts)
    stage = {"stage": "finetune", **opts.contrastive(), "train": str(train_file), "base_model": str(model)}
    config = ModelConfig.of(model).override(opts.recipe, text_case=opts.text_case)
    # Training lengths are a compute budget (the cpu profile trains at 32/128), not a reading limit: the
    # saved encoding lengths, used by evaluate/encode/export, only ever grow to them. CISI's long queries
    # lost 0.09 nDCG@10 when encoded at 32/128 (benchmarks/RESULTS.md, issue 14).
    config = config.trained(
        stage,
        query_max_length=max(config.query_max_length, opts.query_max_length),
        passage_max_length=max(config.passage_max_length, opts.passage_max_length),
    )
    if finished_checkpoint(opts, checkpoint):  # nothing left to train: no need to load the base model
        save_from_checkpoint(checkpoint, config, opts.output)
        steps = checkpoint_step(checkpoint)
        return {"examples": len(examples), "steps": steps, "train_loss": None, "output": str(opts.output)}
    trainer = finetune_trainer(model, examples, opts, config, stage, train_file, trust_remote_code)
    opts = trainer.opts  # the plan's: memory may have turned GradCache on
    groups = trainer.train_dataset.group_size
    log.info("fine-tuning on %d rows of %s, %d passages per query", len(examples), train_file, groups)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    finish(trainer, trainer.processing_class, config, opts.output, model, trust_remote_code)
    return {
        "examples": len(examples),
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "output": str(opts.output),
    }


def epoch_steps(rows: int, opts: FinetuneOptions) -> int | None:
    """Optimizer steps in `opts.epochs` passes over `rows` training rows, across every rank (None: no cap)."""
    if opts.epochs is None:
        return None
    rows_per_step = opts.train_batch_size * opts.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, math.ceil(opts.epochs * rows / rows_per_step))


def stop_arguments(cap: int | None, opts: FinetuneOptions) -> dict:
    """TrainingArguments overrides for a run that --epochs ends before --max-steps: a stop only, the
    learning-rate schedule stays the one --max-time/--max-steps give."""
    if cap is None or (opts.max_steps is not None and opts.max_steps <= cap):
        return {}
    if opts.max_steps is None:  # a constant rate after warm-up: 10 steps, or less for a very short run
        return {"max_steps": cap, "warmup_steps": min(10, max(1, cap // 5))}
    return {"max_steps": cap}


PLAN_SAMPLE = 1000  # positives measured for the plan's line on long passages


def long_passages(prompts: PromptBuilder, examples: list, opts: FinetuneOptions) -> str:
    """The plan's line on positives longer than the passage length (measured on a seeded sample)."""
    import random

    sample = random.Random(opts.seed).sample(examples, min(PLAN_SAMPLE, len(examples)))
    counts = prompts.passages([e.pos[0] for e in sample], opts.passage_max_length).counts()
    share = f"{counts.long} of {counts.documents}" + (" sampled" if len(sample) < len(examples) else "")
    how = "each read as its window the query is about" if opts.long_documents == LongDocuments.split else "truncated"
    line = f"{share} positives longer than {opts.passage_max_length} tokens" + (f": {how}" if counts.long else "")
    return f"{line}; {counts.folded} in capitals only, read in lower case" if counts.folded else line


def finetune_trainer(
    model: str,
    examples: list,
    opts: FinetuneOptions,
    config: ModelConfig,
    stage: dict,
    path: str | Path | None = None,
    trust_remote_code: bool = False,
) -> ContrastiveTrainer:
    """What `finetune` trains with: the model (fitted to memory, prepared), data, collator, Trainer.
    `opts` is resolved (`FinetuneOptions.resolve`); the Trainer's `opts` is the plan's copy of it, and
    `stage` (the llara.json record of this run) learns the plan."""
    recipe_ = config.recipe_spec
    hf_model, tokenizer = load_model(model, trust_remote_code=trust_remote_code)
    dataset = TrainDataset(examples, opts.group_size, seed=opts.seed, path=path)
    # Fit the step to the memory this machine has, and say so.
    grad_cache, chunk = plan_finetune(
        ModelShape.of(hf_model),
        opts.train_batch_size,
        dataset.group_size,
        opts.query_max_length,
        opts.passage_max_length,
        grad_cache=opts.grad_cache,
        chunk=opts.grad_cache_chunk,
        checkpointing=opts.gradient_checkpointing,
        full=opts.full,
        available=available_memory(device_of_rank()),
        half_bytes=2 if use_bf16(opts.precision) or opts.precision == "fp16" else 4,
        attention_scores=uses_cpu_attention(opts, hf_model.config),
        grad_cache_refused=GRAD_CACHE_DEEPSPEED if opts.deepspeed else None,
    )
    opts = replace(opts, grad_cache=grad_cache, grad_cache_chunk=chunk)
    wrapped = prepare_model(hf_model, tokenizer, recipe_, opts)  # the recipe's special tokens: prompts count them
    prompts = PromptBuilder(tokenizer, recipe_, config.text_case)
    cap = epoch_steps(len(dataset), opts)
    plan = training_plan(
        opts,
        hf_model.config,
        profile=opts.profile,
        group_size=dataset.group_size,
        lengths=f"{opts.query_max_length}/{opts.passage_max_length}",
        lr=opts.lr,
        grad_cache=f"chunks of {chunk} texts" if grad_cache else None,
        long_passages=long_passages(prompts, examples, opts),
        epochs=None if cap is None else f"{opts.epochs:g} ({cap} steps at most)",
    )
    say_plan("fine-tuning", plan)
    stage.update(grad_cache=grad_cache, grad_cache_chunk=chunk, plan=plan)  # what actually runs, into llara.json
    split = opts.long_documents == LongDocuments.split
    collator = ContrastiveCollator(prompts, opts.query_max_length, opts.passage_max_length, split=split)
    # Gathered negatives need the same batch size on every rank.
    args = training_arguments(opts, dataloader_drop_last=opts.negatives_cross_device, **stop_arguments(cap, opts))
    return ContrastiveTrainer(
        model=wrapped,
        args=args,
        opts=opts,
        recipe=recipe_,
        config=config,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,  # saved in each checkpoint, which then loads on its own
        callbacks=[EpochSampling(dataset)],
    )
