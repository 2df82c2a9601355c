"""Peak memory of one QLoRA training step at real model shapes, beside an analytical floor, term by term.

    python benchmarks/memory_scaling.py --json results/benchmarks/memory_scaling_cpu.json \
        --plot results/benchmarks/memory_scaling_cpu.png
    python benchmarks/memory_scaling.py --shapes smollm2-135m --seqs 512          # one point
    python benchmarks/memory_scaling.py --shape my-7b:llama:4096:14336:32:32:8:128256:0 --seqs 2048

Each point is one subprocess (a clean peak): a decoder of the shape's published config with random
weights, its block projections NF4 with double quantisation (bitsandbytes ``Linear4bit``, quantised one
layer at a time), LoRA r 16 on every block projection, gradient checkpointing (non-reentrant), the
loss chunked over the labelled positions (``lit_lora.models.lm.chunked_loss``), and one step: forward,
backward, AdamW. Batch 1, every position labelled. Measured: the step's peak (CPU: peak RSS, its
count reset once the model is built; CUDA: ``torch.cuda.max_memory_allocated``), the baseline after
imports (CPU: RSS; CUDA: 0), the memory once built, and
``peak - baseline`` against the floor of ``floor_terms``. From the points' measured/floor ratios the
script predicts Qwen2.5-7B and Llama-3.1-8B QLoRA at 2,048 tokens (bf16 activations, CUDA) beside
torchtune's 7.4 GiB and LitGPT's 14.14 GB published peaks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LORA_RANK = 16
LOSS_CHUNK = 256
QUANT_BLOCK = 64  # NF4 block size; double quantisation: one uint8 absmax per block, fp32 per 256 blocks


@dataclass(frozen=True)
class Shape:
    """A decoder shape from its published config.json (weights are random)."""

    family: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def projections(self) -> list[tuple[int, int]]:
        """(in, out) of each block projection of one layer: q, k, v, o, gate, up, down."""
        q, kv, h, i = (
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.hidden,
            self.intermediate,
        )
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]


SHAPES = {  # from each model's config.json on the hub
    "smollm2-135m": Shape("llama", 576, 1536, 30, 9, 3, 49152, True),
    "smollm2-360m": Shape("llama", 960, 2560, 32, 15, 5, 49152, True),
    "qwen2.5-0.5b": Shape("qwen2", 896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-1.5b": Shape("qwen2", 1536, 8960, 28, 12, 2, 151936, True),
    "llama-3.2-1b": Shape("llama", 2048, 8192, 16, 32, 8, 128256, True),
}
PREDICTED = {
    "qwen2.5-7b": Shape("qwen2", 3584, 18944, 28, 28, 4, 152064, False),
    "llama-3.1-8b": Shape("llama", 4096, 14336, 32, 32, 8, 128256, False),
}
PUBLISHED = {"torchtune Llama-3.1-8B QLoRA": 7.4 * 2**30, "LitGPT Llama-3.1-8B QLoRA": 14.14e9}


def parse_shape(text: str) -> tuple[str, Shape]:
    """``name:family:hidden:intermediate:layers:heads:kv_heads:vocab:tied`` (tied 0 or 1)."""
    name, family, *numbers = text.split(":")
    h, i, n, a, kv, v, tied = (int(x) for x in numbers)
    return name, Shape(family, h, i, n, a, kv, v, bool(tied))


# ---- the analytical floor -------------------------------------------------------------------------


def floor_terms(shape: Shape, seq: int, activation_bytes: int, weight_bytes: int) -> dict[str, float]:
    """Bytes that one step must hold at its peak, term by term (batch 1, every position labelled).

    ``activation_bytes``: 4 for float32 compute (CPU), 2 for bf16 (CUDA); ``weight_bytes`` the same for
    the unquantised embeddings, norms and (untied) output layer. Adapters, their gradients and AdamW
    states are float32.
    """
    quantised = shape.layers * sum(i * o for i, o in shape.projections())
    adapter = shape.layers * sum(LORA_RANK * (i + o) for i, o in shape.projections())
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    # One layer's tensors saved for backward, per token, while it is recomputed: two norms (in, out),
    # q/k/v before and after rotary, attention output, o_proj output, gate, up, act(gate), act*up,
    # down output; LoRA's r-wide intermediates; and as many again for their gradients in flight.
    per_token = 4 * shape.hidden + 2 * (q + 2 * kv) + q + shape.hidden + 4 * shape.intermediate
    per_token += 2 * LORA_RANK * len(shape.projections())
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    return {
        "packed_weights": quantised / 2,
        "quant_constants": quantised / QUANT_BLOCK + quantised / (QUANT_BLOCK * 256) * 4,
        "unquantised_weights": (embeddings + (2 * shape.layers + 1) * shape.hidden) * weight_bytes,
        "adapter_weights": adapter * 4,
        "adapter_gradients": adapter * 4,
        "adamw_states": adapter * 8,
        "checkpointed_layer_inputs": (shape.layers + 1) * seq * shape.hidden * activation_bytes,
        "one_layer_live_activations": 2 * per_token * seq * activation_bytes,
        # logits, log-softmax and their gradient, float32, plus the labelled hidden states and their grad
        "one_loss_chunk": 3 * min(seq, LOSS_CHUNK) * shape.vocab * 4 + 2 * seq * shape.hidden * 4,
    }


# ---- one point, in its own process ----------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Start the kernel's peak-RSS count (VmHWM) afresh, so that building the model is not the peak."""
    with contextlib.suppress(OSError):  # not Linux: the lifetime peak (ru_maxrss) is what peak_rss gives
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def quantised_decoder(shape: Shape, device: Any, dtype: Any) -> Any:
    """A random-weight decoder of ``shape``, block projections NF4 (double quant), built layer by layer."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        shape.family, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab, tie_word_embeddings=shape.tied, head_dim=shape.head_dim, use_cache=False,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in list(parent.named_children()):
                if not isinstance(linear, torch.nn.Linear):
                    continue
                weight = torch.randn(linear.out_features, linear.in_features, dtype=dtype) * 0.02
                quantised = bnb.nn.Linear4bit(
                    linear.in_features, linear.out_features, bias=linear.bias is not None,
                    compute_dtype=dtype, quant_type="nf4", compress_statistics=True, device="meta",
                )  # fmt: skip
                quantised.weight = bnb.nn.Params4bit(
                    weight, requires_grad=False, quant_type="nf4", compress_statistics=True
                )
                if linear.bias is not None:
                    quantised.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=dtype))
                setattr(parent, name, quantised.to(device))
    for module in model.modules():  # what is still on meta: embeddings, norms, output layer, rotary
        for pname, param in list(module.named_parameters(recurse=False)):
            if param.device.type == "meta":
                data = torch.empty(param.shape, dtype=param.dtype, device=device)
                torch.nn.init.normal_(data, std=0.02) if data.dim() > 1 else data.fill_(1.0)
                setattr(module, pname, torch.nn.Parameter(data, requires_grad=False))
        for bname, buffer in list(module.named_buffers(recurse=False)):
            if buffer.device.type == "meta":
                module.register_buffer(bname, torch.empty(buffer.shape, dtype=buffer.dtype, device=device))
    if shape.tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)  # real frequencies
    return model


def measure_point(shape: Shape, seq: int, device_name: str) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from lit_lora.models.lm.chunked_loss import chunked_labelled_nll

    device = torch.device(device_name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    baseline = current_rss() if device.type == "cpu" else 0
    model = quantised_decoder(shape, device, dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab, (1, seq), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    built = current_rss() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    start = time.perf_counter()
    nll, tokens = chunked_labelled_nll(model.get_base_model(), inputs, ids, LOSS_CHUNK)
    (nll / tokens).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    else:
        peak, kind = peak_rss(), "cpu_peak_rss"
    floor = floor_terms(shape, seq, activation_bytes=dtype.itemsize, weight_bytes=dtype.itemsize)
    return {
        "peak_bytes": peak, "baseline_bytes": baseline, "built_bytes": built, "memory_kind": kind,
        "step_s": round(seconds, 2),
        "loss": round(float(nll / tokens), 4), "attention": model.config._attn_implementation,
        "floor_terms": floor, "floor_bytes": sum(floor.values()),
    }  # fmt: skip


# ---- the driver ------------------------------------------------------------------------------------


def run_point(name: str, shape: Shape, seq: int, device: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps(asdict(shape)), str(seq), device]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return {"name": name, "seq": seq, "error": f"exit {done.returncode}: {tail}"}
    point = json.loads(done.stdout.strip().splitlines()[-1])
    point.update(name=name, seq=seq, shape=asdict(shape))
    point["over_floor"] = round((point["peak_bytes"] - point["baseline_bytes"]) / point["floor_bytes"], 3)
    return point


def predictions(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """7B/8B at 2,048 tokens on CUDA (bf16): the floor times the median measured/floor ratio."""
    ratios = [p["over_floor"] for p in points if "over_floor" in p]
    factor = statistics.median(ratios) if ratios else 1.0
    rows = {}
    for name, shape in PREDICTED.items():
        floor = sum(floor_terms(shape, 2048, activation_bytes=2, weight_bytes=2).values())
        rows[name] = {"floor_gib": floor / 2**30, "predicted_gib": factor * floor / 2**30, "factor": factor}
    return rows


def print_table(points: list[dict[str, Any]], predicted: dict[str, dict[str, float]]) -> None:
    gib = 2**30
    print(
        f"\n{'shape':14}{'seq':>6}{'peak GiB':>10}{'base GiB':>10}{'built GiB':>10}"
        f"{'peak-base':>11}{'floor':>8}{'x floor':>9}{'step s':>8}"
    )
    for p in points:
        if "error" in p:
            print(f"{p['name']:14}{p['seq']:>6}  {p['error']}")
            continue
        used = (p["peak_bytes"] - p["baseline_bytes"]) / gib
        print(
            f"{p['name']:14}{p['seq']:>6}{p['peak_bytes'] / gib:>10.2f}{p['baseline_bytes'] / gib:>10.2f}"
            f"{p['built_bytes'] / gib:>10.2f}{used:>11.2f}{p['floor_bytes'] / gib:>8.2f}"
            f"{p['over_floor']:>9.2f}{p['step_s']:>8.1f}"
        )
    for p in points[:1]:
        if "floor_terms" in p:
            terms = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in p["floor_terms"].items())
            print(f"floor terms of {p['name']} at {p['seq']} (MiB): {terms}")
    kinds = {(p.get("memory_kind"), p.get("attention")) for p in points if "error" not in p}
    print(f"measured: {', '.join(f'{k} (attention {a})' for k, a in sorted(kinds))}")
    for name, row in predicted.items():
        print(
            f"predicted {name} QLoRA at 2,048 tokens (bf16, CUDA): floor {row['floor_gib']:.2f} GiB x "
            f"{row['factor']:.2f} = {row['predicted_gib']:.2f} GiB"
        )
    print(
        "published: torchtune Llama-3.1-8B QLoRA 7.4 GiB, LitGPT Llama-3.1-8B QLoRA 14.14 GB (13.17 GiB); "
        "the prediction scales each floor by the median measured/floor ratio of the points above"
    )


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(p["name"] for p in points if "error" not in p):
        rows = sorted((p for p in points if p["name"] == name and "error" not in p), key=lambda p: p["seq"])
        seqs = [p["seq"] for p in rows]
        (line,) = axes.plot(
            seqs, [(p["peak_bytes"] - p["baseline_bytes"]) / 2**30 for p in rows], "o-", label=name
        )
        axes.plot(seqs, [p["floor_bytes"] / 2**30 for p in rows], "--", color=line.get_color())
    axes.set(xlabel="sequence length (tokens)", ylabel="peak - baseline (GiB); dashed: floor")
    axes.set_title("One QLoRA step (NF4 + double quant, LoRA r 16, checkpointing)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        point = measure_point(Shape(**json.loads(sys.argv[2])), int(sys.argv[3]), sys.argv[4])
        print(json.dumps(point))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), help=f"among {', '.join(SHAPES)}")
    parser.add_argument("--shape", action="append", default=[], help="another shape: " + parse_shape.__doc__)
    parser.add_argument("--seqs", nargs="*", type=int, default=[512, 1024, 2048])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    shapes = {name: SHAPES[name] for name in args.shapes} | dict(parse_shape(s) for s in args.shape)
    points = []
    for name, shape in shapes.items():
        for seq in args.seqs:
            points.append(run_point(name, shape, seq, args.device))
            print(json.dumps({k: v for k, v in points[-1].items() if k not in ("floor_terms", "shape")}))
            if "error" in points[-1] and seq != args.seqs[0]:
                break  # longer sequences of this shape will not fit either
    predicted = predictions(points)
    print_table(points, predicted)
    if args.json is not None:
        from lit_lora.core.io import atomic_write_json

        atomic_write_json(args.json, {"points": points, "predicted": predicted, "published_bytes": PUBLISHED})
    if args.plot is not None:
        plot(points, args.plot)


if __name__ == "__main__":
    main()
