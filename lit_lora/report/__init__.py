"""``python -m lit_lora report``: command, runs, markdown, curves, plots."""
