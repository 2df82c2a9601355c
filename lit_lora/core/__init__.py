"""Leaf helpers every part may use; imports nothing of lit_lora but lit_lora.errors."""
