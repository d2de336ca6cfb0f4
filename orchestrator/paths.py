"""Paths as users write them: ``~`` and ``~user`` are home folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def expand_user(location: str | Path) -> Path:
    """``location`` with a leading ``~`` or ``~user`` made that user's home.

    Raises:
        ValueError: ``~user`` names no user of this machine (or ``~`` has no
            home), said in words: :meth:`Path.expanduser` raises a bare
            ``RuntimeError``.
    """
    path = Path(location)
    try:
        return path.expanduser()
    except RuntimeError:
        head = path.parts[0] if path.parts else str(location)
        who = f"there is no user {head[1:]!r}" if head != "~" else "this user has no home folder"
        raise ValueError(f"{location}: {who} on this machine ({head} is a home folder)") from None


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is an existing file that output is written into, never
    replaced: a FIFO, a device (``/dev/stdout``, ``/dev/null``) or a socket,
    through any symbolic links."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def written_path(path: str | Path) -> Path:
    """Where a file written at ``path`` goes: a symbolic link's target (the link
    stays a link, as the shell's ``>`` leaves it), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path
