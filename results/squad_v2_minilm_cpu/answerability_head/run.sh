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
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data/squad_v2 RUN=runs/squad_v2_minilm_head
mkdir -p "$RUN"

# The article split (the last two articles held out whole), written into the ignored run folder.
"$PY" results/squad_v2_minilm_cpu/article_split.py "$DATA/train.json" "$RUN"

"$PY" -m lit_lora fit --config configs/squad_v2_lora.yaml \
  --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --model.adapter.target_modules '[query, key, value, dense]' \
  --model.learning_rate 1.0e-3 --model.warmup_ratio 0.1 --trainer.gradient_clip_val 1.0 --model.null_window_weight 0.25 --model.answerability_head true \
  --data.train_file "$RUN/train_articles.json" --data.validation_file "$RUN/heldout_articles.json" \
  --data.test_file "$DATA/dev.json" --data.test_split test \
  --data.max_length 256 --trainer.max_epochs 2 --trainer.log_every_n_steps 25 --trainer.val_check_interval 281 \
  --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false --trainer.default_root_dir "$RUN"

VERSION=$(ls -d "$RUN"/lightning_logs/version_* | sort -V | tail -1)
CKPT=$(ls "$VERSION"/checkpoints/epoch=1-*.ckpt)
"$PY" -m lit_lora validate --config "$VERSION/config.yaml" --trainer.enable_progress_bar false \
  --trainer.default_root_dir "${RUN}_validate" --ckpt_path "$CKPT"

# The threshold: val/best_f1_thresh of the held-out articles, never dev's own.
CHECKED=$(ls -d "${RUN}_validate"/lightning_logs/version_* | sort -V | tail -1)
THRESHOLD=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['val/best_f1_thresh'])" \
  "$CHECKED/results.json")
"$PY" -m lit_lora test --config "$VERSION/config.yaml" --model.null_score_diff_threshold "$THRESHOLD" \
  --trainer.enable_progress_bar false --trainer.default_root_dir "${RUN}_test" --ckpt_path "$CKPT"
