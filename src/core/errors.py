"""The project's exception hierarchy.

Library code raises these; each CLI's ``main`` maps them to one line on stderr and a
non-zero exit code (see :mod:`src.core.cli`). Anything else is a bug and gets a traceback.
"""


class GroceryError(Exception):
    """Base class: an error the user can act on. ``hint`` says what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg} ({self.hint})" if self.hint else msg


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
