#!/usr/bin/env bash
# Null windows weighted 0.25 for epoch 1 only, then 1 (the plain loss) for epoch 2: ../run.sh's run resumed
# from its end-of-epoch-1 checkpoint with --model.null_window_weight 1.0 (same schedule, optimizer state and
# order). ../run.sh's checkpoint callback keeps only the newest checkpoint, so epoch 1's was copied by hand
# while that run was in epoch 2:
#   cp runs/squad_v2_minilm_nullw/lightning_logs/version_0/checkpoints/epoch=0-step=562.ckpt \
#      runs/squad_v2_minilm_nullw/after_epoch1.ckpt
# These commands made fit/ and test/ here; run it from anywhere, after ../run.sh (and that copy).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data/squad_v2 FROM=runs/squad_v2_minilm_nullw RUN=runs/squad_v2_minilm_nullw_then1

"$PY" -m lit_lora fit --config configs/squad_v2_lora.yaml \
  --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --model.adapter.target_modules '[query, key, value, dense]' \
  --model.learning_rate 1.0e-3 --model.warmup_ratio 0.1 --trainer.gradient_clip_val 1.0 --model.null_window_weight 1.0 \
  --data.train_file "$FROM/train_articles.json" --data.validation_file "$FROM/heldout_articles.json" \
  --data.test_file "$DATA/dev.json" --data.test_split test \
  --data.max_length 256 --trainer.max_epochs 2 --trainer.log_every_n_steps 25 --trainer.val_check_interval 281 \
  --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false --trainer.default_root_dir "$RUN" \
  --ckpt_path "$FROM/after_epoch1.ckpt"

# The threshold: val/best_f1_thresh of the held-out articles after epoch 2, never dev's own.
VERSION=$(ls -d "$RUN"/lightning_logs/version_* | sort -V | tail -1)
THRESHOLD=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['val/best_f1_thresh'])" \
  "$VERSION/results.json")
"$PY" -m lit_lora test --config "$VERSION/config.yaml" --model.null_score_diff_threshold "$THRESHOLD" \
  --trainer.enable_progress_bar false --trainer.default_root_dir "${RUN}_test" \
  --ckpt_path "$(ls "$VERSION"/checkpoints/epoch=1-*.ckpt)"
