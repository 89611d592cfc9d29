"""Training machinery shared by `llara pretrain` and `llara finetune`, on the Hugging Face Trainer.

The small API a training command needs:

    opts = PretrainOptions(output=..., lr=..., ...)        # what the user asked for (a TrainOptions)
    model = prepare_model(model, tokenizer, recipe, opts)  # special tokens + LoRA (or full) + checkpointing
    args = training_arguments(opts)                        # TrainingArguments (bf16, ZeRO, accumulation, ...)
    trainer = MySubclass(model=model, args=args, opts=opts, recipe=recipe, config=config, ...)  # a LlaraTrainer
    trainer.train(resume_from_checkpoint=resume_checkpoint(opts))
    save_final(trainer.model, tokenizer, config, opts.output)  # merged, plain HF folder + llara.json

LlaraTrainer gives the recipe's special-token embeddings their own learning rate, logs extra
per-task losses (`self.record(ebae=...)`), reports tokens/s, and stops and saves at --max-time.
Checkpoints go to `<output>-checkpoints/checkpoint-N` (each one loadable by `llara evaluate`);
the final model folder is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from llara import compat
from llara.data.io import atomic_dir, write_json
from llara.errors import LlaraError
from llara.modeling.config import ModelConfig
from llara.modeling.loading import device_of_rank
from llara.modeling.precision import PRECISIONS, bf16_supported
from llara.modeling.prompts import add_special_tokens
from llara.modeling.recipes import Recipe
from llara.training.options import LORA_SHORT, TrainOptions
from llara.training.speed import (
    DOWNCAST,
    bf16_frozen_base,
    cheap_dropout,
    cpu_attention_fits,
    lean_lora,
    restore_fp32_base,
    use_cpu_attention,
)

log = logging.getLogger(__name__)

SPECIAL_PARAM = "trainable_tokens"  # PEFT's name for the rows of the special-token embeddings


# ------------------------------------------------------------------------------------------- model
# Where a family fuses projections (Phi-3: qkv_proj, gate_up_proj), a short name means the fused one.
FUSED_PROJECTIONS = {"q": "qkv_proj", "k": "qkv_proj", "v": "qkv_proj", "gate": "gate_up_proj", "up": "gate_up_proj"}


def lora_target_modules(targets: list[str], model: torch.nn.Module | None = None) -> list[str]:
    """`q,k,v,...` -> `q_proj,k_proj,...` (or the family's fused `qkv_proj`, `gate_up_proj`); full
    module names pass through. With `model`, a name that matches none of its linear layers is an error
    (PEFT would adapt the others and say nothing)."""
    linear = None
    if model is not None:
        linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    out: list[str] = []
    for t in targets:
        name = f"{t}_proj" if t in LORA_SHORT else t
        if linear is not None and name not in linear and FUSED_PROJECTIONS.get(t) in linear:
            name = FUSED_PROJECTIONS[t]
        if linear is not None and name not in linear:
            raise LlaraError(
                f"--lora-targets: {model.config.model_type} has no linear layer {name!r} "
                f"(it has {', '.join(sorted(linear))})"
            )
        if name not in out:
            out.append(name)
    return out


def special_token_ids(tokenizer: PreTrainedTokenizerBase, recipe: Recipe) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(recipe.special_tokens))


def on_cpu() -> bool:
    """Training runs on the CPU (the Trainer's `use_cpu`): asked of `device_of_rank`, the one place
    that decides the device."""
    return device_of_rank() == "cpu"


FAST_PATHS = ("lean_lora", "cpu_attention", "bf16_base", "cheap_dropout")  # training/speed.py, TrainOptions


def fast_paths_off(opts: TrainOptions) -> str | None:
    """Why no training.speed trick runs here, or None. They are proven by tests on a CPU with the
    tested PEFT / transformers releases, outside DeepSpeed (which partitions and wraps the layers)."""
    if not opts.fast_paths:
        return "--no-fast-paths"
    if not on_cpu():
        return "not tested on a GPU (benchmarks/gpu_check.sh checks them there)"
    if opts.deepspeed:
        return "not tested under DeepSpeed"
    return compat.untested_training_versions()


def fast_path(opts: TrainOptions, trick: str, config=None) -> bool:
    """Whether training.speed's `trick` (one of FAST_PATHS) runs: asked for, proven where this runs,
    and for `cpu_attention` proven for the model family of `config`."""
    if not getattr(opts, trick) or fast_paths_off(opts):
        return False
    if trick == "cpu_attention":
        return config is not None and cpu_attention_fits(config)
    if trick == "bf16_base":
        return not opts.full and use_bf16(opts.precision)
    return True


def uses_cpu_attention(opts: TrainOptions, config) -> bool:
    """`prepare_model` sets `speed.cpu_attention` (which also reads packed joint batches: pretraining
    rows without their padding) for a model of this `config`."""
    return fast_path(opts, "cpu_attention", config)


def downcasts_base(opts: TrainOptions) -> bool:
    """`prepare_model` holds the frozen base weights in bf16: LoRA, bf16, fast paths on."""
    return fast_path(opts, "bf16_base")


def say_fast_paths(opts: TrainOptions, config) -> None:
    """One line when a fast path that was asked for does not run, and why."""
    reason = fast_paths_off(opts)
    if reason and reason != "--no-fast-paths" and any(getattr(opts, t) for t in FAST_PATHS):
        log.info("training with PEFT's and transformers' own layers (llara's faster ones: %s)", reason)
    elif not reason and opts.cpu_attention and not cpu_attention_fits(config):
        log.info("llara's CPU attention is not proven for %s: training with transformers' own", config.model_type)


def training_plan(opts: TrainOptions, config, **resolved) -> dict:
    """What a run will do, resolved once from its options before training starts: the device, the
    precision that runs, the step, the attention and the fast paths (with `resolved`, the job's own
    resolved settings). Logged at the start (`say_plan`) and saved in llara.json with the stage."""
    precision = "bf16" if use_bf16(opts.precision) else "fp16" if opts.precision == "fp16" else "fp32"
    return {
        "device": device_of_rank(),
        "precision": precision,
        **resolved,
        "train_batch_size": opts.train_batch_size,
        "grad_accum": opts.grad_accum,
        "training": "full" if opts.full else f"LoRA r={opts.lora_r} alpha={opts.lora_alpha}",
        "gradient_checkpointing": opts.gradient_checkpointing,
        "deepspeed": opts.deepspeed,
        "attention": "llara's CPU attention" if uses_cpu_attention(opts, config) else "the model's own",
        "fast_paths": [trick for trick in FAST_PATHS if fast_path(opts, trick, config)],
    }


def say_plan(job: str, plan: dict) -> None:
    """The plan in one line, at the start of the run."""
    parts = [f"{key.replace('_', ' ')} {value}" for key, value in plan.items() if value not in (None, False, [])]
    log.info("%s plan: %s", job, ", ".join(parts))


def prepare_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: Recipe, opts: TrainOptions
) -> torch.nn.Module:
    """Add the recipe's special tokens, then wrap in LoRA (PEFT) with trainable special-token rows,
    or leave every weight trainable (--full).

    The step is made cheaper as `opts` allows (training/speed.py): PEFT's layers without their extra
    work (anywhere), and on a CPU cheaper dropout masks, eager attention and, under bf16, the frozen
    projection weights held in bf16 (undo with `restore_fp32_base` before merging: `finish` does)."""
    torch.manual_seed(opts.seed)  # the new embedding rows start from a seeded random draw
    add_special_tokens(model, tokenizer, recipe)
    model.config.use_cache = False
    say_fast_paths(opts, model.config)
    if uses_cpu_attention(opts, model.config):
        use_cpu_attention(model)
    if opts.gradient_checkpointing:
        # Non-reentrant: a checkpointed block needs no input that requires grad (PEFT still hooks the
        # embeddings to make one, which speed._rows_only_forward takes into account).
        compat.enable_checkpointing(model)
    if opts.full:
        model.train()
        return model
    from peft import LoraConfig

    config = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=lora_target_modules(opts.lora_targets, model),
        trainable_token_indices=special_token_ids(tokenizer, recipe) or None,
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = compat.get_peft_model(model, config)
    except ValueError as e:  # e.g. a target module the architecture does not have
        raise LlaraError(f"LoRA: {e}") from None
    if fast_path(opts, "lean_lora"):
        lean_lora(peft_model)
    if fast_path(opts, "cheap_dropout"):
        cheap_dropout(peft_model)
    if downcasts_base(opts):
        bf16_frozen_base(peft_model)
    peft_model.train()
    return peft_model


def param_groups(model: torch.nn.Module, lr: float, special_lr: float, weight_decay: float) -> list[dict]:
    """Optimizer groups: special-token embedding rows at `special_lr`, everything else at `lr`."""
    special, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if SPECIAL_PARAM in name:
            special.append(p)
        elif p.ndim < 2 or "norm" in name or "bias" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": special, "lr": special_lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# ------------------------------------------------------------------------------------ arguments
def use_bf16(precision: str) -> bool:
    if precision == "bf16":
        return True
    if precision == "auto":
        return bf16_supported(torch.device("cpu" if on_cpu() else "cuda"))
    return False


def launch_alone_for_deepspeed() -> None:
    """DeepSpeed started without a launcher (no torchrun): a process group of one, as `deepspeed
    --num_gpus 1` would set it up (DeepSpeed would otherwise look for MPI)."""
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    import socket

    with socket.socket() as s:  # a free port on the loopback, for the group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def training_arguments(opts: TrainOptions, **overrides) -> TrainingArguments:
    """TrainingArguments from our options: checkpoints in `<output>-checkpoints`, no reporting hubs."""
    if opts.deepspeed:
        launch_alone_for_deepspeed()
    if opts.precision not in PRECISIONS:
        raise LlaraError(f"unknown precision {opts.precision!r}; choose {', '.join(PRECISIONS)}")
    by_time_only = opts.max_steps is None
    kwargs = dict(
        output_dir=str(opts.checkpoint_dir),
        max_steps=opts.max_steps or 10**9,  # --max-time alone: the time callback ends the run
        learning_rate=opts.lr,
        # A run bounded only by time has no step count to decay over: warm up, then hold the rate, unless
        # --lr-decay, where LlaraTrainer.create_scheduler replaces this schedule with one that reads the clock.
        lr_scheduler_type="constant_with_warmup" if by_time_only else "linear",
        warmup_steps=10 if by_time_only else max(1, round(opts.warmup_ratio * opts.max_steps)),
        weight_decay=opts.weight_decay,
        per_device_train_batch_size=opts.train_batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        bf16=use_bf16(opts.precision),
        use_cpu=on_cpu(),
        fp16=opts.precision == "fp16",
        deepspeed=opts.deepspeed,
        save_strategy="steps",
        save_steps=opts.save_every,
        save_total_limit=None,
        logging_steps=opts.logging_steps,
        logging_first_step=True,
        seed=opts.seed,
        data_seed=opts.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # Under torchrun each rank reads the (iterable) pretraining stream and keeps its own share of
        # every batch; accelerate's default, rank 0 reading for all and concatenating, cannot join
        # batches padded to different lengths.
        accelerator_config={"dispatch_batches": False},
        # Every trainable weight takes part in every step (the pretraining loss anchors the logits even
        # in a batch without targets; fine-tuning runs the LM head on one position): no DDP search
        # for unused parameters, an extra traversal of the autograd graph each step.
        ddp_find_unused_parameters=False,
        report_to="none",
        disable_tqdm=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def resume_checkpoint(opts: TrainOptions) -> str | None:
    """The last checkpoint of this run with --resume, else None (and no stale checkpoints allowed)."""
    folder = opts.checkpoint_dir
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if opts.resume:
        if last is None:  # killed before its first checkpoint: the same as a fresh start
            log.warning("--resume: no checkpoint in %s yet; starting from the beginning", folder)
            return None
        log.info("resuming from %s", last)
        compat.cpu_ranks_restore_checkpoints()
        return last
    if last is not None:
        raise LlaraError("checkpoints of an earlier run exist; pass --resume or delete them", folder)
    return None


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """N of a `checkpoint-N` folder."""
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def finished_checkpoint(opts: TrainOptions, checkpoint: str | None) -> bool:
    """True when --resume found a checkpoint at --max-steps (a run killed after its last save).

    There is nothing left to train, and the Trainer, asked to resume it, would run one step too many.
    """
    if checkpoint is None or opts.max_steps is None:
        return False
    return checkpoint_step(checkpoint) >= opts.max_steps


def save_from_checkpoint(checkpoint: str, config: ModelConfig, output: str | os.PathLike) -> Path:
    """The final model of a finished run, from its last checkpoint (rank 0 writes it)."""
    from llara.modeling.loading import load_model

    if int(os.environ.get("RANK", 0)) == 0:
        model, tokenizer = load_model(checkpoint)
        save_final(model, tokenizer, config, output)
    return Path(output)


# ---------------------------------------------------------------------------------- checkpoints
KEEP_MARK = "llara-keep"  # in a checkpoint folder: never rotated out
TIME_FILE = "llara-time.json"  # in a checkpoint folder: minutes trained up to it, for --max-time on --resume


def verify_checkpoint(folder: Path) -> None:
    """Every safetensors file in `folder` is whole: its header parses and its tensors' byte ranges end
    exactly at the end of the file (a write cut short by a full disk or a lost mount fails here).
    LlaraError otherwise; cheap (the headers only), even for a 7B checkpoint."""
    import json
    import struct

    files = list(folder.rglob("*.safetensors"))
    if not files and not any(folder.glob("global_step*")):  # DeepSpeed keeps its weights in global_stepN/
        raise LlaraError("checkpoint has no weights", folder)
    for path in files:
        size = path.stat().st_size
        try:
            with path.open("rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length)) if 8 + length <= size else None
        except (OSError, ValueError, struct.error) as e:
            raise LlaraError(f"checkpoint weights unreadable ({e})", path) from None
        ends = [t["data_offsets"][1] for k, t in (header or {}).items() if k != "__metadata__"]
        if header is None or 8 + length + max(ends, default=0) != size:
            raise LlaraError("checkpoint weights are cut short (disk full?); the previous checkpoints are kept", path)


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoint-N folders of `root` (0: keep all), except those
    marked KEEP_MARK; returns the deleted ones."""
    if keep <= 0:
        return []
    found = sorted((p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=checkpoint_step)
    old = [p for p in found[:-keep] if not (p / KEEP_MARK).exists()]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


# ------------------------------------------------------------------------------------ callbacks
class TimeLimit(TrainerCallback):
    """Stop cleanly (with a checkpoint) after `minutes`; also checkpoint at the given minutes.

    The minutes count the whole run: a run resumed from a checkpoint starts at the training time that
    checkpoint recorded (`TIME_FILE`), so --max-time is one budget across crashes, and a learning rate
    that decays by time goes on from where it was.
    """

    def __init__(self, minutes: float | None, save_at: list[float] | None = None) -> None:
        self.minutes, self.save_at = minutes, sorted(save_at or [])
        self.already = 0.0  # minutes trained before this process (from the resumed checkpoint)
        self.agreed = 0.0  # minutes at the last step's end, the same on every rank
        self.start = time.monotonic()
        self.requested: set[int] = set()  # steps checkpointed for `save_at`

    def elapsed(self) -> float:
        """Minutes of training so far on this process's clock, before a resume included."""
        return self.already + (time.monotonic() - self.start) / 60

    def share_left(self) -> float:
        """The share of the time budget used up to the last step, 1 -> 0 (1 without a budget)."""
        return 1.0 if not self.minutes else max(0.0, 1.0 - self.agreed / self.minutes)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.agreed = time.monotonic(), self.already
        self.save_at = [m for m in self.save_at if m > self.already]  # saved before the resume

    def on_step_end(self, args, state, control, **kwargs):
        if self.minutes is None and not self.save_at:
            return control
        self.agreed = elapsed = slowest_clock(self.elapsed())
        if self.save_at and elapsed >= self.save_at[0]:
            while self.save_at and elapsed >= self.save_at[0]:
                self.save_at.pop(0)
            control.should_save = True
            self.requested.add(state.global_step)
        if self.minutes is not None and elapsed >= self.minutes:
            log.info("--max-time %.1f min reached at step %d; saving and stopping", self.minutes, state.global_step)
            control.should_training_stop = True
            control.should_save = True
        return control


def slowest_clock(minutes: float) -> float:
    """The largest of every rank's `minutes`: under torchrun the ranks then stop at the same step and
    decay the learning rate alike (each rank's own clock would let them drift apart)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return minutes
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    clock = torch.tensor([minutes], dtype=torch.float64, device=device)
    dist.all_reduce(clock, op=dist.ReduceOp.MAX)
    return float(clock.item())


class TimeProgress(TrainerCallback):
    """A progress bar in minutes for runs bounded by --max-time alone (the step count is unknown, so
    the Trainer's own bar would count towards a meaningless 10^9 steps)."""

    def __init__(self, limit: TimeLimit) -> None:
        self.limit, self.bar = limit, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(self.limit.minutes * 60), unit="s", desc="training", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.n = min(self.bar.total, round(self.limit.elapsed() * 60))
            self.bar.set_postfix(step=state.global_step, refresh=False)
            self.bar.refresh()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            keep = {k: v for k, v in logs.items() if k in ("loss", "ebae", "ebar", "lm", "tokens_per_s")}
            self.bar.set_postfix(step=state.global_step, **keep)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -------------------------------------------------------------------------------------- trainer
class LlaraTrainer(Trainer):
    """HF Trainer with special-token learning rate, per-task loss logging and tokens/s.

    Subclasses implement `compute_loss` and may call `self.record(name=value, tokens=n)`.
    """

    def __init__(self, *args, opts: TrainOptions, recipe: Recipe, config: ModelConfig, **kwargs) -> None:
        callbacks = list(kwargs.pop("callbacks", None) or [])
        self._time_limit = TimeLimit(opts.max_time, opts.save_at_minutes)
        callbacks.append(self._time_limit)
        super().__init__(*args, callbacks=callbacks, **kwargs)
        if opts.max_steps is None and opts.max_time is not None and not self.args.disable_tqdm:
            self.remove_callback(ProgressCallback)
            self.add_callback(TimeProgress(self._time_limit))
        self.opts, self.recipe = opts, recipe
        self.model_config = config  # llara.json of each checkpoint and of the final model
        # Our losses are means per micro-batch: let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._tokens = 0
        self._t0 = time.monotonic()

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            cls, kwargs = compat.optimizer_cls_and_kwargs(self.args, opt_model)
            groups = param_groups(opt_model, self.args.learning_rate, self.opts.special_lr, self.args.weight_decay)
            kwargs.pop("lr", None)
            self.optimizer = cls(groups, lr=self.args.learning_rate, **kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """--lr-decay on a run bounded by --max-time alone: warm up over the first steps, then fall
        linearly to 0 at the time limit (the step count is unknown, so the schedule reads the clock)."""
        if self.lr_scheduler is None and self.opts.max_steps is None and self.opts.lr_decay:
            warmup, limit = max(1, self.args.warmup_steps), self._time_limit
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: min(1.0, step / warmup) * limit.share_left()
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        spent = Path(resume_from_checkpoint or "") / TIME_FILE
        if resume_from_checkpoint and spent.is_file():  # checkpoints of older llara have none: a fresh budget
            minutes = float(json.loads(spent.read_text()).get("minutes", 0.0))
            self._time_limit.already = minutes
            log.info("resuming after %.1f minutes of training", minutes)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """Write checkpoint-N under `.staging/` and rename it into place once complete.

        The Trainer writes a checkpoint file by file; killed half-way, it would leave a folder that
        --resume takes for the last checkpoint. Here a `checkpoint-N` folder always holds the weights,
        optimizer, RNG and trainer state, and llara.json + config.json, which make it loadable by
        `llara evaluate --model CKPT`. Every rank writes into the staging folder (DeepSpeed shards);
        rank 0 renames it after all are done.
        """
        root = Path(self.args.output_dir)
        name = f"checkpoint-{self.state.global_step}"
        staging = root / ".staging" / name
        if self.args.should_save:  # debris of a run killed while saving (maybe at another step)
            shutil.rmtree(staging.parent, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.args.output_dir = str(staging.parent)
        try:
            compat.save_checkpoint(self, model, trial)
        finally:
            self.args.output_dir = str(root)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            self.model_config.save(staging)
            write_json(staging / TIME_FILE, {"minutes": round(self._time_limit.agreed, 4)})
            if not (staging / "config.json").exists():  # beside a LoRA adapter: what marks a model folder
                write_json(staging / "config.json", self.model.config.to_dict())
            if self.state.global_step in self._time_limit.requested:
                (staging / KEEP_MARK).write_text("saved for --save-at-minutes: never rotated out\n")
            verify_checkpoint(staging)  # before it takes a final name, and before any older one goes
            if (root / name).exists():  # the same step saved again after a resume
                shutil.rmtree(root / name)
            os.replace(staging, root / name)
            shutil.rmtree(staging.parent, ignore_errors=True)
            rotate_checkpoints(root, self.opts.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def record(self, tokens: int = 0, **values: torch.Tensor | float) -> None:
        """Remember per-task losses (averaged over the logging window) and processed tokens."""
        self._tokens += tokens
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
            self._counts[k] = self._counts.get(k, 0) + 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # training logs only, not the final summary
            for k, total in self._sums.items():
                logs[k] = round(total / max(1, self._counts[k]), 4)
            self._sums, self._counts = {}, {}
            logs["tokens_per_s"] = round(self._tokens / max(1e-9, time.monotonic() - self._t0), 1)
        super().log(logs, *args, **kwargs)


# ---------------------------------------------------------------------------------------- output
def merged_model(model: torch.nn.Module) -> PreTrainedModel:
    """A plain HF model: LoRA (and the special-token rows) merged into the base weights."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return compat.merge_and_unload(model)
    return model


def save_final(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    config: ModelConfig,
    output: str | os.PathLike,
) -> Path:
    """Write the merged model, tokenizer and llara.json to `output` atomically (temp folder + rename).

    The folder is what `LlaraEncoder.from_pretrained` / `llara evaluate --model OUT` load.
    """
    output = Path(output)
    plain = merged_model(model)
    plain.config.use_cache = True
    with atomic_dir(output) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        config.save(tmp)
    return output


def finish(
    trainer: Trainer,
    tokenizer: PreTrainedTokenizerBase,
    config: ModelConfig,
    output: str | os.PathLike,
    base: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Save the final model after `trainer.train()`; call it on every rank.

    Under DeepSpeed ZeRO-3 each rank holds only a shard: the Trainer first consolidates the weights
    into a folder (a collective call), which rank 0 reloads, merges and saves like any other model.
    `base` (the model training started from) gives back the exact fp32 weights that `prepare_model`
    held in bf16, before LoRA is merged into them.
    """
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_deepspeed_enabled and plugin is not None and plugin.zero_stage == 3:
        from llara.data.io import write_json
        from llara.modeling.loading import load_model

        raw = Path(trainer.args.output_dir) / "final-consolidated"
        trainer.save_model(str(raw))
        if trainer.is_world_process_zero():
            if (raw / "adapter_config.json").is_file() and not (raw / "config.json").is_file():
                base_model = getattr(trainer.model, "get_base_model", lambda: trainer.model)()
                write_json(raw / "config.json", base_model.config.to_dict())  # not merged: its weights are shards
            tokenizer.save_pretrained(raw)
            with compat.zero3_init_disabled():  # one rank loads the whole model
                model, _ = load_model(raw)
            save_final(model, tokenizer, config, output)
            shutil.rmtree(raw, ignore_errors=True)
    elif trainer.is_world_process_zero():
        if base is not None:
            restore_fp32_base(trainer.model, str(base), trust_remote_code=trust_remote_code)
        elif hasattr(trainer.model, DOWNCAST):
            raise ValueError("the base weights were held in bf16: finish() needs `base` to merge into fp32 ones")
        save_final(trainer.model, tokenizer, config, output)
    # Every rank leaves together: a rank that exits while rank 0 still writes tears down its end of the
    # process group under a peer that may yet use it (an abort, at random, under torchrun).
    trainer.accelerator.wait_for_everyone()
    return Path(output)
