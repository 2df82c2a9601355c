#!/usr/bin/env bash
# Every SST-2 method config on the full train split (67,349 rows), 1 epoch, seed 1, the same command for
# all, then the report. Extra arguments go to every run (the committed records: see README.md).
#   bash results/sst2_minilm_full/run.sh                               # CPU, ~10 min a run here
#   MODEL=/path/to/minilm bash results/sst2_minilm_full/run.sh --trainer.accelerator cuda
#   METHODS="lora vera" OUT=runs/sst2_full_cpu REPORT=results/sst2_minilm_full/cpu bash results/sst2_minilm_full/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-sentence-transformers/all-MiniLM-L6-v2}
OUT=${OUT:-runs/sst2_full}
REPORT=${REPORT:-results/sst2_minilm_full}
METHODS=${METHODS:-lora qlora adalora qlora_adalora adalora_bf16 manual_ranks dora loraplus pissa olora vera}
export HF_HUB_OFFLINE=1
for method in $METHODS; do
  [ -f "$OUT/sst2_$method/lightning_logs/version_0/results.json" ] && continue  # done: keep it
  "$PY" -m lit_lora fit --config "configs/sst2_$method.yaml" --seed_everything 1 \
    --model.model_name_or_path "$MODEL" --data.data_dir ../shared/data/sst2 --data.max_length 64 \
    --trainer.max_epochs 1 --trainer.enable_progress_bar false --trainer.default_root_dir "$OUT/sst2_$method" "$@"
done
"$PY" -m lit_lora report "$OUT" --out "$REPORT"
