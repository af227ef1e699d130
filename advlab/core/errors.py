"""Errors about the user's input: params, data files, missing upstream outputs, an absent device.

A stage prints an InputError as one line and exits 1 (advlab/core/stage.py); any other exception is
a bug and keeps its traceback. Each type also derives from the builtin error it refines, so
`except FileNotFoundError` and the like still catch it.
"""

from __future__ import annotations


class InputError(Exception):
    """Something the user gave or has yet to produce is wrong; the message says what and where."""


class MissingInputError(InputError, FileNotFoundError):
    """A file a stage reads does not exist, e.g. an upstream stage's output not yet made."""


class BadFileError(InputError, ValueError):
    """A file a stage reads exists but does not hold what it should."""


class DeviceError(InputError, RuntimeError):
    """base.device names a device this machine does not have."""
