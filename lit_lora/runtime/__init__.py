"""Where and how a run executes: device rules, the DeepSpeed strategy, loggers, ranks."""
