#!/usr/bin/env bash
# SQuAD v2 on MiniLM (all-MiniLM-L6-v2, packaged offline), LoRA r 16 on every linear layer, on CPU, with
# null windows (target CLS) weighted 0.25 in the training loss: 2 epochs on train.json's first 24
# articles, validation on its last 2 (held out whole) every half epoch, the null threshold chosen there
# after the last epoch, then dev scored once. These commands made fit/ and test/; run it from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
source results/squad_v2_minilm_cpu/common.sh

RUN=runs/squad_v2_minilm_nullw
split_articles "$RUN"
fit_minilm "$RUN" "$RUN" --model.null_window_weight 0.25 --trainer.max_epochs 2 --trainer.val_check_interval 281
test_on_dev "$RUN" 1
