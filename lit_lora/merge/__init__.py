"""``python -m lit_lora merge``: command, checks, average_ab."""
