#!/usr/bin/env bash
# ../run.sh with an answerability head (--model.answerability_head true): a separate "no answer in this
# window" logit on the last hidden state at CLS, trained with binary cross-entropy, whose log-odds add to
# the CLS span's null score. Same split, adapter, null weight 0.25, schedule and budget (2 epochs).
# The fit was started with an earlier head rule (log-odds replacing the span's null score), which is what
# its own validation rows in fit/metrics.csv used. So the held-out articles are scored again with the
# final checkpoint and the rule as committed, the null threshold is chosen there, and dev is scored once.
# These commands made fit/, validate/ and test/ here; run it from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source results/squad_v2_minilm_cpu/common.sh

RUN=runs/squad_v2_minilm_head
split_articles "$RUN"
fit_minilm "$RUN" "$RUN" --model.null_window_weight 0.25 --model.answerability_head true \
  --trainer.max_epochs 2 --trainer.val_check_interval 281
VERSION=$(latest_version "$RUN")
"$PY" -m lit_lora validate --config "$VERSION/config.yaml" --trainer.enable_progress_bar false \
  --trainer.default_root_dir "${RUN}_validate" --ckpt_path "$(ls "$VERSION"/checkpoints/epoch=1-*.ckpt)"
test_on_dev "$RUN" 1 "$(latest_version "${RUN}_validate")/results.json"
