"""The one exception type for user-facing errors (bad data, bad config).

The CLI prints it as one line and exits non-zero; internal errors keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class ReconError(Exception):
    """An error caused by the user's input: a bad data folder, a malformed file, an invalid option.

    Args:
        message: what is wrong, in one line.
        path: the file or folder it concerns; printed in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)
