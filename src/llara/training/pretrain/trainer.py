"""`llara pretrain`: EBAE + EBAR adaptation on plain text with the HF Trainer."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from llara import compat
from llara.errors import LlaraError
from llara.modeling.config import ModelConfig
from llara.modeling.loading import device_of_rank, load_model, resolve_model
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import Recipe, load_recipe
from llara.training.common import (
    LlaraTrainer,
    finish,
    finished_checkpoint,
    prepare_model,
    resume_checkpoint,
    save_from_checkpoint,
    say_plan,
    special_token_ids,
    training_arguments,
    training_plan,
    use_bf16,
    uses_cpu_attention,
)
from llara.training.memory import ModelShape, available_memory, plan_pretrain
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.data import PretrainDataset, survey_documents
from llara.training.pretrain.loss import joint_loss
from llara.training.pretrain.options import PretrainOptions

log = logging.getLogger(__name__)

PRETRAIN_RECIPES = ("reference", "paper")  # the built-ins the joint pass can train (others: see check_pretrain_recipe)


def check_pretrain_recipe(recipe: Recipe) -> None:
    """The joint EBAE + EBAR pass reads logits at the pooled suffix tokens after one shared prefix."""
    where = {"path": recipe.source} if recipe.source else {}
    if recipe.pooling != "last":
        raise LlaraError(
            f"pretraining reads the pooled tokens' logits: recipe {recipe.name!r} needs pooling 'last', "
            f"not {recipe.pooling!r} (pretraining supports e.g. {', '.join(PRETRAIN_RECIPES)})",
            field="pooling",
            **where,
        )
    if recipe.prefix("passage") != recipe.prefix("query"):
        raise LlaraError(
            f"pretraining runs EBAE and EBAR in one pass over one shared prefix: recipe {recipe.name!r} has "
            f"{recipe.prefix('passage')!r} before the passage {{text}} and {recipe.prefix('query')!r} before the "
            "query's; use it for fine-tuning and encoding",
            field="query",
            **where,
        )


class PretrainTrainer(LlaraTrainer):
    """The Trainer's loss is the joint EBAE + EBAR (+ LM) loss of one forward pass."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, parts = joint_loss(model, inputs)  # parts: only the tasks this batch had targets for
        self.record(tokens=int(inputs["real"].sum()), **{k: v.detach() for k, v in parts.items()})
        return (loss, None) if return_outputs else loss


def run_pretrain(model_name: str, corpus: str | Path, opts: PretrainOptions, trust_remote_code: bool = False) -> Path:
    """Adapt `model_name` on `corpus`; write the merged model to `opts.output` and return it."""
    recipe_ = load_recipe(opts.recipe)  # a built-in name or a recipe file
    check_pretrain_recipe(recipe_)
    compat.check_training_stack()
    opts.validate()
    # Encoding lengths carry over from the base model (a llara folder) or stay at the defaults.
    base = ModelConfig.of(model_name).override(text_case=opts.text_case)
    n_docs, folded = survey_documents(corpus, base.text_case)  # validates every row before anything is written
    resume = resume_checkpoint(opts)
    stage = {
        "stage": "pretrain",
        "base_model": str(resolve_model(model_name)),
        "corpus": str(corpus),
        "chunk_tokens": opts.chunk_tokens,
        "lm_loss": opts.lm_loss,
        "remove_stop_words": opts.remove_stop_words,
        "halve_short": opts.halve_short,
    }
    config = base.trained(stage, recipe=recipe_)
    if finished_checkpoint(opts, resume):  # nothing left to train: no need to load the base model
        return save_from_checkpoint(resume, config, opts.output)
    trainer = pretrain_trainer(model_name, corpus, opts, config, trust_remote_code=trust_remote_code)
    log.info("pretraining on %d documents of %s", n_docs, corpus)
    if folded:
        log.info("%d of %d documents are in capitals only: read in lower case (--text-case as-given reads them as "
                 "written)", folded, n_docs)  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return finish(trainer, trainer.processing_class, config, opts.output, model_name, trust_remote_code)


def pretrain_trainer(
    model_name: str, corpus: str | Path, opts: PretrainOptions, config: ModelConfig, trust_remote_code: bool = False
) -> PretrainTrainer:
    """What `run_pretrain` trains with: the model (fitted to memory, prepared), data, collator, Trainer."""
    recipe_ = config.recipe_spec
    model, tokenizer = load_model(model_name, trust_remote_code=trust_remote_code)
    # Fit the step to this machine's memory: micro-batches with accumulation, the same effective batch.
    batch, grad_accum = plan_pretrain(
        ModelShape.of(model),
        opts.train_batch_size,
        opts.grad_accum,
        opts.chunk_tokens,
        checkpointing=opts.gradient_checkpointing,
        full=opts.full,
        available=available_memory(device_of_rank()),
        half_bytes=2 if use_bf16(opts.precision) or opts.precision == "fp16" else 4,
        attention_scores=uses_cpu_attention(opts, model.config),
    )
    opts = replace(opts, train_batch_size=batch, grad_accum=grad_accum)  # the plan: a new object
    plan = training_plan(opts, model.config, chunk_tokens=opts.chunk_tokens, lm_loss=opts.lm_loss)
    say_plan("pretraining", plan)
    config.training[-1]["plan"] = plan  # this run's stage record in llara.json (the stage dict run_pretrain made)
    window = getattr(model.config, "sliding_window", None)
    if window and opts.chunk_tokens > window:  # the joint mask is passed whole: no window would apply
        raise LlaraError(
            f"--chunk-tokens {opts.chunk_tokens} is longer than {model.config.model_type}'s attention window "
            f"({window} tokens), which the joint EBAE + EBAR mask does not apply: use at most {window}"
        )
    model = prepare_model(model, tokenizer, recipe_, opts)
    prompts = PromptBuilder(tokenizer, recipe_, config.text_case)
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe_))
    # Packed rows (no padding) are read by the attention prepare_model sets on a CPU.
    collator = PretrainCollator(prompts, exclude, lm_loss=opts.lm_loss, pack=uses_cpu_attention(opts, model.config))
    budget = opts.chunk_tokens - collator.prompt_length()
    if budget < 1:
        raise LlaraError(
            f"--chunk-tokens {opts.chunk_tokens} is smaller than the {recipe_.name} prompt "
            f"({collator.prompt_length()} tokens)"
        )
    dataset = PretrainDataset(
        corpus,
        tokenizer,
        budget,
        seed=opts.seed,
        shuffle_buffer=opts.shuffle_buffer,
        target_length=opts.chunk_tokens,  # the reference cuts a target text at cutoff_len
        remove_stop_words=opts.remove_stop_words,
        text_case=config.text_case,
        halve_short=opts.halve_short,
    )
    log.info("%d text tokens per chunk", budget)
    return PretrainTrainer(
        model=model,
        args=training_arguments(opts),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        opts=opts,
        recipe=recipe_,
        config=config,
    )
