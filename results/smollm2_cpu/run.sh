#!/usr/bin/env bash
# SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32) before and after LoRA, on CPU:
#   WikiText-2 test perplexity (the first 600 lines of test.txt in 512-token blocks), base vs LoRA on
#   the first 700 lines of train.txt (one epoch);
#   chat SFT on the four example sources of configs/data/chat: held-out assistant-token loss and the
#   answers to configs/data/chat/validation_prompts.jsonl (three per domain) before and after.
# GSM8K exact match base vs LoRA is the matrix of results/loracombench_smollm2_cpu (same models, same test rows).
# Re-runnable: a finished step is kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data RUNS=runs/smollm2_cpu OUT=results/smollm2_cpu
QUIET=(--trainer.enable_progress_bar false)
mkdir -p "$RUNS"

step() {  # step NAME SUBCOMMAND ARGS...: one lit_lora run into $RUNS/NAME, its records copied to $OUT/NAME
  local name=$1 subcommand=$2; shift 2
  if [ ! -f "$RUNS/$name/done" ]; then
    rm -rf "${RUNS:?}/$name"
    /usr/bin/time -f "$name wall %e s" "$PY" -m lit_lora "$subcommand" "$@" "${QUIET[@]}" \
      --trainer.default_root_dir "$RUNS/$name" > "$RUNS/$name.log" 2>&1 || { tail -5 "$RUNS/$name.log"; exit 1; }
    touch "$RUNS/$name/done"
  fi
  mkdir -p "$OUT/$name"
  tail -1 "$RUNS/$name.log" > "$OUT/$name/wall_time.txt"
  for f in results.json metrics.csv config.yaml predictions.jsonl; do
    [ -f "$RUNS/$name/lightning_logs/version_0/$f" ] && cp "$RUNS/$name/lightning_logs/version_0/$f" "$OUT/$name/"
  done
  return 0
}
adapter() { echo "$RUNS/$1/lightning_logs/version_0/adapter"; }

# max_*_samples count lines of the text files (before they are cut into blocks).
WIKI=(--config configs/wikitext2_smollm2.yaml --data.data_dir "$DATA/wikitext2" --data.max_eval_samples 600)
step wikitext_base test "${WIKI[@]}"
step wikitext_lora_fit fit "${WIKI[@]}" --data.max_train_samples 700 --data.max_eval_samples 200 \
  --trainer.num_sanity_val_steps 0
step wikitext_lora test "${WIKI[@]}" --model.adapter_path "$(adapter wikitext_lora_fit)"

CHAT=(--config configs/multidomain_sft_smollm2.yaml)
PROMPTS=(--data.predict_file configs/data/chat/validation_prompts.jsonl)
step chat_base_validate validate "${CHAT[@]}"
step chat_base_predict predict "${CHAT[@]}" "${PROMPTS[@]}"
# Padded batches, as when these numbers were made (data.packing auto now trains this padding-free: same
# rows and loss to 1e-5, faster, other timings).
step chat_lora_fit fit "${CHAT[@]}" --trainer.num_sanity_val_steps 0 --data.packing false
step chat_lora_predict predict "${CHAT[@]}" "${PROMPTS[@]}" --model.adapter_path "$(adapter chat_lora_fit)"
"$PY" results/smollm2_cpu/answers.py > "$OUT/chat_answers.md"
