"""Reading legacy pickles without running their code: only explicitly allowed classes may be rebuilt."""
from __future__ import annotations

import io
import os
import pickle

from iterators.errors import UserError

# Containers and scalars that plain-data pickles are made of; nothing here can run code when rebuilt.
BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                      "bool", "complex", "NoneType", "object"})


class RefusedPickle(UserError, pickle.UnpicklingError):
    """The pickle names a class that is not on the allow-list (a user's file: one line, exit code 2)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds builtins plus the classes in ``allowed`` ({(module, name): class}); refuses anything else."""

    def __init__(self, file, allowed: dict[tuple[str, str], type] | None = None):
        super().__init__(file)
        self.allowed = allowed or {}

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "builtins" and name in BUILTINS:
            return super().find_class(module, name)
        raise RefusedPickle(f"refusing to load {module}.{name} from a pickle: only plain data "
                            f"(dicts, lists, numbers, strings) is accepted")


def restricted_load(path_or_bytes, allowed: dict[tuple[str, str], type] | None = None):
    """Unpickle a file path or bytes through RestrictedUnpickler."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return RestrictedUnpickler(io.BytesIO(path_or_bytes), allowed).load()
    with open(path_or_bytes, "rb") as f:
        try:
            return RestrictedUnpickler(f, allowed).load()
        except RefusedPickle as err:
            raise RefusedPickle(f"{os.fspath(path_or_bytes)}: {err}") from None
