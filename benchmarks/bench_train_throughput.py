"""Training throughput against the machine's matmul peak: pretraining and fine-tuning, today's step vs the fast one.

    python benchmarks/bench_train_throughput.py [--steps 10] [--jobs pretrain,finetune] [--configs today,fast]

First the bf16 and fp32 matmul peak of this machine (square matmuls, best of a few, the same threads
as training). Then, per job, K optimizer steps of smollm2 for each configuration, built by llara's own
`pretrain_trainer` / `finetune_trainer` and run by `Trainer.train()`: model, collator, loss, optimizer
and all, as `llara pretrain` / `llara finetune` run them. The configurations take turns step by step
(one thread each, in lock step, each with its own RNG stream), so machine noise hits them alike.

Configurations (the TrainOptions switches of training/speed.py; each adds to the one before):
  today    the step as it was at commit 94fa7e2: fp32 base weights under bf16 autocast, SDPA's flash
           attention, padded pretraining rows, PEFT's layers (the special-token rows with a copy and a
           gradient of the whole embedding matrix; each LoRA update a matmul, a scaling and an addition)
  lean     + the special-token rows trained on their own, each LoRA update added in one addmm
  exact    + eager attention on CPU, and pretraining rows packed without padding (exact)
  fast     + frozen projection weights held in bf16, their normed input cast once (autocast's forward
           values; gradients add up in bf16 where autocast added them in fp32): the defaults

Data: pretraining on CISI's corpus.jsonl (else the arXiv abstracts of the `cherche` package); fine-tuning
on weak pairs built from it as `llara pairs` does (title -> text, BM25 negatives). Defaults: PretrainOptions
(batch 8, 128-token rows, LoRA r16 on 7 projections, no dropout) and FinetuneOptions' profile for this
device (CPU: group 2, 32/128 tokens, batch 8, lr 1e-3, LoRA dropout 0.05).

FLOP model: a training step costs about 6 x N x tokens (N: the non-embedding parameters, the decoder
layers; forward 2N, gradient of the activations 2N, of the weights 2N), attention and the LM head left
out. With LoRA the frozen weights need no weight gradient: 4 x N + 6 x N_lora per token. Rates count
real (non-padding) tokens; "computed" also counts the padding the projections run over.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import ProgressCallback, TrainerCallback, set_seed

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
CONFIGS = {
    "today": {"lean_lora": False, "cpu_attention": False, "bf16_base": False},
    "lean": {"cpu_attention": False, "bf16_base": False},
    "exact": {"bf16_base": False},
    "fast": {},
}


# ------------------------------------------------------------------------------------------- peak
def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best GFLOP/s of square matmuls in `dtype` (2 n^3 flops each)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        a @ b  # warm-up: oneDNN picks its kernel
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


# ------------------------------------------------------------------------------------ lock step
class Turns:
    """Threads run one at a time, in a fixed order, one training step per turn."""

    def __init__(self, names: list[str]) -> None:
        self.active, self.i, self.cond = list(names), 0, threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.active[self.i % len(self.active)] == name)

    def done(self, name: str, leave: bool = False) -> None:
        with self.cond:
            if name in self.active:
                j = self.active.index(name)
                if leave:
                    self.active.remove(name)
                    self.i = j
                else:
                    self.i = j + 1
                self.i = self.i % len(self.active) if self.active else 0
            self.cond.notify_all()


class Counting:
    """The trainer's collator, counting real and computed tokens of the batches it makes."""

    def __init__(self, collator) -> None:
        self.collator, self.real, self.computed = collator, 0, 0

    def __call__(self, features):
        batch = self.collator(features)
        if "real" in batch:  # pretraining (a packed batch holds real tokens only)
            self.real += int(batch["real"].sum())
            self.computed += batch["input_ids"].numel()
        else:  # fine-tuning: queries and passages
            for side in ("query", "passage"):
                self.real += int(batch[side]["attention_mask"].sum())
                self.computed += batch[side]["input_ids"].numel()
        return batch

    def take(self) -> tuple[int, int]:
        out = self.real, self.computed
        self.real = self.computed = 0
        return out


class Clock(TrainerCallback):
    """Times each step (wall and CPU seconds) while it holds the turn; keeps its own RNG stream."""

    def __init__(self, name: str, turns: Turns, counter: Counting, seed: int) -> None:
        self.name, self.turns, self.counter, self.seed = name, turns, counter, seed
        self.steps: list[dict] = []
        self.rng = None

    def _start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_begin(self, args, state, control, **kwargs):
        self.turns.wait(self.name)
        set_seed(self.seed)
        self._start()

    def on_step_end(self, args, state, control, **kwargs):
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        real, computed = self.counter.take()
        self.steps.append({"wall": wall, "cpu": cpu, "real": real, "computed": computed})
        self.rng = torch.get_rng_state()
        self.turns.done(self.name)
        self.turns.wait(self.name)
        torch.set_rng_state(self.rng)
        self._start()

    def on_train_end(self, args, state, control, **kwargs):
        self.turns.done(self.name, leave=True)


# ----------------------------------------------------------------------------------------- jobs
def pretrain_trainers(args, configs: dict[str, dict], work: Path, corpus: Path) -> dict:
    from llara.modeling.config import ModelConfig
    from llara.modeling.recipes import load_recipe
    from llara.training.pretrain.options import PretrainOptions
    from llara.training.pretrain.trainer import pretrain_trainer

    out = {}
    for name, switches in configs.items():
        opts = PretrainOptions(output=work / f"pretrain-{name}", **common(args), **switches)
        opts.validate()
        config = ModelConfig.of(args.model).trained({"stage": "pretrain"}, recipe=load_recipe(opts.recipe))
        out[name] = pretrain_trainer(args.model, corpus, opts, config)
    return out


def finetune_trainers(args, configs: dict[str, dict], work: Path, corpus: Path) -> dict:
    from llara.modeling.config import ModelConfig
    from llara.training.finetune.data import read_train_file
    from llara.training.finetune.options import FinetuneOptions
    from llara.training.finetune.trainer import finetune_trainer
    from llara.training.mining import pairs

    train = work / "pairs.jsonl"
    if not train.exists():
        pairs(corpus, train)  # as `llara pairs --corpus C --output P` (title queries, 15 BM25 negatives)
    examples = read_train_file(train)
    out = {}
    for name, switches in configs.items():
        opts = FinetuneOptions(output=work / f"finetune-{name}", **common(args), **switches).resolve()
        opts.validate()
        stage = {"stage": "finetune"}
        config = (
            ModelConfig.of(args.model)
            .override(opts.recipe)
            .trained(stage, query_max_length=opts.query_max_length, passage_max_length=opts.passage_max_length)
        )
        out[name] = finetune_trainer(args.model, examples, opts, config, stage, train)
    return out


def common(args) -> dict:
    return {"max_steps": args.steps, "logging_steps": 1, "save_every": 10**9, "seed": args.seed}


def run_interleaved(trainers: dict, seed: int) -> dict[str, tuple[Clock, list[dict]]]:
    turns = Turns(list(trainers))
    clocks, errors = {}, []
    for name, trainer in trainers.items():
        trainer.remove_callback(ProgressCallback)  # no bars or log lines: the table below says it all
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        clocks[name] = Clock(name, turns, counter, seed)
        trainer.add_callback(clocks[name])

    def train(name: str) -> None:
        try:
            trainers[name].train()
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append((name, e))
        finally:
            turns.done(name, leave=True)

    threads = [threading.Thread(target=train, args=(name,), daemon=True) for name in trainers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"configuration {errors[0][0]} failed") from errors[0][1]
    return {name: (clocks[name], [h for h in trainers[name].state.log_history if "loss" in h]) for name in trainers}


# ------------------------------------------------------------------------------------------ report
def count_params(trainer) -> tuple[int, int]:
    """(non-embedding parameters: the decoder layers, trainable LoRA parameters)."""
    from llara.training.speed import decoder_layers

    model = trainer.model
    layers = decoder_layers(model)
    n = sum(p.numel() for p in layers.parameters())
    lora = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "lora_" in name)
    return n, lora


def report(job: str, results: dict, trainers: dict, peaks: dict[str, float], warmup: int) -> None:
    n, n_lora = count_params(next(iter(trainers.values())))
    print(f"\n## {job}: {n / 1e6:.1f}M non-embedding parameters, {n_lora / 1e6:.2f}M LoRA parameters")
    print(
        f"(steps after the first {warmup}; GFLOP/s count real tokens: 6N = 6 x N x tokens, LoRA = (4N + 6 N_lora) x "
        "tokens; % of the bf16 / fp32 matmul peak)\n"
    )
    print(
        "| config | s/step | CPU s/step | real tok/s | computed tok/s | 6N GFLOP/s | % bf16 | % fp32 "
        "| LoRA GFLOP/s | % bf16 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rates = {}
    for name, (clock, _) in results.items():
        steps = clock.steps[warmup:] or clock.steps
        wall = sum(s["wall"] for s in steps)
        real, computed = sum(s["real"] for s in steps), sum(s["computed"] for s in steps)
        tok_s = real / wall
        rates[name] = (tok_s, statistics.median(s["cpu"] / max(1, s["real"]) for s in steps))
        full, lora = 6 * n * tok_s / 1e9, (4 * n + 6 * n_lora) * tok_s / 1e9
        print(
            f"| {name} | {statistics.median(s['wall'] for s in steps):.2f} | "
            f"{statistics.median(s['cpu'] for s in steps):.2f} | {tok_s:.0f} | {computed / wall:.0f} | "
            f"{full:.1f} | {100 * full / peaks['bf16']:.0f}% | {100 * full / peaks['fp32']:.0f}% | "
            f"{lora:.1f} | {100 * lora / peaks['bf16']:.0f}% |"
        )
    if "today" in rates:
        base_tok, base_cpu = rates["today"]
        for name, (tok_s, cpu) in rates.items():
            if name != "today":
                print(
                    f"\n{name} vs today: {tok_s / base_tok:.2f}x real tokens/s (wall), "
                    f"{base_cpu / cpu:.2f}x (CPU seconds per real token, median step)"
                )
    names = list(results)
    first = results[names[0]][1]
    keys = [k for k in ("ebae", "ebar") if first and k in first[0]]  # fine-tuning: loss = contrastive
    print("\nloss per step (the Trainer's logged loss" + (f"; {', '.join(keys)}" if keys else "") + ")\n")
    print("| step | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    logs = {name: results[name][1] for name in names}
    for i in range(max(len(v) for v in logs.values())):
        cells = []
        for name in names:
            h = logs[name][i] if i < len(logs[name]) else None
            extra = "" if h is None or not keys else " (" + ", ".join(f"{h[k]:.4f}" for k in keys if k in h) + ")"
            cells.append("-" if h is None else f"{h['loss']:.5f}{extra}")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    mean = {name: statistics.mean(h["loss"] for h in logs[name]) for name in names if logs[name]}
    print("\nmean loss over the steps: " + ", ".join(f"{name} {value:.5f}" for name, value in mean.items()))
    if "today" in logs:
        for name in names:
            if name != "today":
                pairs = zip(logs["today"], logs[name], strict=False)
                diffs = [abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in pairs]
                print(f"{name}: largest relative difference to today's loss in one step {max(diffs):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--corpus", default=None, help="BEIR corpus.jsonl (default: CISI's, else the arXiv abstracts)")
    ap.add_argument("--jobs", default="pretrain,finetune")
    ap.add_argument("--configs", default="today,fast", help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per configuration and job")
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out of the rates")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = {name: CONFIGS[name] for name in args.configs.split(",")}

    peaks = {k: matmul_peak(dtype) for k, dtype in DTYPES.items()}
    print(
        f"{torch.get_num_threads()} threads; matmul peak bf16 {peaks['bf16']:.0f} GFLOP/s, "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s; model {args.model}; {args.steps} steps per configuration"
    )
    with tempfile.TemporaryDirectory(prefix="llara-bench-") as tmp:
        work = Path(tmp)
        corpus = Path(args.corpus) if args.corpus else CISI
        if not corpus.is_file():
            from llara.data.arxiv import write_arxiv_beir

            corpus = write_arxiv_beir(work / "arxiv") / "corpus.jsonl"
        print(f"corpus {corpus}")
        builders = {"pretrain": pretrain_trainers, "finetune": finetune_trainers}
        for job in args.jobs.split(","):
            # The peak again before each job (the best one so far counts): a busy moment only lowers it.
            peaks = {k: max(v, matmul_peak(DTYPES[k])) for k, v in peaks.items()}
            t0 = time.perf_counter()
            trainers = builders[job](args, configs, work, corpus)
            results = run_interleaved(trainers, args.seed)
            report(job, results, trainers, peaks, args.warmup)
            print(f"({job}: {time.perf_counter() - t0:.0f} s in all)")
            del trainers, results
    again = {k: matmul_peak(dtype) for k, dtype in DTYPES.items()}
    print(
        f"\nmatmul peak at the end: bf16 {again['bf16']:.0f}, fp32 {again['fp32']:.0f} GFLOP/s "
        f"(the tables used bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f})"
    )


if __name__ == "__main__":
    main()
