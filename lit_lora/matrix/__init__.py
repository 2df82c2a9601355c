"""``python -m lit_lora matrix``: command, spec, tables."""
