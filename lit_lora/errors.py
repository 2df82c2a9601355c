"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""


class LitLoraError(ValueError):
    """Bad user input: a missing file or column, a value out of range, an unsupported combination.

    The message must name the offending key, file or value and say what is allowed.
    """
