#!/usr/bin/env bash
# SQuAD v2 on MiniLM (all-MiniLM-L6-v2, packaged offline), LoRA r 16 on every linear layer, on CPU, with
# null windows (target CLS) weighted 0.25 in the training loss: 2 epochs on train.json's first 24
# articles, validation on its last 2 (held out whole) every half epoch, the null threshold chosen there
# after the last epoch, then dev scored once. These commands made fit/ and test/; run it from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data/squad_v2 RUN=runs/squad_v2_minilm_nullw
mkdir -p "$RUN"

# The article split (the last two articles held out whole), written into the ignored run folder.
"$PY" results/squad_v2_minilm_cpu/article_split.py "$DATA/train.json" "$RUN"

"$PY" -m lit_lora fit --config configs/squad_v2_lora.yaml \
  --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2 --model.adapter.target_modules '[query, key, value, dense]' \
  --model.learning_rate 1.0e-3 --model.warmup_ratio 0.1 --trainer.gradient_clip_val 1.0 --model.null_window_weight 0.25 \
  --data.train_file "$RUN/train_articles.json" --data.validation_file "$RUN/heldout_articles.json" \
  --data.test_file "$DATA/dev.json" --data.test_split test \
  --data.max_length 256 --trainer.max_epochs 2 --trainer.log_every_n_steps 25 --trainer.val_check_interval 281 \
  --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false --trainer.default_root_dir "$RUN"

# The threshold: val/best_f1_thresh of the held-out articles after the last epoch, never dev's own.
VERSION=$(ls -d "$RUN"/lightning_logs/version_* | sort -V | tail -1)
THRESHOLD=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['val/best_f1_thresh'])" \
  "$VERSION/results.json")
"$PY" -m lit_lora test --config "$VERSION/config.yaml" --model.null_score_diff_threshold "$THRESHOLD" \
  --trainer.enable_progress_bar false --trainer.default_root_dir "${RUN}_test" \
  --ckpt_path "$(ls "$VERSION"/checkpoints/epoch=1-*.ckpt)"
