"""Errors a user can fix: stages print them as one line and exit non-zero, without a traceback."""


class UserError(Exception):
    """Bad input: a parameter, a file or a value the user supplied."""


class ParamsError(UserError):
    """A key of params.yaml is unknown, of the wrong type or out of range."""


class DataError(UserError):
    """A dataset, a file or an artifact is missing or unreadable."""


class TrainingError(UserError):
    """Training diverged: a loss stopped being a finite number. Nothing is written after it."""
