"""The package's one error type for bad input, at the bottom of the layers so every module can raise it."""


class DataError(Exception):
    """Input data that cannot be used; the message names the file and the fix."""
