#!/usr/bin/env bash
# The four adapters of answerability_head/, run.sh (null weight 0.25), null_weight_first_epoch/ and
# three_epochs/ evaluated as one ensemble (model.ensemble_adapter_paths: their start, end and
# answerability logits averaged): the threshold is chosen on the held-out articles, then dev is scored
# once at it. Needs those four runs' folders under runs/ (run their run.sh first); trains nothing.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source results/squad_v2_minilm_cpu/common.sh
RUN=runs/squad_v2_minilm_ensemble

adapter() {
  echo "$(latest_version "runs/squad_v2_minilm_$1")/adapter"
}

# ensemble STAGE ROOT [ARG...]: the head run's config (its held-out articles, dev as the test split),
# its adapter first and the other three as members.
ensemble() {
  local stage=$1 root=$2
  shift 2
  "$PY" -m lit_lora "$stage" --config "$(latest_version runs/squad_v2_minilm_head)/config.yaml" \
    --model.adapter_path "$(adapter head)" \
    --model.ensemble_adapter_paths "[$(adapter nullw), $(adapter nullw_then1), $(adapter ep3)]" \
    --trainer.enable_progress_bar false --trainer.default_root_dir "$root" "$@"
}

ensemble validate "${RUN}_validate"
THRESHOLD=$(heldout_threshold "$(latest_version "${RUN}_validate")/results.json")
ensemble test "${RUN}_test" --model.null_score_diff_threshold "$THRESHOLD"

# Per-article scores on dev: predict at the same threshold, for the ensemble and for its best member alone
# (the head run, at its own held-out threshold), then score both against dev.json.
ensemble predict "${RUN}_predict" --model.null_score_diff_threshold "$THRESHOLD"
HEAD_THRESHOLD=$(heldout_threshold "$(latest_version runs/squad_v2_minilm_head_validate)/results.json")
"$PY" -m lit_lora predict --config "$(latest_version runs/squad_v2_minilm_head)/config.yaml" \
  --model.adapter_path "$(adapter head)" --model.null_score_diff_threshold "$HEAD_THRESHOLD" \
  --trainer.enable_progress_bar false --trainer.default_root_dir runs/squad_v2_minilm_head_predict
for run in "${RUN}_predict" runs/squad_v2_minilm_head_predict; do
  echo "== $run"
  "$PY" results/squad_v2_minilm_cpu/per_article.py "$(latest_version "$run")/predictions.jsonl" "$DATA/dev.json"
done
