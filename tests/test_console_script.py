"""The installed ``lit-lora`` command offers every subcommand that ``python -m lit_lora`` does."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tests.helpers import REPO


def test_the_lit_lora_script_runs_lit_loras_own_subcommands_too(tmp_path: Path) -> None:
    (script,) = entry_points(group="console_scripts", name="lit-lora")
    assert script.value == "lit_lora.__main__:main"  # as installed (pip install -e . after a change)
    executable = Path(sys.executable).parent / "lit-lora"
    # fit/validate/test/predict go through the same lit_lora.__main__.main as every CLI test's
    # `python -m lit_lora`; here only what the old entry point (LightningCLI alone) refused.
    for command, expected in [(["sweep", "--help"], "usage: lit_lora sweep"), (["report", "-h"], "--split")]:
        result = subprocess.run([executable, *command], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0 and expected in result.stdout, result.stderr[-2000:]
    (tmp_path / "runs").mkdir()
    result = subprocess.run(
        [executable, "report", "runs", "--out", "report"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2 and "lit_lora: error: no results.json below runs" in result.stderr
    assert (REPO / "pyproject.toml").read_text().count('lit-lora = "lit_lora.__main__:main"') == 1
