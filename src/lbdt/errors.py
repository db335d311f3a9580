"""The one exception type users see for bad input: a message naming the file and the problem."""


class LBDTError(ValueError):
    """Bad input (a file, a value, a configuration). The CLI prints it as one line, no traceback."""
