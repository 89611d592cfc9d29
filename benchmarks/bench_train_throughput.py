"""Training throughput against the machine's matmul peak: pretraining and fine-tuning, today's step vs the fast one.

    python benchmarks/bench_train_throughput.py [--steps 10] [--jobs pretrain,finetune] [--configs today,fast]

First the bf16 and fp32 matmul peak of this machine (square matmuls, best of a few, the same threads
as training). Then, per job, K optimizer steps of smollm2 for each configuration, built by llara's own
`pretrain_trainer` / `finetune_trainer` and run by `Trainer.train()`: model, collator, loss, optimizer
and all, as `llara pretrain` / `llara finetune` run them. Each configuration trains in its own process
(in its main thread: a training loop in a second thread ran 30% slower here), and they take turns
step by step, so machine noise hits them alike; one computes while the others wait.

Configurations (the TrainOptions switches of training/speed.py; each adds to the one before):
  today    the step as it was at commit 94fa7e2: fp32 base weights under bf16 autocast, SDPA's flash
           attention, padded pretraining rows, PEFT's layers (the special-token rows with a copy and a
           gradient of the whole embedding matrix; each LoRA update a matmul, a scaling and an addition)
  lean     + the special-token rows trained on their own, each LoRA update added in one addmm
  exact    + eager attention on CPU, and pretraining rows packed without padding (exact)
  bf16     + frozen projection weights held in bf16, their normed input cast once (autocast's forward
           values; gradients add up in bf16 where autocast added them in fp32)
  fast     + LoRA dropout masks from a fast generator instead of torch.bernoulli (the same rate, a
           different stream of masks; pretraining has no dropout): the defaults

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
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine_peak import peaks as matmul_peaks  # benchmarks/: the same yardstick as bench_encode_command
from transformers import ProgressCallback, TrainerCallback

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"
CONFIGS = {
    "today": {"lean_lora": False, "cpu_attention": False, "bf16_base": False, "cheap_dropout": False},
    "lean": {"cpu_attention": False, "bf16_base": False, "cheap_dropout": False},
    "exact": {"bf16_base": False, "cheap_dropout": False},
    "bf16": {"cheap_dropout": False},
    "fast": {},
}


# ------------------------------------------------------------------------------------ lock step
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
    """Times each step (wall and CPU seconds) between turns: it reports a step to the parent and
    waits for the word to run the next one, so only one configuration computes at a time."""

    def __init__(self, conn, counter: Counting) -> None:
        self.conn, self.counter, self.steps = conn, counter, []

    def _start(self) -> None:
        self.conn.recv()  # our turn
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_begin(self, args, state, control, **kwargs):
        self._start()

    def on_step_end(self, args, state, control, **kwargs):
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        real, computed = self.counter.take()
        self.steps.append({"wall": wall, "cpu": cpu, "real": real, "computed": computed})
        self.conn.send(("step", self.steps[-1]))
        self._start()


def worker(job: str, name: str, args: argparse.Namespace, work: Path, corpus: Path, conn) -> None:
    """One configuration, in its own process (training in its main thread, as `llara` runs it)."""
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        trainer = BUILDERS[job](args, name, CONFIGS[name], work, corpus)
        trainer.remove_callback(ProgressCallback)  # no bars or log lines: the tables say it all
        counter = Counting(trainer.data_collator)
        trainer.data_collator = counter
        clock = Clock(conn, counter)
        trainer.add_callback(clock)
        conn.send(("ready", count_params(trainer)))
        trainer.train()
        conn.send(("done", [h for h in trainer.state.log_history if "loss" in h]))
    except BaseException:  # noqa: BLE001 - shown by the parent
        import traceback

        conn.send(("error", traceback.format_exc()))


def run_interleaved(job: str, names: list[str], args, work: Path, corpus: Path) -> tuple[dict, tuple[int, int]]:
    """Step 1 of every configuration, then step 2 of every one, ...; returns {name: (steps, logs)}."""
    ctx = multiprocessing.get_context("spawn")
    procs = {}
    for name in names:
        mine, theirs = ctx.Pipe()
        process = ctx.Process(target=worker, args=(job, name, args, work, corpus, theirs), daemon=True)
        process.start()
        procs[name] = (process, mine)

    def receive(name: str, kind: str):
        message = procs[name][1].recv()
        if message[0] == "error":
            raise RuntimeError(f"configuration {name} failed:\n{message[1]}")
        assert message[0] == kind, message
        return message[1]

    params = [receive(name, "ready") for name in names][0]
    steps: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.steps):
        for name in names:
            procs[name][1].send("go")
            steps[name].append(receive(name, "step"))
    results = {}
    for name in names:
        procs[name][1].send("go")  # finish the run
        results[name] = (steps[name], receive(name, "done"))
        procs[name][0].join()
    return results, params


# ----------------------------------------------------------------------------------------- jobs
def pretrain_trainer_for(args, name: str, switches: dict, work: Path, corpus: Path):
    from llara.modeling.config import ModelConfig
    from llara.modeling.recipes import load_recipe
    from llara.training.pretrain.options import PretrainOptions
    from llara.training.pretrain.trainer import pretrain_trainer

    opts = PretrainOptions(output=work / f"pretrain-{name}", **common(args), **switches)
    opts.validate()
    config = ModelConfig.of(args.model).trained({"stage": "pretrain"}, recipe=load_recipe(opts.recipe))
    return pretrain_trainer(args.model, corpus, opts, config)


def finetune_trainer_for(args, name: str, switches: dict, work: Path, corpus: Path):
    from llara.modeling.config import ModelConfig
    from llara.training.finetune.data import read_train_file
    from llara.training.finetune.options import FinetuneOptions
    from llara.training.finetune.trainer import finetune_trainer

    train = work / "pairs.jsonl"  # written by the parent
    opts = FinetuneOptions(output=work / f"finetune-{name}", **common(args), **switches).resolve()
    opts.validate()
    stage = {"stage": "finetune"}
    config = (
        ModelConfig.of(args.model)
        .override(opts.recipe)
        .trained(stage, query_max_length=opts.query_max_length, passage_max_length=opts.passage_max_length)
    )
    return finetune_trainer(args.model, read_train_file(train), opts, config, stage, train)


BUILDERS = {"pretrain": pretrain_trainer_for, "finetune": finetune_trainer_for}


def common(args) -> dict:
    return {"max_steps": args.steps, "logging_steps": 1, "save_every": 10**9, "seed": args.seed}


# ------------------------------------------------------------------------------------------ report
def count_params(trainer) -> tuple[int, int]:
    """(non-embedding parameters: the decoder layers, trainable LoRA parameters)."""
    from llara.training.speed import decoder_layers

    model = trainer.model
    layers = decoder_layers(model)
    n = sum(p.numel() for p in layers.parameters())
    lora = sum(p.numel() for name, p in model.named_parameters() if p.requires_grad and "lora_" in name)
    return n, lora


def report(job: str, results: dict, params: tuple[int, int], peaks: dict[str, float], warmup: int) -> None:
    n, n_lora = params
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
    for name, (all_steps, _) in results.items():
        steps = all_steps[warmup:] or all_steps
        wall = sum(s["wall"] for s in steps)
        real, computed = sum(s["real"] for s in steps), sum(s["computed"] for s in steps)
        tok_s = real / wall
        rates[name] = (
            tok_s,
            statistics.median(s["real"] / s["wall"] for s in steps),
            statistics.median(s["cpu"] / max(1, s["real"]) for s in steps),
        )
        full, lora = 6 * n * tok_s / 1e9, (4 * n + 6 * n_lora) * tok_s / 1e9
        print(
            f"| {name} | {statistics.median(s['wall'] for s in steps):.2f} | "
            f"{statistics.median(s['cpu'] for s in steps):.2f} | {tok_s:.0f} | {computed / wall:.0f} | "
            f"{full:.1f} | {100 * full / peaks['bf16']:.0f}% | {100 * full / peaks['fp32']:.0f}% | "
            f"{lora:.1f} | {100 * lora / peaks['bf16']:.0f}% |"
        )
    if "today" in rates:
        base_tok, base_step, base_cpu = rates["today"]
        for name, (tok_s, step, cpu) in rates.items():
            if name != "today":
                print(
                    f"\n{name} vs today: {tok_s / base_tok:.2f}x real tokens/s (all steps), {step / base_step:.2f}x "
                    f"(median step), {base_cpu / cpu:.2f}x less CPU time per real token (median step)"
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
    if not set(args.jobs.split(",")) <= set(BUILDERS):
        ap.error(f"--jobs: pretrain and/or finetune, not {args.jobs!r}")

    peaks = matmul_peaks()
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
        for job in args.jobs.split(","):
            # The peak again before each job (the best one so far counts): a busy moment only lowers it.
            now = matmul_peaks()
            peaks = {k: max(v, now[k]) for k, v in peaks.items()}
            t0 = time.perf_counter()
            if job == "finetune":
                from llara.training.mining import pairs

                pairs(corpus, work / "pairs.jsonl")  # as `llara pairs` (title queries, 15 BM25 negatives)
            results, params = run_interleaved(job, list(configs), args, work, corpus)
            report(job, results, params, peaks, args.warmup)
            print(f"({job}: {time.perf_counter() - t0:.0f} s in all)")
    again = matmul_peaks()
    print(
        f"\nmatmul peak at the end: bf16 {again['bf16']:.0f}, fp32 {again['fp32']:.0f} GFLOP/s "
        f"(the tables used bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f})"
    )


if __name__ == "__main__":
    main()
