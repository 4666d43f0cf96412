"""The "harden CLIP" challenge: a reader's robust CLIP graded honestly, on images no chapter ever showed.

:func:`grade_model` takes what a reader submits — a weights file of the scale's CLIP, or a model object (a
:class:`~zsr_lab.models.ZeroShotCLIP`, or an inference-time wrapper around one, such as the defences of
:mod:`zsr_lab.defences`) — and

1. evaluates it on held-out images (at classroom scale ``fashion_mnist_heldout`` and ``digits_heldout``: test
   images after the first 500 of the seeded order every book evaluation draws its images from, so no chapter
   ever showed them) under the scale's suite at the challenge's ε, per-image worst case;
2. runs the red flags of :func:`zsr_lab.sanity.red_flags` on the first set's first images; each flag that fires
   adds the adaptive attacks that answer it (:data:`ANSWERS`), and an image counts as robust only if it survives
   the suite and every adaptive attack, in every one of several draws of a model whose answers change;
3. grades TeCoA's recipe of the same scale the same way, on the same images, and compares the two image by image.

A submission **passes** when its clean accuracy is at least the challenge's floor (60 %) and its worst case is
not below TeCoA's 95 % interval; it **beats TeCoA** when McNemar's exact test on the same images says its worst
case is higher. Masking a gradient cannot win: the adaptive attack scores what is left under the mask. The grade's
rows are appended to a class board file (``results.csv`` format) that :class:`zsr_lab.board.Board` reads. Every
step is seeded and stored under the submission's content, so grading the same submission again gives the same row.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import adaptive, settings
from .attacks import build_attack
from .board import BoardError
from .classifier import dataset_classifier
from .datasets import load_dataset
from .engine import fit
from .evaluate import evaluate_robustness, read_results_csv, subset, write_results_csv
from .memo import content_digest, remember
from .models import ZeroShotCLIP
from .pretrained import load_clip
from .protocol import Protocol
from .recipes import recipe
from .sanity import red_flags
from .scales import CLASSROOM_ATTACKS, get_scale
from .suites import parse_suite
from .uncertainty import compare, decode_outcomes, encode_outcomes, stratified_interval, wilson_interval
from .weights import CheckpointError
from .worklog import work


@dataclass(frozen=True)
class Challenge:
    """What a submission is graded on.

    Attributes:
        scale: the scale whose CLIP is fine-tuned (its architecture and input size are required).
        protocol: the held-out sets, the suite, ε (one budget) and the images per set.
        clean_floor: the clean accuracy (%) a submission must keep to pass.
        flag_images: images of the first set the red flags run on.
        square_queries: queries of the red flags' black-box check.
        draws: calls per image for a model whose answers change: robust only if right in all of them.
    """

    scale: str
    protocol: Protocol
    clean_floor: float = 60.0
    flag_images: int = 100
    square_queries: int = 300
    draws: int = 5

    @property
    def eps(self) -> float:
        return float(self.protocol.eps[0])


CHALLENGES = {
    "classroom": Challenge(
        "classroom", Protocol(("fashion_mnist_heldout", "digits_heldout"), CLASSROOM_ATTACKS[:1], (4.0,), 200)
    ),
    "full": Challenge("full", Protocol(("cifar10_heldout", "cifar100_heldout"), ("aa",), (1.0,), 1000)),
}

# each red flag of zsr_lab.sanity.red_flags → the adaptive attacks that answer it
ANSWERS = {
    "the cross-entropy gradient vanishes": ("bpda", "margin"),
    "answers change between two calls on the same images": ("eot",),
    "no collapse": ("margin", "transfer"),
    "a margin loss beats the cross-entropy": ("margin",),
    "a black-box attack beats the white-box one": ("square",),
}
ADAPTIVE_STEPS = 20  # steps of every adaptive PGD (ε/4 each)
EOT_DRAWS = 8
SQUARE_QUERIES = 1000


class SubmissionError(ValueError):
    """A submission the grader cannot grade: the message names what was submitted, what is wrong and what to do."""


@dataclass(frozen=True)
class ChallengeGrade:
    """What :func:`grade_model` found; ``str(grade)`` is the message for the reader.

    Attributes:
        name: the submission's name on the board.
        clean, clean_interval: clean accuracy (%, mean over the sets) and its 95 % interval.
        robust, robust_interval: the graded worst case (suite and adaptive attacks) and its interval.
        face_value, face_value_interval: the worst case over the suite alone, before any adaptive attack.
        red_flags: the flags that fired; adaptive: the adaptive attacks they added.
        tecoa, tecoa_interval: TeCoA's recipe graded the same way on the same images; tecoa_clean,
            tecoa_clean_interval its clean accuracy.
        difference, difference_interval, verdict: the submission's worst case minus TeCoA's, paired (points), and
            the test's verdict; clean_difference, clean_difference_interval, clean_verdict: the same for clean
            accuracy.
        passed, beats_tecoa: the two levels.
        rows: the per-set result rows, as the board file holds them.
    """

    name: str
    clean: float
    clean_interval: tuple[float, float]
    robust: float
    robust_interval: tuple[float, float]
    face_value: float
    face_value_interval: tuple[float, float]
    red_flags: tuple[str, ...]
    adaptive: tuple[str, ...]
    tecoa: float
    tecoa_interval: tuple[float, float]
    tecoa_clean: float
    tecoa_clean_interval: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    verdict: str
    clean_difference: float
    clean_difference_interval: tuple[float, float]
    clean_verdict: str
    passed: bool
    beats_tecoa: bool
    challenge: Challenge
    rows: pd.DataFrame = dataclasses.field(repr=False)

    def __str__(self) -> str:
        eps = f"{self.challenge.eps:g}/255"
        sets = " and ".join(self.challenge.protocol.datasets)
        n = self.challenge.protocol.n_examples
        lines = [
            f"{self.name}: clean {_percent(self.clean, self.clean_interval)}, worst case at ε = {eps} "
            f"{_percent(self.robust, self.robust_interval)} ({sets}, {n} images each, {self.challenge.scale} scale)",
        ]
        if self.red_flags:
            lines.append(
                f"Red flags: {'; '.join(self.red_flags)}. Adaptive attacks run: {', '.join(self.adaptive)}; "
                f"the suite alone left {_percent(self.face_value, self.face_value_interval)}, the number that "
                f"counts is {_percent(self.robust, self.robust_interval)}."
            )
        lines.append(
            f"TeCoA's recipe on the same images: clean {_percent(self.tecoa_clean, self.tecoa_clean_interval)} "
            f"(difference {_points(self.clean_difference, self.clean_difference_interval)}, paired: "
            f"{self.clean_verdict}), worst case {_percent(self.tecoa, self.tecoa_interval)} (difference "
            f"{_points(self.difference, self.difference_interval)}, paired: {self.verdict})."
        )
        if self.beats_tecoa:
            lines.append("Beats TeCoA: passed, and significantly above TeCoA's worst case.")
        elif self.passed:
            lines.append("Passed: clean accuracy kept, worst case not below TeCoA's interval (not shown to beat it).")
        else:
            why = []
            if self.clean < self.challenge.clean_floor:
                why.append(f"clean accuracy {self.clean:.1f} % is below {self.challenge.clean_floor:g} %")
            if self.robust < self.tecoa_interval[0]:
                why.append(f"the worst case is below TeCoA's interval (from {self.tecoa_interval[0]:.1f} %)")
            lines.append(f"Not passed: {'; '.join(why)}.")
        return "\n".join(lines)


def _percent(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.1f} % [{interval[0]:.1f}, {interval[1]:.1f}]"


def _points(difference: float, interval: tuple[float, float]) -> str:
    low, high = interval
    return f"{difference:+.1f} [{low:+.1f}, {high:+.1f}] points"


# ---- the submission ----------------------------------------------------------------------------------------------


class Submission(nn.Module):
    """A submitted model as the evaluation engine takes it: the submission's outputs, keyed by its own content (a
    wrapper's results are never filed under the CLIP it wraps); what the submission does not have (the text tower,
    ``set_classifier``, ...) is the CLIP's inside it.

    Arguments:
        model: the submission (a :class:`ZeroShotCLIP`, or a module with one inside).
        label: what its rows name as their ``pretrained`` source.
    """

    def __init__(self, model: nn.Module, label: str):
        super().__init__()
        self.model = model
        self.__dict__["inner"] = _clip_inside(model)  # not a submodule: its parameters are the submission's
        self.label = label
        self.fingerprint = submission_fingerprint(model)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
        for source in (self.model, self.__dict__["inner"]):
            try:
                return getattr(source, name)
            except AttributeError:
                continue
        raise AttributeError(f"neither the submission nor the CLIP inside it has {name!r}")

    @property
    def pretrained(self) -> str:
        return self.label

    def weights_fingerprint(self) -> str:
        return self.fingerprint

    def content_fingerprint(self) -> str:
        return content_digest([self.fingerprint, self.class_embeddings])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def _clip_inside(model: nn.Module) -> ZeroShotCLIP | None:
    return next((m for m in model.modules() if isinstance(m, ZeroShotCLIP)), None)


def submission_fingerprint(model: nn.Module) -> str:
    """A hash of what decides a submission's outputs besides its classifier: a CLIP's weights; for a wrapper, its
    class and source, its settings, its random source's state, its own tensors and the weights of the CLIPs inside.
    """
    if isinstance(model, ZeroShotCLIP):
        return model.weights_fingerprint()
    clips = {name: m.weights_fingerprint() for name, m in model.named_modules() if isinstance(m, ZeroShotCLIP)}
    own = {
        key: value for key, value in model.state_dict().items() if not any(key.startswith(f"{name}.") for name in clips)
    }
    plain = (bool, int, float, str, tuple)
    values = {k: v for k, v in vars(model).items() if not k.startswith("_") and isinstance(v, plain)}
    generators = [v.get_state() for v in vars(model).values() if isinstance(v, torch.Generator)]
    try:
        source = inspect.getsource(type(model))
    except (OSError, TypeError):  # defined in a notebook cell or the console
        source = type(model).__qualname__
    return content_digest([type(model).__module__, type(model).__qualname__, source, values, generators, own, clips])[
        :16
    ]


def _reseed(model: nn.Module, seed: int) -> None:
    """Seed torch and every random source of the submission, so that grading starts from the same state."""
    torch.manual_seed(seed)
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Generator):
                value.manual_seed(seed)


def _as_model(submission, challenge: Challenge, name: str | None) -> tuple[nn.Module, str, str]:
    """(the model, its name, its label) from a weights file or a model object, or :class:`SubmissionError`."""
    setup = get_scale(challenge.scale)
    if isinstance(submission, (str, os.PathLike)):
        path = Path(submission).expanduser()
        if not path.is_file():
            raise SubmissionError(
                f"{path}: no such weights file. Submit the weights.pt of your run folder "
                f"(zl.fit(...).run_dir / 'weights.pt'), or the model object itself"
            )
        try:
            model = load_clip(setup.model_name, str(path))
        except (CheckpointError, RuntimeError, ValueError, KeyError) as error:
            raise SubmissionError(
                f"{path}: not weights of the {setup.model_name} CLIP that the {challenge.scale} challenge grades "
                f"({error}). Fine-tune zl.load_clip({setup.model_name!r}, {setup.pretrained!r}) and submit its "
                f"weights.pt"
            ) from None
        return model, name or path.parent.name or path.stem, str(path)
    if isinstance(submission, Mapping):
        raise SubmissionError(
            f"a {type(submission).__name__} of {len(submission)} entries is not a submission: save a state dict with "
            f"torch.save(state_dict, 'weights.pt') and submit the path, or submit the model object"
        )
    inner = _clip_inside(submission) if isinstance(submission, nn.Module) else None
    if inner is None:
        raise SubmissionError(
            f"a {type(submission).__name__} is not a submission: submit a weights file (a path), a ZeroShotCLIP, "
            f"or an nn.Module with one inside (images in [0, 1] → logits, e.g. a zl.defences.Defence)"
        )
    size = inner.image_size[0]
    if inner.model_name != setup.model_name or size != setup.image_size:
        raise SubmissionError(
            f"the submitted {type(submission).__name__} holds a {inner.model_name} CLIP that takes {size}-px images; "
            f"the {challenge.scale} challenge grades the {setup.model_name} CLIP ({setup.image_size}-px images): "
            f"fine-tune zl.load_clip({setup.model_name!r}, {setup.pretrained!r})"
        )
    label = f"{type(submission).__name__} object"
    return submission, name or type(submission).__name__, label


def _check_outputs(model: nn.Module, images: torch.Tensor, n_classes: int) -> None:
    with torch.no_grad():
        outputs = model(images[:2])
    if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != (len(images[:2]), n_classes):
        shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise SubmissionError(
            f"the submission returned {shape} for {len(images[:2])} images; it must return one logit per class, "
            f"shaped ({len(images[:2])}, {n_classes}), from images in [0, 1]"
        )


# ---- grading -----------------------------------------------------------------------------------------------------


def challenge_images(model: nn.Module, challenge: Challenge, dataset: str, *, data_root=None, download=False):
    """The challenge's images of ``dataset`` (the protocol's subset of the held-out split) and their labels, on the
    model's device, with the set's zero-shot classifier installed on ``model``."""
    size = get_scale(challenge.scale).image_size
    data = load_dataset(dataset, data_root=data_root, image_size=size, download=download, verbose=False)
    data = subset(data, challenge.protocol.examples_for(dataset), challenge.protocol.seed)
    images, labels = zip(*(data[i] for i in range(len(data))))
    model.set_classifier(dataset_classifier(model, dataset))
    return torch.stack(images).to(model.device), torch.tensor(labels).to(model.device)


class StraightThrough(nn.Module):
    """BPDA as a model: the outputs of ``behind(transform(x))``, the gradient of ``behind`` at the transformed
    image passed straight through the transform, so that any attack (the whole suite) runs through it."""

    def __init__(self, behind: nn.Module, transform):
        super().__init__()
        self.behind, self.transform = behind, transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.behind(images + (self.transform(images) - images).detach())


@torch.no_grad()
def _survive(model, adversarial, labels, draws: int) -> torch.Tensor:
    """Which images the model classifies right in each of ``draws`` calls on the adversarial images."""
    kept = torch.ones_like(labels, dtype=torch.bool)
    for _ in range(draws):
        kept &= model(adversarial).argmax(1) == labels
    return kept


def _adaptive_survivors(model, attacks, members, images, labels, eps, n_classes, draws, seed) -> torch.Tensor:
    """Which images stay right under every adaptive attack in ``attacks``, in each of ``draws`` calls."""
    kept = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    for name in attacks:
        torch.manual_seed(seed)
        if name == "bpda":  # the suite itself, through the straight-through view
            view = StraightThrough(getattr(model.model, "model", model.inner), model.model.transform)
            for member in members:
                attack = build_attack(view, member, eps, n_classes=n_classes, seed=seed)
                kept &= _survive(model, attack(images, labels), labels, draws)
            continue
        elif name == "eot":
            adversarial = adaptive.eot(model, images, labels, eps=eps, draws=EOT_DRAWS, steps=ADAPTIVE_STEPS)
        elif name == "margin":
            adversarial = adaptive.margin(model, images, labels, eps=eps, steps=ADAPTIVE_STEPS)
        elif name == "transfer":  # the margin attack on the CLIP a wrapper wraps, transferred to the wrapper
            if model.model is model.inner:
                continue
            adversarial = adaptive.margin(model.inner, images, labels, eps=eps, steps=ADAPTIVE_STEPS)
        else:  # square
            attack = build_attack(model, f"square-{SQUARE_QUERIES}", eps, n_classes=n_classes, seed=seed)
            adversarial = attack(images, labels)
        kept &= _survive(model, adversarial, labels, draws)
    return kept


def _graded_rows(model: Submission, challenge: Challenge, *, data_root, download, seed: int = 0):
    """The engine's rows of the submission, with its red flags, the adaptive attacks they add and the worst case
    over suite and adaptive attacks in place of the suite's own (the suite's kept as ``face_value``)."""
    protocol = challenge.protocol
    folder = settings.cache_dir() / "challenge" / challenge.scale
    _reseed(model, seed)
    table = evaluate_robustness(model, protocol, data_root=data_root, download=download, out_dir=folder, progress=False)
    first = protocol.datasets[0]
    images, labels = challenge_images(model, challenge, first, data_root=data_root, download=download)
    n_classes = model.class_embeddings.shape[0]
    _reseed(model, seed)
    flags = red_flags(
        model,
        images[: challenge.flag_images],
        labels[: challenge.flag_images],
        eps=challenge.eps,
        n_classes=n_classes,
        square_queries=challenge.square_queries,
        seed=seed,
    )
    fired = tuple(flags.loc[flags["fired"], "flag"])
    # BPDA needs a transform to differentiate through; without one, the gradient-free Square attack
    transformed = hasattr(model.model, "transform")
    answers = [a for flag in fired for key, answer in ANSWERS.items() if flag.startswith(key) for a in answer]
    attacks = tuple(dict.fromkeys(a if a != "bpda" or transformed else "square" for a in answers))
    randomised = any(flag.startswith("answers change") for flag in fired)
    members = parse_suite(protocol.attacks[0]).members_for(n_classes)
    rows = []
    for row in table.to_dict("records"):
        row = dict(row, face_value=row["robust_accuracy"], red_flags="; ".join(fired), adaptive="; ".join(attacks))
        if attacks:
            images, labels = challenge_images(model, challenge, row["dataset"], data_root=data_root, download=download)
            robust = decode_outcomes(row["robust_outcomes"], row["n"])
            still = torch.from_numpy(robust).to(labels.device)

            def compute(images=images, labels=labels, still=still):
                _reseed(model, seed)
                kept = still.clone()
                if still.any():
                    draws = challenge.draws if randomised else 1
                    kept[still] = _adaptive_survivors(
                        model, attacks, members, images[still], labels[still], challenge.eps, n_classes, draws, seed
                    )
                return kept.cpu().numpy()

            inputs = dict(
                model=model,
                images=images,
                labels=labels,
                still=still,
                attacks=attacks,
                suite=protocol.attacks,
                seed=seed,
            )
            with work("evaluating", f"adaptive attacks on {row['dataset']}") as record:
                kept, record.cached = remember("challenge_adaptive", dict(inputs, draws=challenge.draws), compute)
            worst = decode_outcomes(row["worst_case_outcomes"], row["n"]) & kept
            for column, outcomes in (("robust", kept), ("worst_case", worst)):  # both now count the adaptive breaks
                low, high = wilson_interval(outcomes.sum(), row["n"])
                row.update(
                    {
                        f"{column}_accuracy": 100.0 * outcomes.sum() / row["n"],
                        f"{column}_low": float(low),
                        f"{column}_high": float(high),
                        f"{column}_outcomes": encode_outcomes(outcomes),
                    }
                )
        rows.append(row)
    return pd.DataFrame(rows)


def grade_model(
    submission,
    *,
    scale: str = "classroom",
    name: str | None = None,
    board_file=None,
    data_root=None,
    download: bool = False,
    baseline=None,
    challenge: Challenge | None = None,
) -> ChallengeGrade:
    """Grade a submission to the "harden CLIP" challenge and add it to the class board.

    Arguments:
        submission: a weights file of the scale's CLIP (a run's ``weights.pt``, or any checkpoint
            :func:`zsr_lab.load_clip` reads), a :class:`~zsr_lab.models.ZeroShotCLIP`, or an ``nn.Module`` with one
            inside (images in [0, 1] → logits, e.g. a :class:`zsr_lab.defences.Defence`; what it lacks, such as the
            text tower and ``set_classifier``, is the CLIP's).
        scale: ``"classroom"`` (held-out Fashion-MNIST and digits, 200 images each, the classroom suite at 4/255)
            or ``"full"`` (held-out CIFAR-10 and CIFAR-100, 1,000 each, AutoAttack at 1/255).
        name: the submission's name on the board (default: its run folder, or its class).
        board_file: the class board (a ``.csv``); default ``challenge/<scale>/board.csv`` in the zsr_lab cache.
        baseline: the model to beat (default: TeCoA's recipe at ``scale``, trained once and cached: a minute at
            classroom scale, hours on a GPU at full scale, as ``book/train_full.ipynb`` trains it).
        challenge: the rules (default :data:`CHALLENGES` of ``scale``); tests grade on fewer images.

    Returns:
        A :class:`ChallengeGrade`; its rows (and TeCoA's, once) are appended to ``board_file``.

    Raises:
        SubmissionError: a file that is not weights of the scale's CLIP, another architecture or input size, an
            object that is not a model, or outputs of the wrong shape; the message names it and what to do.

    Examples::
        >>> run = zl.fit(zl.Runs("classroom").recipe("tecoa", "tecoa_eps6", eps=6))
        >>> print(zl.grade_model(run.run_dir / "weights.pt"))
    """
    challenge = challenge or CHALLENGES.get(scale)
    if challenge is None:
        raise ValueError(f"unknown scale {scale!r}; the challenge runs at {', '.join(CHALLENGES)}")
    model, name, label = _as_model(submission, challenge, name)
    _reseed(model, 0)  # a randomised submission's fingerprint holds its random state: always the seeded one
    graded = Submission(model, label)
    first = challenge.protocol.datasets[0]
    images, _ = challenge_images(graded, challenge, first, data_root=data_root, download=download)
    _check_outputs(graded, images, graded.class_embeddings.shape[0])
    with work("evaluating", f"challenge: {name}"):
        rows = _graded_rows(graded, challenge, data_root=data_root, download=download).assign(method=name)
        if baseline is None:
            baseline = fit(recipe("tecoa", challenge.scale, data_root=data_root, download=download), progress=False)
            baseline = baseline.model
        _reseed(baseline, 0)
        reference = Submission(baseline, "TeCoA's recipe")
        tecoa = _graded_rows(reference, challenge, data_root=data_root, download=download).assign(
            method="TeCoA (recipe)"
        )
    clean = stratified_interval(rows["clean_accuracy"], rows["n"])
    robust = stratified_interval(rows["robust_accuracy"], rows["n"])
    face = stratified_interval(rows["face_value"], rows["n"])
    base = stratified_interval(tecoa["robust_accuracy"], tecoa["n"])
    base_clean = stratified_interval(tecoa["clean_accuracy"], tecoa["n"])
    paired = compare(rows, tecoa, names=("submission", "TeCoA")).set_index("measure")
    paired, paired_clean = paired.loc["robust"], paired.loc["clean"]
    passed = clean[0] >= challenge.clean_floor and robust[0] >= base[1]
    beats = passed and paired["verdict"] == "submission higher"
    fired = tuple(f for f in rows["red_flags"].iloc[0].split("; ") if f)
    grade = ChallengeGrade(
        name=name,
        clean=clean[0],
        clean_interval=clean[1:],
        robust=robust[0],
        robust_interval=robust[1:],
        face_value=face[0],
        face_value_interval=face[1:],
        red_flags=fired,
        adaptive=tuple(a for a in rows["adaptive"].iloc[0].split("; ") if a),
        tecoa=base[0],
        tecoa_interval=base[1:],
        tecoa_clean=base_clean[0],
        tecoa_clean_interval=base_clean[1:],
        difference=float(paired["difference"]),
        difference_interval=(float(paired["low"]), float(paired["high"])),
        verdict=str(paired["verdict"]),
        clean_difference=float(paired_clean["difference"]),
        clean_difference_interval=(float(paired_clean["low"]), float(paired_clean["high"])),
        clean_verdict=str(paired_clean["verdict"]),
        passed=bool(passed),
        beats_tecoa=bool(beats),
        challenge=challenge,
        rows=rows.assign(passed=passed, beats_tecoa=beats),
    )
    tecoa_passed = grade.tecoa_clean >= challenge.clean_floor
    tables = [tecoa.assign(passed=tecoa_passed, beats_tecoa=False), grade.rows]
    append_to_board(board_path(challenge.scale, board_file), tables)
    return grade


def board_path(scale: str = "classroom", board_file=None) -> Path:
    """The class board file :func:`grade_model` appends to: ``board_file``, or ``challenge/<scale>/board.csv`` in
    the zsr_lab cache."""
    return (
        Path(board_file).expanduser()
        if board_file is not None
        else settings.cache_dir() / "challenge" / scale / "board.csv"
    )


def append_to_board(path, tables) -> Path:
    """Append result rows to a class board file, each weights × set once (a row already there is kept), written
    whole to a temporary file and moved into place, so an interruption never leaves half a board."""
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"{path}: a class board file is a .csv (the results.csv format the board reads)")
    old = read_results_csv(path) if path.exists() else pd.DataFrame()
    board = pd.concat([old, *tables], ignore_index=True)
    key = ["weights", "dataset", "attack", "eps"]
    spread = board.groupby(key)[["clean_accuracy", "robust_accuracy"]].agg(lambda v: v.max() - v.min())
    if (spread > 1e-9).any().any():
        weights = spread[(spread > 1e-9).any(axis=1)].index[0][0]
        raise BoardError(
            f"{path}: already holds another grade of the weights {weights} with other numbers (graded by another "
            f"version of zsr_lab?); nothing was written: grade into a new board file, or remove the old rows"
        )
    board = board.drop_duplicates(key, keep="first")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = settings.temporary_path(path)
    write_results_csv(board, temporary)
    os.replace(temporary, path)
    return path
