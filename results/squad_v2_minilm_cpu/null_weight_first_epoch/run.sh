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
source results/squad_v2_minilm_cpu/common.sh

FROM=runs/squad_v2_minilm_nullw RUN=runs/squad_v2_minilm_nullw_then1
fit_minilm "$FROM" "$RUN" --model.null_window_weight 1.0 --trainer.max_epochs 2 --trainer.val_check_interval 281 \
  --ckpt_path "$FROM/after_epoch1.ckpt"
test_on_dev "$RUN" 1  # the threshold from the held-out articles after epoch 2
