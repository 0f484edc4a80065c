"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class PrepError(ValueError):
    """Bad input or settings; the message names the problem and the fix."""
