#!/usr/bin/env bash
# LoRAComBench on SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32), on CPU: LoRA on AG News and on
# GSM8K, four merges of the two, then every model on both tasks (configs/matrix/loracombench_smollm2.yaml:
# the first 1,000 AG News test rows and the first 250 GSM8K test questions).
# Re-runnable: a finished training or merge is kept and the matrix skips finished cells, so an interrupted
# run continues where it stopped. Adapters stay under runs/loracombench (not committed); the records
# (results.json, metrics.csv, config.yaml, merge.json, the matrix cells) are copied here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data RUNS=runs/loracombench OUT=results/loracombench_smollm2_cpu
# Padded batches, as when these numbers were made (data.packing auto now trains these padding-free: same
# rows and loss to 1e-5, faster, other timings).
ONCE=(--trainer.max_epochs 1 --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false
  --data.packing false)
mkdir -p "$RUNS"

train() {  # train NAME FIT-ARGS...: the adapter ends up in $RUNS/NAME/adapter
  local name=$1; shift
  if [ ! -f "$RUNS/$name/adapter/adapter_model.safetensors" ]; then
    rm -rf "${RUNS:?}/$name"
    /usr/bin/time -f "$name wall %e s" "$PY" -m lit_lora fit "$@" "${ONCE[@]}" \
      --trainer.default_root_dir "$RUNS/$name" > "$RUNS/$name.log" 2>&1 || { tail -5 "$RUNS/$name.log"; exit 1; }
    cp -r "$RUNS/$name/lightning_logs/version_0/adapter" "$RUNS/$name/adapter"
  fi
  mkdir -p "$OUT/train/$name"
  cp "$RUNS/$name/lightning_logs/version_0/"{results.json,metrics.csv,config.yaml} "$OUT/train/$name/"
}

merge() {  # merge METHOD MERGE-ARGS...
  local method=$1; shift
  [ -f "$RUNS/merge_$method/merge.json" ] || "$PY" -m lit_lora merge "$RUNS/LoRA_AGNews/adapter" \
    "$RUNS/LoRA_GSM8K/adapter" --method "$method" "$@" --out "$RUNS/merge_$method"
  mkdir -p "$OUT/merges"; cp "$RUNS/merge_$method/merge.json" "$OUT/merges/$method.json"
}

# 640 AG News training rows (40 steps of 16), validation on 200 held-out training rows.
train LoRA_AGNews --config configs/agnews_smollm2.yaml --data.data_dir "$DATA/ag_news" \
  --data.max_train_samples 640 --data.max_eval_samples 200
# 384 GSM8K training questions (48 steps of 8), validation on 32 held-out training questions.
train LoRA_GSM8K --config configs/gsm8k_smollm2.yaml --data.data_dir "$DATA/gsm8k" \
  --data.max_train_samples 384 --data.max_eval_samples 32

merge average_ab --weights 0.5 0.5
merge linear --weights 0.5 0.5
merge ties --weights 1.0 1.0 --density 0.5
merge dare_ties --weights 1.0 1.0 --density 0.5 --seed 0

# The matrix in order of need: GSM8K for the base and its own LoRA (results/smollm2_cpu uses them too),
# the AG News column (one prompt pass per row), then the GSM8K cells left (greedy answers are the slow part).
MATRIX=("$PY" -m lit_lora matrix configs/matrix/loracombench_smollm2.yaml --out "$OUT/matrix")
"${MATRIX[@]}" --tasks gsm8k --models base LoRA_GSM8K
"${MATRIX[@]}" --tasks agnews
"${MATRIX[@]}"
