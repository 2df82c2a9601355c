"""Where and how a run executes: device rules, the DeepSpeed and FSDP2 strategies, loggers, ranks."""
