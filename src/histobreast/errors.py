"""Exceptions with messages meant for users: each names the file or setting at fault.

The CLI prints a ``HistobreastError`` as one clear line (no traceback) and exits with status 1.
"""

from __future__ import annotations

from pathlib import Path


class HistobreastError(Exception):
    """Base class of every error histobreast raises on purpose."""


class ImageReadError(HistobreastError):
    """An image file could not be read: missing, empty, truncated, corrupt or not an image."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(HistobreastError):
    """A dataset tree, label file or split file is malformed (the message names the file)."""


class SplitLeakageError(HistobreastError):
    """A split puts one patient (or group of neighbouring images) on both sides."""


class ConfigError(HistobreastError):
    """A configuration file or option is invalid (the message names the key)."""


class CheckpointError(HistobreastError):
    """A checkpoint or weights file is missing, unsafe (pickled) or does not match the model."""
