"""One registry type for every named choice: methods, attacks, suites, datasets, scales and pretrained tags.

Each is a :class:`Registry`, filled as a table where its entries are defined (``Registry("attack", {...})``) or
by decorating a class (``@METHODS.register``); looking up an unknown name raises :class:`UnknownNameError` with
the closest names and the full list::

    >>> zl.methods.METHODS["tecoo"]
    UnknownNameError: unknown method 'tecoo' (did you mean 'tecoa'?); choose one of 'tecoa', 'pmg_aft', ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in its registry. A ``ValueError`` (bad input) and a ``KeyError`` (so mappings' ``get``
    and ``in`` behave), whose message says what was meant and what exists."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class Registry(MutableMapping[str, T], Generic[T]):
    """Named entries of one kind, read like a dict (``registry[name] = entry`` replaces one, as a test's
    ``monkeypatch.setitem`` does; :meth:`add` refuses to).

    Arguments:
        kind: what an entry is, for messages (``"method"``, ``"dataset"``).
        entries: the initial table, in the order in which choices are listed.

    Examples:
        >>> SUITES = Registry("suite", {"aa": ("apgd_ce-100", "apgd_t-100")})
        >>> SUITES["aa"]
        ('apgd_ce-100', 'apgd_t-100')
        >>> SUITES.close_matches("aaa")
        ['aa']
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (a name is registered once); returns the entry."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, entry: T) -> T:
        """Class decorator: register a class under its ``name`` attribute."""
        return self.add(entry.name, entry)

    def close_matches(self, name: object, n: int = 1) -> list[str]:
        """The registered names closest to ``name`` (none when nothing is close)."""
        return difflib.get_close_matches(str(name), list(self._entries), n=n)

    def unknown(self, name: object, *, where: str = "", n: int = 1) -> UnknownNameError:
        """The error for a name that is not registered (``where``: e.g. ``" in 'pgd-10+fgsm'"``)."""
        close = self.close_matches(name, n)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        choices = ", ".join(repr(choice) for choice in self)
        return UnknownNameError(f"unknown {self.kind} {name!r}{where}{hint}; choose one of {choices}")

    def check(self, name: object, *, where: str = "", n: int = 1) -> str:
        """``name`` if registered; otherwise raises :meth:`unknown`'s error."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.unknown(name, where=where, n=n)
        return name

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self)})"

    def filter(self, keep: Callable[[T], bool]) -> list[str]:
        """The names whose entries satisfy ``keep``, in registry order."""
        return [name for name, entry in self._entries.items() if keep(entry)]
