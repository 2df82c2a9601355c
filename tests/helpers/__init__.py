"""Everything tests share, in one place; no test module imports another.

- ``paths``: the repository root, the shared real data, the installed MiniLM tokenizer.
- ``builders``: lit_lora objects built the way the CLI would (classifier, data, trainer), tiny shapes.
- ``training``: a seeded fit with its loss trace, and which weights changed or train.
- ``cli``: ``python -m lit_lora`` in a subprocess.
- ``records``: hand-written results.json records and a report's CSVs, for the report tests.
- ``squad``: a made-up SQuAD v2 file and its data module and model.
- ``method_grid``: the checks every PEFT method passes on every task (table: ``test_method_grid.py``).
- ``bad_inputs``: the bad-input cases (``python -m tests.helpers.bad_inputs`` prints the docs table).
- ``*_probe``: callbacks and scripts that subprocess tests load by name (``tests.helpers.dist_probe...``).
"""

from tests.helpers.builders import GSM8K_ROWS, TINY, causal_lm, classifier, quantized, sst2, trainer
from tests.helpers.paths import REPO, SHARED_DATA, minilm_path

__all__ = [
    "GSM8K_ROWS",
    "REPO",
    "SHARED_DATA",
    "TINY",
    "causal_lm",
    "classifier",
    "minilm_path",
    "quantized",
    "sst2",
    "trainer",
]
