"""Peak memory of one QLoRA training step at real model shapes, beside an analytical floor, term by term.

    python benchmarks/memory_scaling.py --json results/benchmarks/memory_scaling_cpu.json \
        --plot results/benchmarks/memory_scaling_cpu.png
    python benchmarks/memory_scaling.py --shapes smollm2-135m --seqs 512          # one point
    python benchmarks/memory_scaling.py --shape my-7b:llama:4096:14336:32:32:8:128256:0 --seqs 2048

Each point is one subprocess (a clean peak): a decoder of the shape's published config with random
weights, its block projections NF4 with double quantisation (bitsandbytes ``Linear4bit``, quantised one
layer at a time), LoRA r 16 on every block projection, gradient checkpointing (non-reentrant), the
loss chunked over the labelled positions (``lit_lora.models.lm.chunked_loss``), and one step: forward,
backward, AdamW. Batch 1, every position labelled. AdamW's states are made first (a step on zero
gradients), so the measured step is any later step's. Measured: the step's peak (CPU: peak RSS, its
count reset once the model is built; CUDA: ``torch.cuda.max_memory_allocated``), the baseline after
imports (CPU: RSS; CUDA: 0), the memory once built, and ``peak - baseline`` against ``floor_bytes``
of the terms of ``floor_terms``. On the CPU, ``--allocator live`` (the default) makes glibc hand every
freed tensor back at once, so that peak RSS counts live tensors as CUDA's peak allocation does;
``--allocator default`` measures with glibc's own thresholds, its kept free blocks included, and
``--allocator trim`` with those thresholds and ``model.trim_host_memory`` (what
``configs/extras/low_memory.yaml`` trains with: ``malloc_trim`` after each layer's forward and
backward). From the points' measured/floor ratios the script predicts Qwen2.5-7B and Llama-3.1-8B
QLoRA at 2,048 tokens (bf16 activations, CUDA) beside torchtune's 7.4 GiB and LitGPT's 14.14 GB
published peaks. A point that fails is listed with its error and makes the exit status 1.
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
    "llama-2-7b": Shape("llama", 4096, 11008, 32, 32, 32, 32000, False),
}
PREDICTED_TOKENS = (2048, 4096)  # 4,096: torchtune's batch of 2 rows packed to 2,048 tokens each
PUBLISHED = {  # peak GPU memory as each project publishes it (setups: docs/performance.md)
    "torchtune Llama-3.1-8B QLoRA, batch 2 x 2,048 packed, RTX 4090": 7.4 * 2**30,
    "LitGPT Llama-2-7B QLoRA (NF4), micro-batch 1, A100": 14.14e9,
}


def parse_shape(text: str) -> tuple[str, Shape]:
    """``name:family:hidden:intermediate:layers:heads:kv_heads:vocab:tied`` (tied 0 or 1)."""
    name, family, *numbers = text.split(":")
    h, i, n, a, kv, v, tied = (int(x) for x in numbers)
    return name, Shape(family, h, i, n, a, kv, v, bool(tied))


# ---- the analytical floor -------------------------------------------------------------------------


def floor_terms(shape: Shape, seq: int, activation_bytes: int, weight_bytes: int) -> dict[str, float]:
    """Bytes of each thing one step holds (batch 1, every position labelled); ``floor_bytes`` adds them up.

    ``activation_bytes``: 4 for float32 compute (CPU), 2 for bf16 (CUDA); ``weight_bytes`` the same for
    the unquantised embeddings, norms and (untied) output layer. Adapters, their gradients and AdamW
    states are float32.
    """
    quantised = shape.layers * sum(i * o for i, o in shape.projections())
    adapter = shape.layers * sum(LORA_RANK * (i + o) for i, o in shape.projections())
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    h, i = shape.hidden, shape.intermediate
    # What one decoder layer saves for backward, per token, when it is recomputed: the two norms' outputs,
    # q, k, v after rotary (attention's inputs) and its output, the residual sum, gate, up, act(gate) and
    # act(gate) * up, and each adapter's r-wide A output. Its backward adds gradients in flight: one of
    # each width (hidden, intermediate) at a time, and the attention's q, k, v gradients.
    saved = 2 * h + (q + 2 * kv) + q + h + 4 * i + LORA_RANK * len(shape.projections())
    in_flight = 2 * h + 2 * i + (q + 2 * kv)
    embeddings = shape.vocab * h * (1 if shape.tied else 2)
    return {
        "packed_weights": quantised / 2,
        "quant_constants": quantised / QUANT_BLOCK + quantised / (QUANT_BLOCK * 256) * 4,
        "unquantised_weights": (embeddings + (2 * shape.layers + 1) * h) * weight_bytes,
        "adapter_weights": adapter * 4,
        "adamw_states": adapter * 8,
        "adapter_gradients": adapter * 4,
        "checkpointed_layer_inputs": (shape.layers + 1) * seq * h * activation_bytes,
        "one_layer_live_activations": (saved + in_flight) * seq * activation_bytes,
        # bitsandbytes dequantises a projection's weight for its matmul (forward and backward)
        "one_dequantised_weight": max(i * o for i, o in shape.projections()) * activation_bytes,
        # a chunk's backward (float32): log-softmax's saved output, the gradient coming into it and the
        # one it gives the logits; with the labelled hidden states and their gradient (compute dtype)
        "one_loss_chunk": 3 * min(seq, LOSS_CHUNK) * shape.vocab * 4 + 2 * seq * h * activation_bytes,
    }


HELD = ("packed_weights", "quant_constants", "unquantised_weights", "adapter_weights", "adamw_states")


def floor_bytes(terms: dict[str, float]) -> float:
    """The step's peak lies in backward, in one of two phases, on top of what every phase holds (``HELD``).

    Loss phase: every checkpointed layer input and one loss chunk's backward, before any adapter gradient
    exists. Layer phase: one layer recomputed and back-propagated, with the checkpointed inputs of the
    layers still to go and the adapter gradients of those done; those two trade places along the way, so
    at least the larger of them is held.
    """
    held = sum(terms[name] for name in HELD)
    loss = terms["checkpointed_layer_inputs"] + terms["one_loss_chunk"]
    layer = max(terms["checkpointed_layer_inputs"], terms["adapter_gradients"])
    layer += terms["one_layer_live_activations"] + terms["one_dequantised_weight"]
    return held + max(loss, layer)


# ---- one point, in its own process ----------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the OS (glibc), so that RSS counts what is live."""
    import gc

    from lit_lora.models.engine.host_memory import malloc_trim

    gc.collect()
    trim = malloc_trim()
    if trim is not None:
        trim(0)


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
                size = (linear.out_features, linear.in_features)
                weight = torch.randn(size, dtype=dtype, device=device) * 0.02
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


def measure_point(shape: Shape, seq: int, device_name: str, trim: bool) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from lit_lora.models.engine.host_memory import trim_after_each_layer
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
    if trim:
        trim_after_each_layer(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab, (1, seq), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    for param in optimizer.param_groups[0]["params"]:  # AdamW makes its states on its first step:
        param.grad = torch.zeros_like(param)  # so that the measured step runs as every later one
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    release_free_memory()
    built = current_rss() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    start = time.perf_counter()
    nll, tokens = chunked_labelled_nll(model.get_base_model(), inputs, ids, LOSS_CHUNK)
    loss = nll / tokens
    loss.backward()
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
        "loss": round(float(loss), 4), "attention": model.config._attn_implementation,
        "floor_terms": floor, "floor_bytes": floor_bytes(floor),
    }  # fmt: skip


# ---- the driver ------------------------------------------------------------------------------------


# glibc keeps freed blocks under its (growing) mmap threshold for reuse, so RSS keeps the step's
# garbage: with a fixed 64 KiB threshold every tensor is its own mapping, returned when freed, and peak
# RSS counts live tensors, as CUDA's max_memory_allocated does (it leaves the caching allocator out).
# "trim" keeps glibc's thresholds and returns what each layer frees, as model.trim_host_memory does.
ALLOCATORS = {"live": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "default": {}, "trim": {}}


def run_point(name: str, shape: Shape, seq: int, device: str, allocator: str) -> dict[str, Any]:
    child = [json.dumps(asdict(shape)), str(seq), device, str(allocator == "trim")]
    command = [sys.executable, __file__, "--child", *child]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", **ALLOCATORS[allocator]}
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return {"name": name, "seq": seq, "error": f"exit {done.returncode}: {tail}"}
    point = json.loads(done.stdout.strip().splitlines()[-1])
    point.update(name=name, seq=seq, shape=asdict(shape), allocator=allocator if device == "cpu" else "cuda")
    # above the core count, step_s is contended
    point["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    point["over_floor"] = round((point["peak_bytes"] - point["baseline_bytes"]) / point["floor_bytes"], 3)
    return point


def predictions(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """7B/8B shapes on CUDA (bf16), batch 1: each floor times the median and largest measured/floor ratio."""
    ratios = [p["over_floor"] for p in points if "over_floor" in p]
    median, largest = (statistics.median(ratios), max(ratios)) if ratios else (1.0, 1.0)
    rows = {}
    for name, shape in PREDICTED.items():
        for tokens in PREDICTED_TOKENS:
            floor = floor_bytes(floor_terms(shape, tokens, activation_bytes=2, weight_bytes=2)) / 2**30
            rows[f"{name} @ {tokens}"] = {
                "floor_gib": round(floor, 3), "median_ratio": median, "largest_ratio": largest,
                "predicted_gib": round(median * floor, 3), "predicted_upper_gib": round(largest * floor, 3),
            }  # fmt: skip
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
    for name, steps in growth_per_token(points).items():
        if steps:
            kib = ", ".join(f"{b / 2**10:.1f}" for b in steps)
            print(f"{name}: growth per token from one sequence length to the next: {kib} KiB")
    kinds = {(p.get("memory_kind"), p.get("attention")) for p in points if "error" not in p}
    print(f"measured: {', '.join(f'{k} (attention {a})' for k, a in sorted(kinds))}")
    for name, row in predicted.items():
        print(
            f"predicted {name} tokens, QLoRA (bf16, CUDA, batch 1): floor {row['floor_gib']:.2f} GiB x "
            f"{row['median_ratio']:.2f} (median) .. {row['largest_ratio']:.2f} (largest measured ratio) = "
            f"{row['predicted_gib']:.2f} .. {row['predicted_upper_gib']:.2f} GiB"
        )
    for anchor, peak in PUBLISHED.items():
        print(f"published: {anchor}: {peak / 2**30:.2f} GiB")


def parameters(shape: Shape) -> int:
    """The decoder's parameter count (embeddings counted once when tied), for the size axis."""
    per_layer = sum(i * o for i, o in shape.projections()) + 2 * shape.hidden
    return shape.layers * per_layer + shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.hidden


def growth_per_token(points: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per shape, the measured growth in bytes per token between successive sequence lengths.

    Linear memory in the sequence gives equal numbers; an ``L^2`` attention term would make each one
    about twice the one before.
    """
    growth: dict[str, list[float]] = {}
    for name in dict.fromkeys(p["name"] for p in points if "error" not in p):
        rows = sorted((p for p in points if p["name"] == name and "error" not in p), key=lambda p: p["seq"])
        growth[name] = [
            round((b["peak_bytes"] - a["peak_bytes"]) / (b["seq"] - a["seq"]))
            for a, b in zip(rows, rows[1:], strict=False)
        ]
    return growth


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [p for p in points if "error" not in p]
    figure, (by_size, by_seq) = plt.subplots(1, 2, figsize=(12, 4.5))
    for seq in sorted({p["seq"] for p in done}):
        rows = sorted((p for p in done if p["seq"] == seq), key=lambda p: parameters(Shape(**p["shape"])))
        sizes = [parameters(Shape(**p["shape"])) / 1e9 for p in rows]
        (line,) = by_size.plot(
            sizes,
            [(p["peak_bytes"] - p["baseline_bytes"]) / 2**30 for p in rows],
            "o-",
            label=f"{seq} tokens",
        )
        by_size.plot(sizes, [p["floor_bytes"] / 2**30 for p in rows], "--", color=line.get_color())
    by_size.set(xlabel="parameters (billions)", ylabel="peak - baseline (GiB); dashed: floor")
    by_size.legend()
    for name in dict.fromkeys(p["name"] for p in done):
        rows = sorted((p for p in done if p["name"] == name), key=lambda p: p["seq"])
        seqs = [p["seq"] for p in rows]
        (line,) = by_seq.plot(
            seqs, [(p["peak_bytes"] - p["baseline_bytes"]) / 2**30 for p in rows], "o-", label=name
        )
        by_seq.plot(seqs, [p["floor_bytes"] / 2**30 for p in rows], "--", color=line.get_color())
    by_seq.set(xlabel="sequence length (tokens)", ylabel="peak - baseline (GiB); dashed: floor")
    by_seq.legend()
    kind = done[0]["memory_kind"] if done else ""
    figure.suptitle(f"One QLoRA step (NF4 + double quant, LoRA r 16, checkpointing, chunked loss): {kind}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        from lit_lora.runtime import quiet

        quiet.install()  # as lit_lora runs: bitsandbytes without hub kernels, known noise off stderr
        quiet.import_bitsandbytes_without_hub_kernels()
        shape, seq, device, trim = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
        point = measure_point(Shape(**shape), seq, device, trim == "True")
        print(json.dumps(point))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), help=f"among {', '.join(SHAPES)}")
    parser.add_argument("--shape", action="append", default=[], help="another shape: " + parse_shape.__doc__)
    parser.add_argument("--seqs", nargs="*", type=int, default=[512, 1024, 2048])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--allocator", choices=list(ALLOCATORS), default="live",
        help="CPU: live (freed tensors go back to the OS at once: peak RSS counts live tensors) or "
        "default (glibc's own thresholds: peak RSS also counts the freed blocks it keeps) or trim "
        "(glibc's thresholds, freed memory returned after each layer, as model.trim_host_memory does)",
    )  # fmt: skip
    parser.add_argument(
        "--with", dest="earlier", action="append", type=Path, default=[], metavar="JSON",
        help="points measured before (a --json of this script) join the table, prediction and plot; "
        "`--shapes --with A --with B` measures nothing and puts A and B together",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    shapes = {name: SHAPES[name] for name in args.shapes} | dict(parse_shape(s) for s in args.shape)
    points = [p for path in args.earlier for p in json.loads(path.read_text())["points"]]
    for name, shape in shapes.items():
        for seq in args.seqs:
            points.append(run_point(name, shape, seq, args.device, args.allocator))
            print(json.dumps({k: v for k, v in points[-1].items() if k not in ("floor_terms", "shape")}))
            if "error" in points[-1] and seq != args.seqs[0]:
                break  # longer sequences of this shape will not fit either
    latest = {(p["name"], p["seq"]): p for p in points}  # a point measured again replaces the earlier one
    names = list(dict.fromkeys(name for name, _ in latest))
    points = sorted(latest.values(), key=lambda p: (names.index(p["name"]), p["seq"]))
    predicted = predictions(points)
    print_table(points, predicted)
    if args.json is not None:
        from lit_lora.core.io import atomic_write_json

        atomic_write_json(args.json, {"points": points, "predicted": predicted, "published_bytes": PUBLISHED})
    if args.plot is not None:
        plot(points, args.plot)
    if any("error" in p for p in points):
        sys.exit(1)  # the table says which point failed and why; the JSON keeps the others


if __name__ == "__main__":
    main()
