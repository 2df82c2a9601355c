"""The loggers of a CLI run: CSV and TensorBoard loggers whose version folder is claimed, W&B that
never blocks or prompts (offline when W&B cannot be reached), W&B by itself under a W&B sweep agent,
and the trackers' local stores checked before any is built."""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_lora.core.io import check_writable_folder
from lit_lora.runtime.mlflow_store import SQLITE, create_mlflow_store


def wandb_reachable(timeout_s: float = 2.0) -> bool:
    """True when an API key is configured and the W&B server accepts a TCP connection."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return False
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has_key():
        return False
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _netrc_has_key() -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class AutoWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger``, offline unless a key is set and the server answers.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
    lit_lora's results recorder copies the run config and ``results.json`` into the run's config and
    summary.
    """

    def __init__(self, project: str = "lit_lora", offline: bool | None = None, **kwargs: Any) -> None:
        """
        Args:
            project: W&B project name.
            offline: Force offline (true) or online (false); None decides from key and network.
            **kwargs: Any other ``lightning.pytorch.loggers.WandbLogger`` argument.
        """
        if offline is None:
            offline = not wandb_reachable()
        kwargs.setdefault("anonymous", False)
        super().__init__(project=project, offline=offline, **kwargs)


def claim_version(versions_root: str | Path) -> int:
    """Create the next free ``version_N`` folder below ``versions_root`` and return N.

    ``os.mkdir`` succeeds for exactly one of the processes that try the same N, so runs started
    together on one ``default_root_dir`` never share a folder (Lightning only lists the folders).
    """
    root = Path(versions_root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


class ClaimedCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``; its ``version_N`` folder is created the moment N is picked."""

    def _get_next_version(self) -> int:
        # Other ranks use rank 0's folder (Trainer.log_dir broadcasts it) and must not claim their own;
        # remote paths (fsspec URLs) keep Lightning's listing.
        if rank_zero_only.rank != 0 or "://" in str(self._root_dir):
            return super()._get_next_version()
        return claim_version(Path(self._root_dir) / self.name)


class ClaimedTensorBoardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger``; its ``version_N`` folder is created the moment N is picked, so
    runs started together never write their events into one TensorBoard run."""

    def _get_next_version(self) -> int:
        if rank_zero_only.rank != 0 or "://" in str(self.root_dir):
            return super()._get_next_version()
        return claim_version(self.root_dir)


def prepare_tracker_stores(logger_config: Any) -> None:
    """Before any logger is built (``trainer.logger`` as parsed: a class spec, a list of them, or a bool):
    refuse in one line a tracker whose local store cannot be written, and create a local MLflow store's
    tables and experiment under a lock, so runs (or DDP ranks) started together do not race to create
    them (MLflow's own creation fails in all but one)."""
    specs = logger_config if isinstance(logger_config, list) else [logger_config]
    for index, spec in enumerate(specs):
        class_path = getattr(spec, "class_path", None)
        if not isinstance(class_path, str):
            continue
        init_args = dict(vars(spec.get("init_args") or {}))
        key = (
            f"trainer.logger[{index}].init_args"
            if isinstance(logger_config, list)
            else "trainer.logger.init_args"
        )
        cls = _import_class(class_path)
        for name, folder in _local_stores(cls, init_args).items():
            check_writable_folder(folder, f"{key}.{name}")
        if issubclass(cls, MLFlowLogger) and (uri := _mlflow_uri(init_args)):
            name = init_args.get("experiment_name") or "lightning_logs"  # MLFlowLogger's default
            create_mlflow_store(uri, name, init_args.get("artifact_location"))


def _import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _mlflow_uri(init_args: dict[str, Any]) -> str | None:
    return init_args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")


def _local_stores(cls: type, init_args: dict[str, Any]) -> dict[str, str]:
    """The local folders a logger of ``cls`` writes, by the argument that names them."""
    if issubclass(cls, MLFlowLogger):
        stores = {}
        uri = _mlflow_uri(init_args)
        if uri is None:
            stores["save_dir"] = init_args.get("save_dir") or "./mlruns"
        elif uri.startswith(SQLITE):
            stores["tracking_uri"] = str(Path(uri.removeprefix(SQLITE)).parent)
        elif uri.startswith("file:"):
            stores["tracking_uri"] = urlparse(uri).path
        location = init_args.get("artifact_location")
        if location and "://" not in location:
            stores["artifact_location"] = location.removeprefix("file:")
        return stores
    save_dir = init_args.get("save_dir")
    if (
        issubclass(cls, (CSVLogger, TensorBoardLogger, WandbLogger))
        and save_dir
        and "://" not in str(save_dir)
    ):
        return {"save_dir": str(save_dir)}
    return {}


def in_wandb_sweep() -> bool:
    """True in a run started by ``wandb agent``: it sets the sweep id and the run id it was given."""
    return bool(os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"))


def run_loggers(loggers: list[Logger], root_dir: str | Path, replace_default: bool) -> list[Logger]:
    """The loggers a CLI run gets from the ones its config built.

    A claimed CSV logger comes first unless a CSV logger is configured (it holds ``results.json``);
    ``replace_default`` drops Lightning's default logger (``trainer.logger`` unset or true). Under a
    W&B sweep agent a W&B logger is added when none is configured: W&B then puts the sweep's
    parameters in the run config itself, and the results record goes to the summary.
    """
    chosen = [] if replace_default else list(loggers)
    if not any(isinstance(lg, CSVLogger) for lg in chosen):
        chosen.insert(0, ClaimedCSVLogger(save_dir=root_dir))
    if in_wandb_sweep() and not any(isinstance(lg, WandbLogger) for lg in chosen):
        if os.environ.get("WANDB_DIR"):
            check_writable_folder(os.environ["WANDB_DIR"], "WANDB_DIR")
        chosen.append(AutoWandbLogger(save_dir=os.environ.get("WANDB_DIR") or str(root_dir)))
    return chosen
