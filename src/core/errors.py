"""The project's exception hierarchy.

Library code raises these; each CLI's ``main`` maps them to one line on stderr and a
non-zero exit code (see :mod:`src.core.cli`). Anything else is a bug and gets a traceback.

A library error speaks the caller's language: it names Python parameters in backquotes
(```window` must be >= 1``, ``pass `window=200```), never a command-line flag a notebook user never
typed, and lists them in ``params``; a script prints the same error with each one written as its flag
(``--window must be >= 1``, ``pass --window 200``; see :func:`src.core.cli.speak_flags`).

A message that quotes what the user gave shows it through :func:`quote` (at most ``MAX_QUOTED``
characters, then an ellipsis), and every error line is cut to ``MAX_LINE`` characters: a 1 MB value
in a config file makes a short line, not a 2 MB one.
"""

from typing import Any, Iterable

MAX_QUOTED = 80  # characters of a user's value shown in a message
MAX_LINE = 1000  # characters of an error line in all (message and hint)


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters with an ellipsis and the full length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    close = text[-1] if text[-1] in "'\")]}" else ""  # keep the closing quote or bracket
    size = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit - 1 - len(close)]}…{close} ({size:,} characters)"


def bounded(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters (the start and the end are kept)."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]} … [{len(text) - head - tail:,} characters cut] … {text[-tail:]}"


class GroceryError(Exception):
    """Base class: an error the user can act on. ``hint`` says what to do; ``params`` names the parameters
    (the Python names, in backquotes in the text) the message and hint speak of, for a script to show as
    its flags."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, params: Iterable[str] = ()):
        super().__init__(message)
        self.hint = hint
        self.params = tuple(params)

    def __str__(self) -> str:
        msg = super().__str__()
        return bounded(f"{msg} ({self.hint})" if self.hint else msg)


class DataError(GroceryError):
    """The dataset on disk is missing, empty or unusable."""

    exit_code = 2


class ConfigError(GroceryError):
    """A flag, parameter or config file is invalid."""

    exit_code = 2


class ModelError(GroceryError):
    """A model file is missing, not a model, or fails its digest check."""

    exit_code = 3


class StoreError(GroceryError):
    """The local store refused an operation (name, version, alias)."""

    exit_code = 4


class TrackingError(GroceryError):
    """W&B could not be reached or refused the operation."""

    exit_code = 5
