"""Paths as users write them: ``~`` and ``~user`` are home folders."""

from __future__ import annotations

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
