"""Writing output files safely: never over an input, never through a link, never half a file.

Every command that writes a file goes through here (stdlib only, so it loads without torch):

* :func:`check_output` refuses, before any work starts, an output that is one of the inputs
  (the same file after resolving links), a folder, or a place that cannot be written;
* :func:`atomic_write` writes to a temporary file in the output folder and renames it over the
  target. ``rename`` replaces a symbolic link instead of following it, and a write that is
  interrupted (an error, Ctrl-C) leaves the old file, or nothing, never a partial file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


class OutputError(ValueError):
    """An output location that cannot or must not be written; the message names it and the fix."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` are the same file once links are resolved (or the same path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *,
                 what: str = "output") -> Path:
    """Refuse an output file that would destroy an input or cannot be written; return it.

    Raises:
        OutputError: ``path`` is one of ``inputs`` (after resolving links), an existing folder,
            in a folder that does not exist, or in a folder this process cannot write to.
    """
    target = Path(path)
    for source in inputs:
        if source is not None and Path(source).exists() and same_file(target, source):
            raise OutputError(f"{what} {target} is the input {source}: writing it would destroy "
                              "the input; choose another output name")
    if target.is_dir():
        raise OutputError(f"{what} {target} is a folder; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {target}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {target}: folder {folder} is not writable")
    return target


def check_output_folder(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """Create the output folder if needed and check that it can be written; return it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{what} {folder} cannot be created: {err.strerror or err}") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {folder} is not writable")
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *,
                 keep_suffix: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    The rename replaces whatever ``path`` is (a file or a symbolic link: the link itself is
    replaced, the file it points to is left alone). On any error, including
    ``KeyboardInterrupt``, the temporary file is removed and ``path`` is unchanged.
    ``keep_suffix``: the temporary file ends like ``path`` (for writers that pick the format
    from the name, such as matplotlib's ``savefig``).
    """
    target = Path(path)
    suffix = f".tmp{target.suffix}" if keep_suffix else ".tmp"
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; outputs are ordinary files
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

