"""The bad-input matrix (docs/bad-input.md): one line naming the key, file or value, exit status 2,
nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bad_inputs import cases, error_lines, run_case

# Cases named without the session fixtures (the ids); each test builds its own case on the fixtures.
_PLACEHOLDER = Path("/nonexistent")
CASES = cases(_PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_in_one_line_with_status_2_and_leaves_nothing(
    case, tiny_bert, tiny_sst2, gsm8k_dir, tmp_path
):
    (real,) = [c for c in cases(tiny_bert, tiny_sst2, gsm8k_dir) if c.name == case.name]
    status, stderr = run_case(real, tiny_bert, tiny_sst2, tmp_path)
    lines = error_lines(stderr)
    assert status == 2, stderr[-3000:]
    assert len(lines) == 1 and real.expected in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    runs = tmp_path / "runs"
    left = [p for p in runs.rglob("*") if p.is_file()] if runs.is_dir() else []
    if real.name == "disk full while writing results":
        assert not any(p.name == "results.json" for p in left)  # atomic writes: nothing half-written
    else:
        assert left == [], left
