"""One error type for user mistakes and one handler shared by every script.

A mistake the user can fix (a missing or malformed file, a bad flag value, a checkpoint that does not fit) is raised
as ``UserError`` with a message naming the file or flag and what to do. ``run_cli`` runs a script's ``main`` and
turns such an error into one line on stderr and exit code 2, never a traceback; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2."""


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's ``main()``; a UserError ends it with ``error: <message>`` on stderr and exit code 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
