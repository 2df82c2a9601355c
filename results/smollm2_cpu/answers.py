"""Writes the chat SFT prompts' answers before and after LoRA as Markdown (run by run.sh)."""

import json
from pathlib import Path

HERE = Path(__file__).parent
PROMPTS = Path("configs/data/chat/validation_prompts.jsonl")


def generations(run: str) -> list[str]:
    rows = [json.loads(line) for line in (HERE / run / "predictions.jsonl").read_text().splitlines()]
    return [row["generation"].strip() for row in rows]


prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines()]
before, after = generations("chat_base_predict"), generations("chat_lora_predict")
print("# Chat SFT: the validation prompts answered by SmolLM2-135M-Instruct before and after LoRA\n")
print(f"Prompts: `{PROMPTS}` (none is a training row). Greedy, up to 48 new tokens; made by `run.sh`.\n")
for domain in dict.fromkeys(p["domain"] for p in prompts):
    print(f"## {domain}\n")
    for prompt, old, new in zip(prompts, before, after, strict=True):
        if prompt["domain"] == domain:
            print(f"**Prompt:** {prompt['prompt']!r}\n\n- before: {old!r}\n- after: {new!r}\n")
