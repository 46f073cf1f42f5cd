"""The one error type that reaches a person.

A `PerseaError` carries a message meant to be read as one line: what is wrong, where, and
what was expected. The CLI prints it in red and exits non-zero; it never shows a traceback.
"""


class PerseaError(Exception):
    """An error caused by input (a file, a flag, a model path), explained for a person."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message
