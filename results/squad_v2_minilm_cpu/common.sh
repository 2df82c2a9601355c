# Sourced by the run.sh files in this folder, after they cd to the project root: what their runs share.
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
DATA=../shared/data/squad_v2

# split_articles RUN: train.json with its last two articles held out whole, written into the ignored RUN.
split_articles() {
  mkdir -p "$1"
  "$PY" results/squad_v2_minilm_cpu/article_split.py "$DATA/train.json" "$1"
}

# fit_minilm SPLIT RUN [ARG...]: MiniLM with LoRA r 16 on every linear layer, lr 1e-3, 256-token windows,
# trained on SPLIT's articles into RUN; the ARGs (epochs, validation interval, null weight ...) follow.
fit_minilm() {
  local split=$1 run=$2
  shift 2
  "$PY" -m lit_lora fit --config configs/squad_v2_lora.yaml \
    --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2 \
    --model.adapter.target_modules '[query, key, value, dense]' \
    --model.learning_rate 1.0e-3 --model.warmup_ratio 0.1 --trainer.gradient_clip_val 1.0 \
    --data.train_file "$split/train_articles.json" --data.validation_file "$split/heldout_articles.json" \
    --data.test_file "$DATA/dev.json" --data.test_split test --data.max_length 256 \
    --trainer.log_every_n_steps 25 --trainer.num_sanity_val_steps 0 --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$run" "$@"
}

# latest_version RUN: RUN's newest lightning_logs/version_* folder.
latest_version() {
  ls -d "$1"/lightning_logs/version_* | sort -V | tail -1
}

# heldout_threshold RECORD: the null threshold best for F1 on the held-out articles, from a validate or fit
# results.json.
heldout_threshold() {
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['val/best_f1_thresh'])" "$1"
}

# test_on_dev RUN EPOCH [RECORD]: dev scored once, with RUN's newest fit config and its checkpoint of EPOCH
# (counted from 0), at the null threshold val/best_f1_thresh of RECORD: by default that fit's own
# results.json, i.e. the held-out articles after the last epoch. Never dev's own threshold.
test_on_dev() {
  local version threshold
  version=$(latest_version "$1")
  threshold=$(heldout_threshold "${3:-$version/results.json}")
  "$PY" -m lit_lora test --config "$version/config.yaml" --model.null_score_diff_threshold "$threshold" \
    --trainer.enable_progress_bar false --trainer.default_root_dir "$1_test" \
    --ckpt_path "$(ls "$version"/checkpoints/epoch="$2"-*.ckpt)"
}
