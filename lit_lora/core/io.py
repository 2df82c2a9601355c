"""Atomic writes: a result or an export is either complete or absent, never half-written; an output
folder replaces only a previous output of its kind, never a user's folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_lora.errors import LitLoraError


def check_writable_folder(path: str | Path, key: str) -> None:
    """Create ``path`` if needed and fail in one line, naming ``key``, when it cannot be written."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise LitLoraError(f"{key}={path}: cannot write there ({err.strerror})") from err


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


OUTPUT_MARKER = ".lit_lora_output.json"


@dataclass(frozen=True)
class OutputKind:
    """What a replaceable output folder holds; only a previous output of the same kind is replaced."""

    name: str
    legacy_files: frozenset[str] = frozenset()
    """A folder of only these files, ``legacy_needs`` among them, is one written before the marker."""
    legacy_needs: str | None = None


PEFT_FILES = frozenset({"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md"})
ADAPTER_EXPORT = OutputKind("adapter", PEFT_FILES, "adapter_config.json")
MERGED_ADAPTER = OutputKind("merged adapter", PEFT_FILES | {"merge.json"}, "merge.json")
CONVERTED_MODEL = OutputKind("converted model")


def check_replaceable(
    path: str | Path, kind: OutputKind, sources: Sequence[str | Path] = (), label: str | None = None
) -> None:
    """Refuse, in one line, an output folder whose replacement would delete something not ours.

    Refused: the working directory or a folder above it, a source or a folder holding one, and any
    existing non-empty folder that is not a previous output of ``kind`` (its marker, or for outputs
    written before markers, nothing but that kind's files), or that now holds files it did not write.
    """
    path = Path(path)
    where = f"{label} {path}" if label else str(path)
    target = path.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise LitLoraError(f"{where}: is the working directory or a folder above it; name a new folder")
    for source in map(Path, sources):
        if target == source.resolve():
            raise LitLoraError(f"{where}: is the source {source} itself; write elsewhere")
        if target in source.resolve().parents:
            raise LitLoraError(f"{where}: holds the source {source}; write elsewhere")
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise LitLoraError(f"{where}: exists and is not a folder; remove it or choose another path")
    entries = {entry.name for entry in path.iterdir()}
    if entries and not _is_previous_output(path, entries, kind):
        raise LitLoraError(
            f"{where}: exists and is not a previous {kind.name} written by lit_lora (no {OUTPUT_MARKER} "
            f"of that kind, or files it did not write); remove it or choose another folder"
        )


def _is_previous_output(path: Path, entries: set[str], kind: OutputKind) -> bool:
    marker = read_json_object(path / OUTPUT_MARKER)
    if marker:
        written = set(marker.get("files") or ()) | {OUTPUT_MARKER}
        return marker.get("kind") == kind.name and entries <= written
    return kind.legacy_needs in entries and entries <= kind.legacy_files


@contextmanager
def atomic_directory(
    path: str | Path, kind: OutputKind, sources: Sequence[str | Path] = (), label: str | None = None
) -> Iterator[Path]:
    """Yield a scratch directory beside ``path``; on success it replaces ``path`` in one rename.

    ``path`` must be new, empty or a previous output of ``kind`` (see :func:`check_replaceable`),
    checked before the work and again before the swap; the new folder gets the marker that says so.
    """
    path = Path(path)
    check_replaceable(path, kind, sources, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    old = tmp.with_name(f"{tmp.name}.old")
    try:
        yield tmp
        files = sorted(entry.name for entry in tmp.iterdir())
        atomic_write_json(tmp / OUTPUT_MARKER, {"kind": kind.name, "files": files}).chmod(0o644)
        check_replaceable(path, kind, sources, label)  # it may have changed during the work
        if path.exists():
            os.replace(path, old)  # set aside, not deleted, until the new folder is in place
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks: which contents a record refers to."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_folder(path: str | Path, label: str, files: Sequence[str] = ()) -> None:
    """Refuse, in one line, an ``--out`` folder that is a file, or where one of ``files`` (written into
    it) is a folder: commands that write named files into a folder never delete anything else there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LitLoraError(f"{label} {path}: exists and is not a folder; choose a folder")
    if clashes := [name for name in files if (path / name).is_dir()]:
        raise LitLoraError(f"{label} {path}: {clashes[0]} there is a folder, not a file this command wrote")
