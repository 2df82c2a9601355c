"""A quiet start: the library messages lit_lora knows to be harmless are off stderr, nothing else is."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lit_lora.runtime import quiet as _quiet
from tests.helpers import REPO
from tests.helpers.cli import run_cli

# One fragment of each known message (lit_lora/runtime/quiet.py says where each comes from and why it is
# harmless).
NOISE = (
    "Failed to load CPU gemm_4bit_forward",
    "Skipping publisher trust check",
    "`tensorboardX` has been removed",
    "💡 Tip",
    "isinstance(treespec, LeafSpec)",
    "`is_gradient_checkpointing` is deprecated",
    "'set_vital' is deprecated",
    "will assume that the vocabulary was not modified",
    "Setting accelerator to CPU",
)


def test_a_qlora_fit_prints_no_known_noise_but_still_a_real_warning(
    tiny_bert: Path, tiny_sst2: Path, tmp_path
):
    fit = run_cli(
        "fit", "--config", "configs/sst2_qlora.yaml", "--model.model_name_or_path", str(tiny_bert),
        "--data.data_dir", str(tiny_sst2), "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    output = fit.stderr + fit.stdout
    assert [n for n in NOISE if n in output] == [], output[-3000:]
    # 96 rows in batches of 32 against log_every_n_steps 20: a warning the user can act on stays.
    assert "smaller than the logging interval" in fit.stderr


def test_filters_match_the_message_and_its_source_not_the_message_alone() -> None:
    _quiet.install()
    logger = logging.getLogger("DeepSpeed")
    text = "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."

    def passes(pathname: str) -> bool:
        record = logger.makeRecord("DeepSpeed", logging.WARNING, pathname, 1, text, None, None)
        return logger.filter(record)

    assert not passes("/site-packages/deepspeed/accelerator/real_accelerator.py")
    assert passes("/site-packages/elsewhere/real_accelerator.py")  # same words, another source: shown
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _quiet.install()  # its filters go in front of the "default" one
        warnings.warn_explicit("'set_vital' is deprecated", UserWarning, "x.py", 1, module="x", registry={})
        warnings.warn_explicit(
            "'set_vital' is deprecated", UserWarning, "stateful_dataloader.py", 1,
            module="torchdata.stateful_dataloader.stateful_dataloader", registry={},
        )  # fmt: skip
    assert [str(w.message) for w in caught] == ["'set_vital' is deprecated"]  # only the one from elsewhere


def test_bitsandbytes_is_imported_without_asking_for_a_hub_kernel(tmp_path: Path) -> None:
    from bitsandbytes.functional import has_avx512bf16  # the CPUs on which bitsandbytes asks

    if not has_avx512bf16():
        pytest.skip("bitsandbytes asks for a hub kernel only on CPUs with AVX512-BF16")
    fake = tmp_path / "kernels"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "def get_kernel(repo_id, **kwargs):\n    print('HUB KERNEL ASKED:', repo_id)\n    raise OSError\n"
    )
    # kernels is imported last: the fake must be importable again once bitsandbytes is in.
    code = "\n".join(
        (
            "from lit_lora.runtime import quiet as _quiet",
            "_quiet.import_bitsandbytes_without_hub_kernels()",
            "import bitsandbytes, kernels",
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "HF_HUB_OFFLINE": "1"}
    env.pop(_quiet.HUB_KERNELS_ENV, None)
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "HUB KERNEL ASKED" not in quiet.stdout, quiet.stderr[-2000:]
    # The opt-in gives bitsandbytes its own choice back: it asks.
    env[_quiet.HUB_KERNELS_ENV] = "1"
    asked = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "HUB KERNEL ASKED: kernels-community/quantization-bitsandbytes" in asked.stdout, asked.stderr[
        -2000:
    ]
