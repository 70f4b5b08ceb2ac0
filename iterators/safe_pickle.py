"""Reading pickles without running their code: legacy pickles rebuild only explicitly allowed classes, torch files
only tensors (``weights_only``)."""
from __future__ import annotations

import io
import os
import pickle

from iterators.errors import UserError, reading

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


def load_tensors(path: str, what: str, fix: str) -> dict:
    """A torch file of tensors (``weights_only``: nothing in it can run code) as a dict; anything else, or a file
    that is truncated or not a torch file at all, is a UserError naming it, ``what`` it should be and ``fix``."""
    import torch  # here: the pickle readers above need no torch

    with reading(path, what, fix):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's own message would suggest weights_only=False: never
            raise UserError(f"{path}: not a valid {what}: not a torch file of tensors; {fix}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a valid {what}: it holds a {type(state).__name__}, not a dict; {fix}")
    return state
