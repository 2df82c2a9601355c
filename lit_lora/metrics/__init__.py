"""Every metric in one place: scoring rules (GSM8K, SQuAD v2) and the metric objects task modules update."""
