"""W&B sweep specifications without W&B: loading and checking them, expanding them into runs.

The same ``sweeps/*.yaml`` drive ``wandb sweep``/``wandb agent`` and ``python -m lit_lora sweep``.
Grids are the cartesian product in the order the parameters are written (the first varies
slowest); random draws are seeded and distinct; ``bayes`` falls back to random with a warning.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from lit_lora.core.ranges import OptionalPositiveInt, check_config
from lit_lora.errors import LitLoraError

TOP_KEYS = {
    "program", "command", "method", "metric", "parameters", "early_terminate", "name",
    "description", "project", "entity", "controller", "run_cap", "job", "image",
}  # fmt: skip
PARAM_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q", "probabilities"}
DISTRIBUTIONS = {
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
    "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "normal", "q_normal",
    "log_normal", "q_log_normal",
}  # fmt: skip
ARG_MACROS = {"${args}", "${args_no_equals}", "${args_no_hyphens}"}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


@dataclass(frozen=True)
class Sweep:
    path: Path
    method: Literal["grid", "random", "bayes"]
    command: list[str]
    program: str | None
    parameters: dict[str, dict[str, Any]]
    run_cap: OptionalPositiveInt = None


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every problem is a one-line :class:`LitLoraError`."""
    path = Path(path)
    if not path.is_file():
        raise LitLoraError(f"sweep file {path}: no such file")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LitLoraError(f"sweep file {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise LitLoraError(f"sweep file {path}: expected a mapping with 'method' and 'parameters'")
    if unknown := sorted(set(spec) - TOP_KEYS):
        raise LitLoraError(f"sweep file {path}: unknown key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    method, cap = spec.get("method"), spec.get("run_cap")
    check_config(Sweep, {"method": method, "run_cap": cap}, f"sweep file {path}: ")
    if method == "bayes" and not isinstance(spec.get("metric"), dict):
        raise LitLoraError(f"sweep file {path}: method=bayes needs a 'metric' with 'name' and 'goal'")
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise LitLoraError(f"sweep file {path}: 'parameters' must be a non-empty mapping")
    command = spec.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise LitLoraError(f"sweep file {path}: 'command' must be a list of strings")
    if not ARG_MACROS & set(command):
        raise LitLoraError(f"sweep file {path}: 'command' has no ${{args}}, so parameters would be lost")
    if "${program}" in command and not spec.get("program"):
        raise LitLoraError(f"sweep file {path}: 'command' uses ${{program}} but there is no 'program'")
    checked = {str(name): _check_param(path, str(name), p) for name, p in params.items()}
    if method == "grid" and (bad := [n for n, p in checked.items() if "values" not in p]):
        raise LitLoraError(f"sweep file {path}: method=grid needs 'values' or 'value' for {bad}")
    return Sweep(path, method, command, spec.get("program"), checked, cap)


def _check_param(path: Path, name: str, p: Any) -> dict[str, Any]:
    where = f"sweep file {path}: parameter {name}"
    if not isinstance(p, dict):
        raise LitLoraError(f"{where}: expected a mapping with 'values', 'value' or a distribution")
    if "parameters" in p:
        raise LitLoraError(f"{where}: nested parameters are not supported; use a dotted CLI key")
    if unknown := sorted(set(p) - PARAM_KEYS):
        raise LitLoraError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(PARAM_KEYS)}")
    p = dict(p)
    if "value" in p:
        p.setdefault("distribution", "constant")
        p["values"] = [p["value"]]
    elif "values" in p:
        if not isinstance(p["values"], list) or not p["values"]:
            raise LitLoraError(f"{where}: 'values' must be a non-empty list")
        p.setdefault("distribution", "categorical")
    elif "distribution" not in p:
        if "min" not in p or "max" not in p:
            raise LitLoraError(f"{where}: give 'values', 'value', or 'min' and 'max'")
        ints = isinstance(p["min"], int) and isinstance(p["max"], int)
        p["distribution"] = "int_uniform" if ints else "uniform"
    dist = p["distribution"]
    if dist not in DISTRIBUTIONS:
        raise LitLoraError(f"{where}: distribution={dist!r}; allowed: {sorted(DISTRIBUTIONS)}")
    needs = ("mu", "sigma") if dist.endswith("normal") else () if "values" in p else ("min", "max")
    if missing := [k for k in needs if k not in p]:
        raise LitLoraError(f"{where}: distribution={dist} needs {missing}")
    if "min" in p and "max" in p and p["min"] > p["max"]:
        raise LitLoraError(f"{where}: min={p['min']} is above max={p['max']}")
    return p


def sample(p: dict[str, Any], rng: random.Random) -> Any:
    """One draw from a checked parameter, as W&B defines its distributions."""
    dist = p["distribution"]
    if "values" in p:
        return rng.choices(p["values"], weights=p.get("probabilities"))[0]
    if dist == "int_uniform":
        return rng.randint(int(p["min"]), int(p["max"]))
    if dist.endswith("log_uniform_values"):
        x = math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"])))
    elif dist.endswith("log_uniform"):
        x = math.exp(rng.uniform(p["min"], p["max"]))
    elif dist.endswith("log_normal"):
        x = math.exp(rng.gauss(p["mu"], p["sigma"]))
    elif dist.endswith("normal"):
        x = rng.gauss(p["mu"], p["sigma"])
    else:
        x = rng.uniform(p["min"], p["max"])
    if dist.startswith("q_"):
        q = p.get("q", 1)
        x = round(x / q) * q
        return int(x) if isinstance(q, int) else x
    return x


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    names = list(sweep.parameters)
    values = [sweep.parameters[n]["values"] for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def expand(sweep: Sweep, count: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The runs of a sweep: the first ``count`` grid points, or ``count`` distinct random draws."""
    count = count if count is not None else sweep.run_cap
    if sweep.method == "grid":
        return grid(sweep)[:count]
    if sweep.method == "bayes":
        print("lit_lora sweep: warning: method=bayes runs as random offline", file=sys.stderr)
    if count is None:
        raise LitLoraError(f"sweep file {sweep.path}: method={sweep.method} needs --count N (or run_cap)")
    rng, runs, seen = random.Random(seed), [], set()
    for _ in range(100 * count):
        if len(runs) == count:
            break
        params = {name: sample(p, rng) for name, p in sweep.parameters.items()}
        if (key := repr(sorted(params.items()))) not in seen:
            seen.add(key)
            runs.append(params)
    if len(runs) < count:
        print(f"lit_lora sweep: warning: only {len(runs)} distinct parameter sets", file=sys.stderr)
    return runs


def param_args(params: dict[str, Any], style: str = "${args}") -> list[str]:
    """``--name=value`` as W&B's agent writes them (``config`` first, so it cannot undo the rest)."""
    items = sorted(params.items(), key=lambda kv: kv[0] != "config")
    if style == "${args_no_equals}":
        return [t for k, v in items for t in (f"--{k}", str(v))]
    prefix = "" if style == "${args_no_hyphens}" else "--"
    return [f"{prefix}{k}={v}" for k, v in items]


def build_command(sweep: Sweep, params: dict[str, Any], interpreter: str = sys.executable) -> list[str]:
    """The sweep's ``command`` with W&B's macros filled in (``${env}`` is dropped: env is inherited)."""
    out: list[str] = []
    for token in sweep.command:
        if token == "${interpreter}":
            out.append(interpreter)
        elif token == "${program}":
            out.append(str(sweep.program))
        elif token in ARG_MACROS:
            out += param_args(params, token)
        elif token != "${env}":
            if token.startswith("${"):
                raise LitLoraError(f"sweep file {sweep.path}: command macro {token} is not supported offline")
            out.append(token)
    return out


def run_name(params: dict[str, Any]) -> str:
    """A stable directory name from the parameter values, e.g. ``seed=1,r=16,alpha=32``."""
    parts = []
    for key, value in params.items():
        short = "seed" if key == "seed_everything" else key.rsplit(".", 1)[-1]
        if key == "config":
            value = Path(str(value)).stem
        mapping = _mapping(value)
        parts += [f"{k}={v}" for k, v in mapping.items()] if mapping else [f"{short}={value}"]
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", "_".join(parts)).strip("_")
    if len(name) > 80:
        digest = hashlib.sha1(repr(sorted(params.items())).encode()).hexdigest()[:8]
        name = f"{name[:71]}-{digest}"
    return name


def _mapping(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value.startswith("{"):
        try:
            loaded = yaml.safe_load(value)
        except yaml.YAMLError:
            return None
        return loaded if isinstance(loaded, dict) else None
    return None
