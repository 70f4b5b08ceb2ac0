"""One error type for user mistakes and one handler shared by every script.

A mistake the user can fix (a missing or malformed file, a bad flag value, a checkpoint that does not fit) is raised
as ``UserError`` with a message naming the file or flag and what to do. ``run_cli`` runs a script's ``main`` and
turns such an error into one line on stderr and exit code 2, never a traceback; anything else is a bug and keeps its
traceback.

Errors are converted where user input enters the code, not in each script:

* ``ArgumentParser`` is argparse's parser whose flag errors raise ``UserError`` (one line, no usage dump);
* ``reading(path, what)`` wraps the code that reads a user's file: whatever goes wrong in there (missing, a folder,
  not JSON, truncated gzip, a torch checkpoint that is not one, a missing key) becomes one ``UserError`` naming it;
* ``check_output_dir`` / ``check_output_file`` test an output path before the work starts, writing nothing, so a
  read-only or misspelt folder is found at once instead of after hours of work.
"""
from __future__ import annotations

import argparse
import errno
import os
import pickle
import shutil
import sys
import tempfile
import zlib
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

MIN_FREE_BYTES = 1 << 20  # an output folder with less room than this fails at once


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user must provide (and the toolkit never downloads) is not there."""


def one_line(text: object, limit: int = 400) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def run_cli(main: Callable[..., object], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main`` (with ``argv`` when given); a UserError ends it with ``error: <message>`` on stderr and
    exit code 2, Ctrl-C with one line and exit code 130."""
    try:
        main() if argv is None else main(list(argv))
    except UserError as err:
        print(f"error: {one_line(err, 2000)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr, for input that is skipped rather than refused."""
    print(f"warning: {one_line(message, 2000)}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser for the scripts: the module docstring as description, and a bad flag raises UserError
    (one line naming the flag, then ``see -h``) instead of printing the usage and exiting."""

    def __init__(self, description: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(description=description, **kwargs)

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} -h)")


def _reason(err: BaseException) -> str:
    """What went wrong, in words a user can act on (the library's message where it is one)."""
    if isinstance(err, KeyError):
        return f"missing key {err.args[0]!r}" if err.args else "missing key"
    if isinstance(err, EOFError):
        return "it ends too early (empty or truncated)"
    if isinstance(err, zlib.error) or (isinstance(err, OSError) and "gzip" in str(err).lower()):
        return f"truncated or not gzip-compressed ({err})"
    if isinstance(err, OSError) and err.errno == errno.EINVAL:
        return "truncated or corrupt"
    if isinstance(err, UnicodeDecodeError):
        return "unreadable bytes (a binary or corrupt file)"
    return str(err) or type(err).__name__


@contextmanager
def reading(path: str | os.PathLike, what: str, fix: str = "") -> Iterator[None]:
    """Turn whatever goes wrong while reading the user's file ``path`` (a ``what``, e.g. "cache") into one UserError
    naming the file, what is wrong and ``fix`` (what to do). UserErrors raised inside pass through unchanged."""
    where = os.fspath(path)
    tail = f"; {fix}" if fix else ""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as err:
        raise UserError(f"{err.filename or where}: no such file{tail}") from None
    except IsADirectoryError as err:
        raise UserError(f"{err.filename or where} is a folder, not a {what} file{tail}") from None
    except PermissionError as err:
        raise UserError(f"{err.filename or where}: permission denied; make the {what} readable") from None
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError,
            pickle.UnpicklingError, zlib.error) as err:
        raise UserError(f"{where}: not a valid {what}: {one_line(_reason(err), 300)}{tail}") from None


def _probe_dir(folder: str, label: str) -> None:
    """Fail unless a file can be created in the existing folder ``folder`` (the probe leaves nothing behind);
    ``label`` (flag and value) starts the message."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"{label}: cannot write in {folder} ({err.strerror or err}); choose another folder or fix "
                        f"its permissions") from None
    if shutil.disk_usage(folder).free < MIN_FREE_BYTES:
        raise UserError(f"{label}: the disk holding {folder} is full; free some space or choose another folder")


def check_output_dir(path: str | os.PathLike, flag: str, shown: str | None = None) -> str:
    """Check, before any work, that files can be written in the folder ``path`` (created later if missing: its
    nearest existing parent must be a writable folder). Writes nothing; returns the path. Messages name the flag
    with ``shown`` (default: the path)."""
    where = os.fspath(path) or "."
    probe = os.path.abspath(where)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{flag} {shown or where}: {probe} is a file, not a folder; choose another output folder")
    _probe_dir(probe, f"{flag} {shown or where}")
    return where


def check_output_file(path: str | os.PathLike, flag: str, suffixes: Sequence[str] = ()) -> str:
    """Check, before any work, that the file ``path`` can be written: a known suffix, not a folder, its folder
    writable (see ``check_output_dir``). Writes nothing; returns the path."""
    where = os.fspath(path)
    if suffixes and not where.endswith(tuple(suffixes)):
        raise UserError(f"{flag} {where}: the file name must end in {' or '.join(suffixes)}")
    if os.path.isdir(where):
        raise UserError(f"{flag} {where} is a folder; give a file name")
    if os.path.exists(where) and not os.access(where, os.W_OK):
        raise UserError(f"{flag} {where}: the file is read-only; choose another name or fix its permissions")
    check_output_dir(os.path.dirname(os.path.abspath(where)), flag, shown=where)
    return where
