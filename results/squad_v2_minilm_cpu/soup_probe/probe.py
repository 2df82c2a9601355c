"""Probe: the four ensemble members averaged in weight space (a "soup") instead of in logit space.

Usage (project root, after the four runs exist): python results/squad_v2_minilm_cpu/soup_probe/probe.py
Each member's LoRA update (B @ A * alpha / r) is averaged and added to the base weights, the span heads
are averaged, and the answerability head (only the head run has one) is scaled by 1/4, as the ensemble
weighs it. The held-out articles and dev are then scored at threshold 0 with their oracle thresholds.
`lit_lora merge` refuses these adapters (their heads are trained in full, modules_to_save), hence a probe.
"""

import glob
import sys

import torch
import yaml

from lit_lora.cli import build_cli

RUNS = ["squad_v2_minilm_head", "squad_v2_minilm_nullw", "squad_v2_minilm_nullw_then1", "squad_v2_minilm_ep3"]
SCALE = 32 / 16  # lora_alpha / r of every member


def final_state(run: str) -> dict[str, torch.Tensor]:
    checkpoint = sorted(glob.glob(f"runs/{run}/lightning_logs/version_0/checkpoints/*.ckpt"))[-1]
    return torch.load(checkpoint, weights_only=False, map_location="cpu")["state_dict"]


states = [final_state(run) for run in RUNS]
config = yaml.safe_load(open(f"runs/{RUNS[0]}/lightning_logs/version_0/config.yaml"))
for key in ("ckpt_path", "weights_only"):  # fit-only keys
    config.pop(key, None)
config["trainer"]["default_root_dir"] = "runs/squad_v2_minilm_soup"
with open("runs/squad_v2_minilm_soup.yaml", "w") as handle:
    yaml.safe_dump(config, handle)
sys.argv = sys.argv[:1]
cli = build_cli(["--config", "runs/squad_v2_minilm_soup.yaml"], run=False)
model = cli.model
model._total_training_steps = lambda: 1  # no training: the schedule is never used
model.configure_model()
with torch.no_grad():
    for name, module in model.named_modules():
        if "default" in getattr(module, "lora_A", {}):
            a, b = f"{name}.lora_A.default.weight", f"{name}.lora_B.default.weight"
            module.base_layer.weight += sum(s[b] @ s[a] for s in states) * SCALE / len(states)
            module.lora_B["default"].weight.zero_()
    own = model.state_dict()
    for key in own:
        if "qa_outputs.modules_to_save" in key:
            own[key].copy_(sum(s[key] for s in states) / len(states))
        if "answerability_head.modules_to_save" in key:
            own[key].copy_(states[0][key] / len(states))
for stage in (cli.trainer.validate, cli.trainer.test):
    (metrics,) = stage(model, datamodule=cli.datamodule)
    print("SOUP", {k: round(v, 3) for k, v in metrics.items() if k.endswith(("exact", "f1", "thresh"))})
