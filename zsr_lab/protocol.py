"""The evaluation protocol as one value: what is attacked, how, on which images.

A :class:`Protocol` is what :func:`zsr_lab.evaluate.evaluate_robustness`, :func:`zsr_lab.fit`, the training job
``book/train_full.ipynb``, the comparison chapter and :mod:`zsr_lab.reported` pass around instead of a dozen
keyword arguments; every result row carries its fields, and result files are keyed by them (and by the weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import datasets
from .attacks import check_eps
from .precision import PRECISIONS
from .suites import STOPPING_RULES, Suite, parse_suite

FULL_SCALE_EXAMPLES = 1000  # images per dataset: the robust-CLIP standard (RobustVLM), as RobustBench subsamples


@dataclass(frozen=True)
class Protocol:
    """How models are evaluated; two models evaluated under equal protocols are judged on the same images.

    Attributes:
        datasets: registry names of the zero-shot sets.
        attacks: suites, each evaluated separately (``"aa"``, ``"pgd-100"``, ``"pgd-100+cw-100+aa"``; see
            :mod:`zsr_lab.suites`); each gives its per-image worst case.
        eps: budgets (ℓ∞ in units of 1/255).
        n_examples: images per dataset, drawn with ``seed`` (the same for every model): an integer, ``None``
            for the whole split, or a mapping dataset → integer or ``None`` (datasets it leaves out take the
            whole split). An integer larger than a split is an error.
        seed: seeds the subset and every attack's randomness.
        precision: forward passes of the clean pass and the attacks (``"fp32"``, ``"bf16"``, ``"fp16"``).
        templates: override every dataset's prompt template(s) (``None``: each dataset's own).
        stopping: ``"any"``: PGD and CW count an image broken at the first misclassified iterate (at least as
            strong, and cheaper); ``"last"``: only the last iterate counts, as the papers report.
        cascade: each suite member attacks only the survivors of the ones before it (AutoAttack's rule); off,
            every member attacks every clean-correct image and its own robust accuracy is reported too.
    """

    datasets: tuple[str, ...]
    attacks: tuple[str, ...] = ("aa",)
    eps: tuple[float, ...] = (1.0,)
    n_examples: int | None | tuple[tuple[str, int | None], ...] = FULL_SCALE_EXAMPLES
    seed: int = 0
    precision: str = "fp32"
    templates: tuple[str, ...] | None = None
    stopping: str = "any"
    cascade: bool = True

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        fix("datasets", _names(self.datasets, "datasets"))
        fix("attacks", _names(self.attacks, "attacks"))
        if isinstance(self.eps, (int, float)):
            fix("eps", (self.eps,))
        for value in self.eps:
            check_eps(value)
        fix("eps", tuple(float(e) for e in self.eps))
        if isinstance(self.n_examples, Mapping):
            fix("n_examples", tuple(sorted(self.n_examples.items())))
        elif isinstance(self.n_examples, list):
            fix("n_examples", tuple(tuple(pair) for pair in self.n_examples))
        if self.templates is not None:
            fix("templates", _names(self.templates, "templates"))
        for name in self.datasets:
            datasets.get_spec(name)  # unknown names fail with a close match
        for text in self.attacks:
            parse_suite(text)
        sizes = self.n_examples if isinstance(self.n_examples, tuple) else (("every dataset", self.n_examples),)
        for name, n in sizes:
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
                raise ValueError(
                    f"n_examples for {name} must be a positive integer or None (the whole split), got {n!r}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.stopping not in STOPPING_RULES:
            raise ValueError(
                f"stopping must be 'any' (first misclassified iterate) or 'last' (the papers' "
                f"last iterate), got {self.stopping!r}"
            )
        if not isinstance(self.cascade, bool):
            raise TypeError(f"cascade must be True or False, got {self.cascade!r}")

    def suites(self) -> list[Suite]:
        return [parse_suite(text) for text in self.attacks]

    def examples_for(self, dataset: str) -> int | None:
        """Images drawn from ``dataset`` (``None``: the whole split)."""
        if isinstance(self.n_examples, tuple):
            return dict(self.n_examples).get(dataset)
        return self.n_examples

    def replace(self, **changes) -> Protocol:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line that says everything a number evaluated under this protocol depends on."""
        if isinstance(self.n_examples, tuple):
            sizes = ", ".join(f"{name}: {'all' if n is None else n}" for name, n in self.n_examples)
            others = "; others all" if set(self.datasets) - {name for name, _ in self.n_examples} else ""
            images = f"images per dataset ({sizes}{others})"
        else:
            images = "the whole split" if self.n_examples is None else f"{self.n_examples:,} images per dataset"
        attacks = "; ".join(s.label if s.label != s.text else f"{s.text} ({s.describe()})" for s in self.suites())
        budgets = ", ".join(f"{e:g}" for e in self.eps)
        return (
            f"{attacks}; ε ∈ {{{budgets}}}/255; {images}, seed {self.seed}; {len(self.datasets)} datasets; "
            f"{self.precision}; {self.stopping}-iterate PGD/CW; "
            f"{'cascade' if self.cascade else 'every member on every image'}"
        )


def _names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


def check_split_sizes(protocol: Protocol, split_sizes: Mapping[str, int]) -> None:
    """Fail, naming the fix, when the protocol asks for more images than a split has."""
    for name, size in split_sizes.items():
        wanted = protocol.examples_for(name)
        if wanted is not None and wanted > size:
            raise ValueError(
                f"n_examples = {wanted} is larger than the split of {name} ({size} images): lower it, "
                f"use None for whole splits, or give per-dataset sizes, e.g. "
                f"n_examples={{'{name}': None, ...}}"
            )
