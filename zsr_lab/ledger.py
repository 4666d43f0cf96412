"""The per-image ledger: what every evaluation learned about every image, kept beside its result rows.

For each image (dataset, index in the split) the ledger records whether the model classified it correctly, and
for each attack that ran on it whether the image survived, the forward-backward passes it cost, and the size of
the perturbation (with any excursion outside [0, 1]). Records are keyed like result rows: by the weights'
fingerprint, an evaluation context (model, split, its size, templates, precision, seed: :func:`context_of`), ε
and the attack (:meth:`zsr_lab.attacks.AttackConfig.key`, plus the stopping rule for PGD and CW).

Because every image's random start comes from its own seed, a verdict does not depend on the batch, the suite
or the cascade: a member already recorded for an image is never run on it again, a suite whose members are all
recorded computes nothing, and the worst case over every attack ever run on the same images can be read off.

On disk: ``ledger.csv.gz``, one line per image × attack (``member == "clean"`` for clean correctness), rewritten
atomically after each dataset (``pandas.read_csv`` reads it as is; :func:`read_ledger` checks it). About 2-4
bytes per image and attack compressed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import settings

LEDGER_FILE = "ledger.csv.gz"
CLEAN = "clean"
COLUMNS = (
    "weights",
    "context",
    "dataset",
    "index",
    "eps",
    "member",
    "outcome",
    "passes",
    "perturbation",
    "excursion",
    "suite",
    "position",
)
_DTYPES = {
    "weights": str,
    "context": str,
    "dataset": str,
    "index": "int64",
    "eps": "float64",
    "member": str,
    "outcome": "int8",
    "passes": "int64",
    "perturbation": "float64",
    "excursion": "float64",
    "suite": str,
    "position": "int64",
}


class LedgerError(ValueError):
    """A ledger file that cannot be used (damaged, another format): the message names the file and what to do."""


def context_of(model: str, split: str, split_size: int, template: str, precision: str, seed: int) -> str:
    """The short key of an evaluation context: everything besides the weights, ε and the attack that a verdict
    depends on."""
    text = "|".join(str(v) for v in (model, split, split_size, template, precision, seed))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def read_ledger(path) -> pd.DataFrame:
    """A ledger file as a table (one row per image × attack), checked.

    Raises:
        LedgerError: the file is damaged or is not a ledger; it names the file and what to do.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=_DTYPES, keep_default_na=False)
    except (
        OSError,
        EOFError,
        zlib.error,
        gzip.BadGzipFile,
        UnicodeDecodeError,
        ValueError,
        pd.errors.ParserError,
    ) as err:
        raise LedgerError(
            f"{path} is damaged and cannot be read ({type(err).__name__}: {err}). Nothing was overwritten: move it "
            f"away to evaluate again from scratch (the results rows in results.jsonl keep their numbers)"
        ) from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise LedgerError(
            f"{path} is not a zsr_lab ledger (no column {', '.join(missing)}). Nothing was overwritten: move it "
            f"away, or point the evaluation at another folder"
        )
    return table[list(COLUMNS)]


class Ledger:
    """Per-image verdicts in memory, optionally backed by a file (``None``: in memory only).

    Arguments:
        path: the ledger file (``<out_dir>/ledger.csv.gz``), read when it exists.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path)
        self._entries: dict[tuple, dict[int, tuple]] = {}
        self._pending: list[tuple] = []
        if self.path is not None and self.path.exists():
            for row in read_ledger(self.path).itertuples(index=False):
                self._put(tuple(row))

    def _put(self, row: tuple) -> None:
        weights, context, dataset, index, eps, member, *values = row
        self._entries.setdefault((weights, context, dataset, float(eps), member), {})[int(index)] = tuple(values)

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def weights(self) -> set[str]:
        """The fingerprints of the weights the ledger holds verdicts for."""
        return {key[0] for key in self._entries}

    def add(self, records: Iterable[tuple]) -> None:
        """Record verdicts: tuples in :data:`COLUMNS` order. A verdict already recorded is kept (verdicts are
        deterministic; a second one would be the same)."""
        for row in records:
            weights, context, dataset, index, eps, member = row[:6]
            entry = self._entries.get((weights, context, dataset, float(eps), member), {})
            if int(index) not in entry:
                self._put(row)
                self._pending.append(tuple(row))

    def lookup(
        self, weights: str, context: str, dataset: str, eps: float, member: str, indices: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For each of ``indices``: (outcome, passes, perturbation, excursion); outcome -1 where not recorded."""
        entry = self._entries.get((weights, context, dataset, float(eps), member), {})
        n = len(indices)
        outcome, passes = np.full(n, -1, dtype=np.int8), np.zeros(n, dtype=np.int64)
        perturbation, excursion = np.zeros(n), np.zeros(n)
        for i, index in enumerate(indices):
            found = entry.get(int(index))
            if found is not None:
                outcome[i], passes[i], perturbation[i], excursion[i] = found[:4]
        return outcome, passes, perturbation, excursion

    def members(self, weights: str, context: str, dataset: str, eps: float) -> list[str]:
        """The attacks recorded for these weights, context, dataset and ε, in the order they were first
        recorded."""
        return [k[4] for k in self._entries if k[:4] == (weights, context, dataset, float(eps)) and k[4] != CLEAN]

    def pending(self) -> list[tuple]:
        """Records added since the last :meth:`save` (what another process must be sent)."""
        return list(self._pending)

    def save(self) -> None:
        """Write every record to the file atomically (a temporary file and a rename): an interruption leaves the
        previous ledger whole."""
        if self.path is None or not self._pending:
            self._pending.clear()
            return
        rows = [
            (*key[:3], index, key[3], key[4], *values)
            for key, entry in self._entries.items()
            for index, values in entry.items()
        ]
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = settings.temporary_path(self.path)
        with gzip.open(tmp, "wt", compresslevel=9, newline="") as f:
            table.to_csv(f, index=False)
        os.replace(tmp, self.path)
        self._pending.clear()
