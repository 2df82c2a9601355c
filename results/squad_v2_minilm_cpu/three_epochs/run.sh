#!/usr/bin/env bash
# SQuAD v2 on MiniLM (all-MiniLM-L6-v2, packaged offline), LoRA r 16 on every linear layer, on CPU:
# 3 epochs on train.json's first 24 articles, the null threshold chosen on its last 2 articles (held out
# whole, so the threshold is chosen on unseen articles as dev's are), then dev scored once.
# These commands made the records in this folder (fit/, test/); run it from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../../.."
source results/squad_v2_minilm_cpu/common.sh

RUN=runs/squad_v2_minilm_ep3
split_articles "$RUN"
fit_minilm "$RUN" "$RUN" --trainer.max_epochs 3
test_on_dev "$RUN" 2
