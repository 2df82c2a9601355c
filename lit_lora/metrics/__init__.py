"""Task metrics that are pure functions of predictions and gold answers."""
