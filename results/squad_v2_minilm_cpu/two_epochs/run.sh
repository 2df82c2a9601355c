#!/usr/bin/env bash
# SQuAD v2 on MiniLM (all-MiniLM-L6-v2, packaged offline), LoRA r 16 on every linear layer, on CPU:
# epoch 1, epoch 2 resumed from epoch 1's checkpoint, then the dev split scored once with the null
# threshold chosen on the held-out training questions (validation's best_f1_thresh after epoch 2).
# The three commands below are the ones that made the records in this folder (fit_epoch1/, fit/, test/).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data/squad_v2 RUN=runs/squad_v2_minilm3
LOGS=$RUN/lightning_logs

# Epoch 1: train.json's 8,475 questions minus 5 % held out (424, seed 0) for validation; dev.json is the test split.
"$PY" -m lit_lora fit --config configs/squad_v2_lora.yaml \
  --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --model.adapter.target_modules '[query, key, value, dense]' \
  --model.learning_rate 1.0e-3 --model.warmup_ratio 0.1 --trainer.gradient_clip_val 1.0 \
  --data.train_file "$DATA/train.json" --data.test_file "$DATA/dev.json" --data.test_split test \
  --data.max_length 256 --trainer.max_epochs 1 --trainer.log_every_n_steps 25 \
  --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false --trainer.default_root_dir "$RUN"

# Epoch 2: the same run resumed with max_epochs 2. The schedule is rebuilt for 1,196 steps, so epoch 2
# continues from step 598 at ~0.56x the peak learning rate and decays to 0.
"$PY" -m lit_lora fit --config "$LOGS/version_0/config.yaml" --trainer.max_epochs 2 \
  --ckpt_path "$LOGS/version_0/checkpoints/epoch=0-step=598.ckpt"

# The threshold: val/best_f1_thresh of epoch 2's validation (held-out training questions), never dev's own.
THRESHOLD=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['val/best_f1_thresh'])" \
  "$LOGS/version_1/results.json")
"$PY" -m lit_lora test --config "$LOGS/version_1/config.yaml" --model.null_score_diff_threshold "$THRESHOLD" \
  --trainer.enable_progress_bar false --trainer.default_root_dir "${RUN}_test" \
  --ckpt_path "$LOGS/version_1/checkpoints/epoch=1-step=1196.ckpt"
