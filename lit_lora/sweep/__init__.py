"""``python -m lit_lora sweep``: command, spec."""
