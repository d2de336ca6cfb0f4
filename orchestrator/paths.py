"""Paths as users write them: ``~`` and ``~user`` are home folders."""

from __future__ import annotations

import os
import stat
import sys
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


#: The longest name of one file or folder (ext4, XFS, btrfs, APFS: 255 bytes).
NAME_MAX = 255


def path_problem(path: str | Path) -> str | None:
    """Why no file can be at ``path`` (a NUL byte, a name too long, a symbolic link
    loop), in words; ``None`` if nothing stops it. Python raises ValueError,
    OSError or RuntimeError for each, which reached users as internal errors
    (found by QA)."""
    text = os.fspath(path)
    if "\0" in text:
        return f"{text!r} holds a NUL byte, which no path may"
    for part in Path(text).parts:
        try:
            size = len(os.fsencode(part))
        except UnicodeError:  # found by QA: "é" under LC_ALL=C, an internal error
            return (
                f"{text!r} cannot be a path in this locale's encoding "
                f"({sys.getfilesystemencoding()}): run it again with LC_ALL=C.UTF-8 (or "
                "PYTHONUTF8=1)"
            )
        if size > NAME_MAX:
            return f"{part[:20]}... is a name of {size} bytes; a file's name has {NAME_MAX} at most"
    try:
        Path(text).resolve()
    except RuntimeError:  # Python 3.11's resolve() on a loop
        return f"{text} is a symbolic link loop"
    except OSError as exc:
        return f"{text} cannot be followed ({exc.strerror or exc})"
    return None


#: A run folder's name past its recipe's ``name``: ``-YYYYMMDD-HHMMSS``, and ``-N``
#: where another run of that second has the name.
RUN_NAME_SUFFIX = len("-20261206-183820-99")


def run_path_problem(output: Path, name_bytes: int, strategies: list[str]) -> str | None:
    """Why a run of ``strategies`` in a folder of a name ``name_bytes`` long under
    ``output`` would write paths longer than the system takes (4096 bytes on
    Linux); ``None`` if it would not.

    The longest a run writes is a trial's TensorBoard log:
    ``trials/STRATEGY/TRIAL_ID/tensorboard/validation/events.out.tfevents.TIME.HOST.PID.N.v2``.
    Found by QA: an output folder of 3,985 characters passed validate, and every
    trial then failed as its strategy's error, its cause ("File name too long") cut
    from the summary.
    """
    output = Path(os.path.realpath(output))
    return _too_long(output, output, name_bytes + RUN_NAME_SUFFIX, strategies, "an output folder")


def run_dir_problem(run_dir: Path, strategies: list[str]) -> str | None:
    """As :func:`run_path_problem`, of a run directory given whole (``--run-dir``,
    or ``--run-name`` under output or storage); ``None`` if its paths fit (found
    by QA: a ``--run-dir`` near the limit was taken, and every trial then failed
    with "File name too long")."""
    run_dir = Path(os.path.realpath(run_dir))
    name = len(os.fsencode(run_dir.name))
    problem = _too_long(run_dir, run_dir.parent, name, strategies, "a run directory")
    if problem is None:
        return None
    from orchestrator.errors import ellipsized_in_middle

    return f"{ellipsized_in_middle(str(run_dir), 160)}: {problem}"


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; ``False`` where the system cannot even look
    (a path past its limit raises "File name too long": found by QA, a
    ``--run-dir`` of 4,400 bytes reached users as that raw error)."""
    try:
        return path.exists()
    except OSError:
        return False


def _too_long(
    given: Path, parent: Path, name_bytes: int, strategies: list[str], what: str
) -> str | None:
    """Why a run in a folder of a name ``name_bytes`` long under ``parent`` would
    write paths past the system's limit, said of the folder ``given`` (``what``)."""
    import socket

    # Where the files go: a link on the way is followed (found by QA: a short link
    # to a deep folder passed the check, and the run failed as before).
    folder = parent
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        limit = 4096
    strategy = max((len(os.fsencode(name)) for name in strategies), default=0)
    events = len("events.out.tfevents.0000000000..0000000.00.v2") + len(socket.gethostname())
    under = len("/trials//kt000000000/tensorboard/validation/") + strategy + events + 16
    longest = len(os.fsencode(str(parent))) + 1 + name_bytes + under
    if longest < limit:
        return None
    here = len(os.fsencode(str(given)))
    room = limit - 1 - (longest - here)
    return (
        f"a run here would write paths of up to {longest} bytes (a trial's TensorBoard log, "
        f"under this folder of {here}), past the {limit} a path "
        f"may have on this system; give {what} of at most {max(room, 0)} bytes"
    )


def is_folder_name(name: object) -> bool:
    """Whether ``name`` is one folder's name: no separator, not ``.`` or ``..``, not
    empty. Names read back from a run directory (a trial's id in its ``result.json``,
    keras-tuner's ``trial.json``) become paths; one that is not (``../../x``) would
    reach outside it (found by security QA: a crafted run deleted, moved and wrote
    the user's files on resume)."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and os.sep not in name
        and "\0" not in name
    )


def not_a_file(path: str | Path) -> str:
    """Why ``path``, which ``Path.is_file()`` refused, is no file to read, in words:
    a folder, a device or FIFO (``/dev/null`` was said not to exist), or nothing."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists():
        return "is not a regular file (a device, a FIFO or a socket)"
    return "does not exist"


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is an existing file that output is written into, never
    replaced: a FIFO, a device (``/dev/stdout``, ``/dev/null``) or a socket,
    through any symbolic links."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def dangling_link(path: str | Path) -> str | None:
    """Where ``path`` points, if it is a symbolic link to nothing (yet); else ``None``.

    Found by security QA: ``-o`` refused a file that exists, but a link to none
    counted as no file and was written through, unasked, making a file wherever
    the link (someone else's, in a shared folder) pointed.
    """
    try:
        return os.readlink(path) if not os.path.exists(path) else None
    except (OSError, ValueError):  # not a link, or no such path
        return None


def written_path(path: str | Path) -> Path:
    """Where a file written at ``path`` goes: a symbolic link's target (the link
    stays a link, as the shell's ``>`` leaves it), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path
