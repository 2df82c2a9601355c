"""CausalLM's pieces: greedy generation, choice scores, labelled logits, packing."""
