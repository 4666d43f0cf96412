"""Expensive, deterministic results cached by the content of their inputs.

A result (red flags, a grade, an attention measure, ...) is stored under a hash of everything it depends on: the
weights' fingerprint of every model involved (and its classifier), the images themselves, the settings, the
package's version. New weights at the same path, other images or other settings give another key and are
computed; nothing is ever looked up by path or time. Results live in ``results/<kind>/`` in the zsr_lab cache,
written atomically; a damaged file is computed again.

Only computations that are deterministic given their key belong here: each one seeds its own randomness (so a
cached result is what the computation would give now, wherever it runs in a chapter).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from . import settings

REVISION = 1  # bump when a cached computation changes its meaning: every stored result is then recomputed
T = TypeVar("T")


class Uncacheable(TypeError):
    """A value whose content cannot be hashed (the result is computed, not cached)."""


def content_digest(value) -> str:
    """A hash of ``value``'s content: numbers, strings, containers, tensors and arrays by value, a model by its
    ``content_fingerprint()``, a function by its source and the values it reads (see :func:`function_digest`).

    Raises:
        Uncacheable: ``value`` (or something inside it) has no content to hash.
    """
    digest = hashlib.blake2b(digest_size=16)
    _feed(digest, value, depth=0)
    return digest.hexdigest()


def _feed(digest, value, depth: int) -> None:
    if depth > 8:
        raise Uncacheable("nested too deeply to hash")
    if value is None or isinstance(value, bool | int | float | str | bytes):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}[{len(value)}](".encode())
        for item in value:
            _feed(digest, item, depth + 1)
        digest.update(b")")
    elif isinstance(value, dict):
        digest.update(f"dict[{len(value)}](".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key, depth + 1)
            _feed(digest, value[key], depth + 1)
        digest.update(b")")
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"array:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    elif hasattr(value, "content_fingerprint"):
        digest.update(f"model:{value.content_fingerprint()};".encode())
    elif isinstance(value, types.ModuleType):
        digest.update(f"module:{value.__name__};".encode())
    elif isinstance(value, types.FunctionType):
        digest.update(f"function:{function_digest(value, depth + 1)};".encode())
    else:
        raise Uncacheable(f"cannot hash a {type(value).__name__} by its content")


def function_digest(function: types.FunctionType, depth: int = 0) -> str:
    """A hash of a function's source and of every value it reads from outside: the globals and closure
    variables it names (numbers, strings, tensors, modules, other functions, models). The same code reading the
    same values gives the same hash, wherever it was defined.

    Raises:
        Uncacheable: the source is not available, or the function reads a value that cannot be hashed.
    """
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError) as error:
        raise Uncacheable(f"no source for {function.__qualname__}") from error
    digest = hashlib.blake2b(digest_size=16)
    digest.update(source.encode())
    names = set()
    codes = [function.__code__]
    while codes:  # the names read by the function and by the lambdas and comprehensions inside it
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    for name in sorted(names):
        if name in function.__globals__:
            digest.update(name.encode())
            _feed(digest, function.__globals__[name], depth + 1)
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or ()):
        digest.update(name.encode())
        _feed(digest, cell.cell_contents, depth + 1)
    return digest.hexdigest()


def result_path(kind: str, key: str) -> Path:
    return settings.cache_dir() / "results" / kind / f"{key}.pkl"


def remember(
    kind: str, inputs: dict, compute: Callable[[], T], *, random_sources: Sequence[torch.Generator] = ()
) -> tuple[T, bool]:
    """``compute()``, or its stored result for the same ``inputs``; returns ``(result, was_cached)``.

    Arguments:
        kind: what is computed (a folder name: ``"red_flags"``, ``"grade"``, ...).
        inputs: everything the result depends on (hashed with :func:`content_digest`); when something in it
            cannot be hashed the result is computed and not stored.
        compute: the computation, deterministic given ``inputs``.
        random_sources: generators the computation draws from whose state before it is part of ``inputs`` (or
            that it seeds itself): their state after it is stored too and set again when the result is read, so a
            cached call leaves them as computing would (what runs next draws the same numbers).
    """
    from . import __version__

    try:
        key = content_digest({"kind": kind, "inputs": inputs, "version": __version__, "revision": REVISION})
    except Uncacheable:
        return compute(), False
    path = result_path(kind, key)
    if path.exists():
        try:
            with open(path, "rb") as stored:
                result, states = pickle.load(stored)
        except Exception as error:  # damaged (e.g. the disk filled up): compute it again, and say so
            warnings.warn(f"{path}: unreadable cached result ({error}); computing it again", stacklevel=2)
        else:
            if len(states) == len(random_sources):
                for generator, state in zip(random_sources, states):
                    generator.set_state(state)
                return result, True
    result = compute()
    states = [generator.get_state() for generator in random_sources]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = settings.temporary_path(path)
    with open(tmp, "wb") as out:
        pickle.dump((result, states), out)
    os.replace(tmp, path)
    return result, False
