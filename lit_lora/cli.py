"""``python -m lit_lora {fit,validate,test,predict}``: LightningCLI with lit_lora's defaults."""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_lora.callbacks import AdapterExport, NonFiniteLossGuard, PredictionsWriter, ResultsRecorder
from lit_lora.core.io import check_writable_folder
from lit_lora.core.parse_errors import condense
from lit_lora.core.ranges import Seed, check_value
from lit_lora.data.base import TextDataModule
from lit_lora.errors import LitLoraError
from lit_lora.models.base import PeftModule
from lit_lora.runtime.devices import check_cluster_settings, check_device_support, check_single_device
from lit_lora.runtime.last_checkpoint import find_last_checkpoint
from lit_lora.runtime.loggers import prepare_tracker_stores, run_loggers


class _Parser(LightningArgumentParser):
    """Reports a bad key or value in one line and exits with status 2; takes no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A mistyped --trainer.max_epoch must fail, not silently match --trainer.max_epochs.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # a nested parser: the caller may still try other union members
            super().error(message, ex)
        print(f"lit_lora: error: {condense(message)}", file=sys.stderr)
        raise SystemExit(2)


class LitLoraCLI(LightningCLI):
    """Links the tokenizer to the model, hands the parsed config to the results record, checks the
    devices and the output folder before any work, and leaves no run folder for a run that failed
    before its first step."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.init_args.model_name_or_path", "data.init_args.tokenizer_name")
        parser.link_arguments("model.init_args.trust_remote_code", "data.init_args.trust_remote_code")
        parser.link_arguments("seed_everything", "data.init_args.seed", compute_fn=_data_seed)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Every declared range (lit_lora/core/ranges.py) on the parsed values, nested specs included, named
        # by their full keys, before the seed is set or any class is built.
        subcommand = self.config.get("subcommand")
        check_ranges(self.config[subcommand] if subcommand else self.config)

    def instantiate_classes(self) -> None:
        # A tracker's store is created when its logger is built: checked (and MLflow's made) first.
        subcommand = self.config.get("subcommand")
        prepare_tracker_stores((self.config[subcommand] if subcommand else self.config).get("trainer.logger"))
        try:
            super().instantiate_classes()
        except Exception as err:
            # jsonargparse reports a class whose __init__ refused its arguments as a value that "does
            # not validate against any of the Union subtypes"; lit_lora's own one-line reason is its cause.
            refusal = _lit_lora_cause(err)
            if refusal is None:
                raise
            raise refusal from None

    def after_instantiate_classes(self) -> None:
        # The device is resolved (accelerator auto included) and no weights are loaded yet.
        quantization = getattr(self.model, "quantization", None)
        check_device_support(self.trainer.strategy.root_device, str(self.trainer.precision), quantization)
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        files = config.get("config") or []
        recorder = next((c for c in self.trainer.callbacks if isinstance(c, ResultsRecorder)), None)
        if recorder is not None:
            # Every config file stacked, in order: sst2_lora+ddp names the experiment and the extra.
            recorder.config_name = "+".join(Path(str(f)).stem for f in files) or None
            recorder.config = yaml.safe_load(
                self._parser(self.subcommand).dump(config, skip_link_targets=False)
            )

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except (LitLoraError, MisconfigurationException, OSError):
            remove_unstarted_run_dir(self.trainer)
            raise

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if subcommand == "fit" and kwargs.get("ckpt_path") == "last":
            # None (no checkpoint yet) keeps Lightning's "last": a first run starts fresh with its warning.
            kwargs["ckpt_path"] = find_last_checkpoint(self.trainer) or "last"
        return kwargs

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # A CSV logger always comes first, so the run directory is <default_root_dir>/lightning_logs/
        # version_N whatever else is configured or installed; `trainer.logger: false` turns all off.
        trainer_config = self._get(self.config_init, "trainer", default={})
        check_writable(trainer_config.get("default_root_dir") or ".")
        # Lightning refuses these on MPS with a traceback; lit_lora says it in one line.
        check_single_device(
            trainer_config.get("accelerator"), trainer_config.get("strategy"), trainer_config.get("devices")
        )
        configured = trainer_config.get("logger")
        if configured in (None, True):
            kwargs["logger"] = True
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (TypeError, ValueError) as err:
            # Lightning says these with a traceback; the value is what the user must change.
            key = next((k for k in ("devices", "precision") if k in str(err)), None)
            if key is None:
                raise
            raise LitLoraError(
                f"trainer.{key}={trainer_config.get(key)}: {str(err).splitlines()[0]}"
            ) from err
        check_cluster_settings(trainer)
        if configured is not False:  # CSV with a claimed version_N first; W&B under a sweep agent
            default = configured in (None, True)
            trainer.loggers = run_loggers(trainer.loggers, trainer.default_root_dir, default)
        return trainer


def check_ranges(config: Any) -> None:
    """Every declared range (lit_lora/core/ranges.py) of a parsed fit/validate/test/predict config, nested
    specs included, named by its full key."""
    check_value("seed_everything", config.get("seed_everything"), Seed | bool | None)
    check_value("model", config.get("model"), PeftModule)
    check_value("data", config.get("data"), TextDataModule)


def check_writable(root: str) -> None:
    """Fail before any work when the run directory cannot be written (permissions, read-only disk)."""
    check_writable_folder(root, "trainer.default_root_dir")


def remove_unstarted_run_dir(trainer: Any) -> None:
    """Leave no run directory behind for a run that failed before it produced anything.

    The config is saved (and the version folder claimed) before the model is built, so a bad model,
    adapter or data setting would otherwise leave a folder holding a config.yaml and nothing else.
    """
    logger = getattr(trainer, "logger", None)
    log_dir = getattr(logger, "log_dir", None) if logger is not None else None
    if not trainer.is_global_zero or log_dir is None or not Path(log_dir).is_dir():
        return
    leftovers = {p.name for p in Path(log_dir).iterdir()}
    if leftovers <= {"config.yaml", "hparams.yaml", "metrics.csv"}:
        shutil.rmtree(log_dir, ignore_errors=True)


def _lit_lora_cause(err: BaseException) -> LitLoraError | None:
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, LitLoraError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _data_seed(seed: int | bool | None) -> int:
    # seed_everything may be true/false (pick one / none): the data order then uses the default.
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 42


def build_cli(args: list[str] | None = None, run: bool = True) -> LitLoraCLI:
    return LitLoraCLI(
        PeftModule,
        TextDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=_Parser,
        seed_everything_default=42,
        trainer_defaults={
            "callbacks": [ResultsRecorder(), AdapterExport(), PredictionsWriter(), NonFiniteLossGuard()],
            # lit_lora's loaders shard by rank themselves (data/sampler.py); Lightning's samplers
            # would reorder training batches and repeat evaluation rows.
            "use_distributed_sampler": False,
        },
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    try:
        build_cli(args)
    except (LitLoraError, MisconfigurationException) as err:
        # Lightning's own refusals (no such accelerator, too many devices) read fine in one line too.
        print(f"lit_lora: error: {str(err).splitlines()[0]}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise
        print(f"lit_lora: error: {err.filename or 'output'}: {err.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
