#!/usr/bin/env bash
# SST-2 LoRA on the packaged MiniLM: one process against two (DDP, DeepSpeed ZeRO-2, ZeRO-3) on a
# 2-core CPU machine. Writes runs/scaling_cpu/<name>/ and prints each results.json summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
COMMON=(--config configs/sst2_lora.yaml --model.model_name_or_path sentence-transformers/all-MiniLM-L6-v2
  --data.data_dir ../shared/data/sst2 --data.max_train_samples 2000 --data.max_length 64
  --trainer.max_epochs 1 --trainer.accelerator cpu --trainer.enable_progress_bar false)
run() {
  local name=$1; shift
  rm -rf "runs/scaling_cpu/$name"
  /usr/bin/time -f "$name wall %e s" "$PY" -m lit_lora fit "${COMMON[@]}" "$@" \
    --trainer.default_root_dir "runs/scaling_cpu/$name" > "runs/scaling_cpu/$name.log" 2>&1 || { tail -5 "runs/scaling_cpu/$name.log"; exit 1; }
  tail -1 "runs/scaling_cpu/$name.log"
}
mkdir -p runs/scaling_cpu
# One process uses both cores; each of two processes gets one.
OMP_NUM_THREADS=2 run one_process
OMP_NUM_THREADS=1 run ddp_2 --config configs/extras/ddp.yaml --trainer.devices 2
OMP_NUM_THREADS=1 run zero2_2 --config configs/extras/deepspeed_zero2.yaml --trainer.devices 2
OMP_NUM_THREADS=1 run zero3_2 --config configs/extras/deepspeed_zero3.yaml --trainer.devices 2
# The DDP run's adapter scored by one process: validation accuracy must be the same.
rm -rf runs/scaling_cpu/ddp_2_validate_1
OMP_NUM_THREADS=2 "$PY" -m lit_lora validate "${COMMON[@]}" \
  --model.adapter_path runs/scaling_cpu/ddp_2/lightning_logs/version_0/adapter \
  --trainer.default_root_dir runs/scaling_cpu/ddp_2_validate_1 > runs/scaling_cpu/ddp_2_validate_1.log 2>&1
"$PY" - <<'PY'
import json, pathlib
for run in ("one_process", "ddp_2", "zero2_2", "zero3_2", "ddp_2_validate_1"):
    r = json.loads(next(pathlib.Path(f"runs/scaling_cpu/{run}").rglob("results.json")).read_text())
    m = r["metrics"]
    print(f"{run:18s} devices={r['num_devices']} samples/s={r.get('samples_per_s')} train_s={r.get('train_time_s')} "
          f"wall_s={r['wall_time_s']} val/acc={m.get('val/acc'):.4f} val/loss={m.get('val/loss'):.4f} "
          f"peak_rss_mb={r['peak_memory_mb']}")
PY
