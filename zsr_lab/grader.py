"""A grader for the chapter "Evaluations that lie": does the reader's attack break a defence?

The reader writes an attack ``attack(defence, images, labels) -> adversarial images``; :func:`grade` runs it on a
fixed set of held-out images that the reader does not choose, checks the ε-ball and the [0, 1] box itself, and
passes the attack when the defence's robust accuracy falls to within ``margin`` points of what the undefended
model keeps under a plain PGD-50 on the same images: a defence that adds no robustness is broken once it is no
better than no defence. Everything is seeded, so a grade repeats exactly. A grade is stored under the content
of what decides it (the defence's weights and settings, the attack's source and the values it reads, the
images), so grading the same attack on the same defence again reads it (:mod:`zsr_lab.memo`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import datasets
from .attacks import build_attack
from .classifier import dataset_classifier
from .defences import Defence
from .evaluate import subset
from .memo import remember
from .sanity import accuracy
from .worklog import work

GRADED_SETS = {"classroom": ("fashion_mnist", 8.0, 200), "full": ("cifar10", 4.0, 500)}
EVALUATION_DRAWS = 5  # a randomised defence is scored by its mean accuracy over this many draws


class InvalidAttack(ValueError):
    """The attack's output is not an attack under the grader's threat model (said how and what to do)."""


@dataclass(frozen=True)
class Grade:
    """What :func:`grade` found; ``str(grade)`` is the message for the reader.

    Attributes:
        passed: the defence's robust accuracy is at most ``threshold``.
        robust_accuracy: the defence's accuracy on the attack's images (%, mean over the evaluation draws).
        clean_accuracy: its accuracy on the clean images (%).
        undefended: the undefended model's accuracy under PGD-50 on the same images (%).
        threshold: ``undefended + margin``.
        defence, dataset, eps, n: what was graded (ε in units of 1/255).
        message: what it means, and where to look next when the attack did not get through.
    """

    passed: bool
    robust_accuracy: float
    clean_accuracy: float
    undefended: float
    threshold: float
    defence: str
    dataset: str
    eps: float
    n: int
    message: str

    def __str__(self) -> str:
        return self.message


def graded_images(model, scale: str = "classroom", *, data_root=None, download: bool = False, seed: int = 0):
    """The grader's held-out images and labels at ``scale`` (a fixed random subset of the scale's graded set,
    at the model's input size), with the set's zero-shot classifier installed on ``model``; also returns the
    dataset name and ε (units of 1/255)."""
    if scale not in GRADED_SETS:
        raise ValueError(f"unknown scale {scale!r}; the grader knows {', '.join(GRADED_SETS)}")
    name, eps, n = GRADED_SETS[scale]
    data = subset(
        datasets.load_dataset(
            name, data_root=data_root, image_size=model.image_size[0], download=download, verbose=False
        ),
        n,
        seed,
    )
    images, labels = zip(*(data[i] for i in range(len(data))))
    model.set_classifier(dataset_classifier(model, name))
    return torch.stack(images).to(model.device), torch.tensor(labels).to(model.device), name, eps


def _reseed(defence: Defence, seed: int) -> None:
    torch.manual_seed(seed)
    if isinstance(getattr(defence, "generator", None), torch.Generator):
        defence.generator.manual_seed(seed)


def _check(
    adversarial,
    images: torch.Tensor,
    labels: torch.Tensor,
    kept_images: torch.Tensor,
    kept_labels: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The attack's output as a tensor on the images' device, or :class:`InvalidAttack` saying what is wrong."""
    if not isinstance(adversarial, torch.Tensor):
        raise InvalidAttack(
            f"the attack returned a {type(adversarial).__name__}; it must return the adversarial "
            f"images as one tensor shaped like its input {tuple(images.shape)}"
        )
    if tuple(adversarial.shape) != tuple(images.shape):
        raise InvalidAttack(
            f"the attack returned shape {tuple(adversarial.shape)}; it must return one adversarial "
            f"image per input image, shaped {tuple(images.shape)}"
        )
    if not torch.equal(labels, kept_labels):
        raise InvalidAttack("the attack changed the labels it was given: it may read them, not change them")
    if not torch.equal(images, kept_images):
        raise InvalidAttack("the attack changed the clean images it was given: work on a copy (images.clone())")
    adversarial = adversarial.detach().to(images.device, images.dtype)
    if not torch.isfinite(adversarial).all():
        raise InvalidAttack("the adversarial images contain NaN or infinite values")
    low, high = float(adversarial.min()), float(adversarial.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise InvalidAttack(
            f"pixel values from {low:.4f} to {high:.4f} leave the [0, 1] box: clamp the adversarial "
            "images to [0, 1] after every step"
        )
    moved = (adversarial - images).abs().flatten(1).amax(1)
    outside = (moved > eps / 255 + 1e-6).nonzero().flatten()
    if len(outside):
        first = int(outside[0])
        distance = (adversarial[first : first + 1] - images).abs().flatten(1).amax(1)
        nearest = int(distance.argmin())
        if nearest != first and float(distance[nearest]) <= eps / 255 + 1e-6:
            raise InvalidAttack(
                f"adversarial image {first} is a perturbation of clean image {nearest}: return the "
                "adversarial images in the order of the clean ones"
            )
        raise InvalidAttack(
            f"perturbations leave the ε-ball: {len(outside)} image(s) moved by up to "
            f"{255 * float(moved.max()):.2f}/255 > ε = {eps:g}/255; project onto the ball "
            "(clamp δ to [−ε, ε]) after every step"
        )
    return adversarial


def grade(
    defence: Defence,
    attack: Callable,
    *,
    scale: str = "classroom",
    margin: float = 15.0,
    data_root=None,
    download: bool = False,
    seed: int = 0,
) -> Grade:
    """Run ``attack`` against ``defence`` on the grader's images and say whether it broke the defence.

    Arguments:
        defence: a :class:`zsr_lab.defences.Defence` (its ``model`` is the undefended reference).
        attack: ``attack(defence, images, labels) -> adversarial`` with images in [0, 1], shaped ``[N, C, H, W]``;
            it is called once, with the torch seed (and the defence's own random source) set to ``seed``.
        scale: ``"classroom"`` (Fashion-MNIST, 200 images, ε = 8/255) or ``"full"`` (CIFAR-10, 500 images,
            ε = 4/255).
        margin: points above the undefended model's PGD-50 accuracy that still count as broken.
        data_root, download: where the graded set is, and whether torchvision may download it (full scale).

    Raises:
        InvalidAttack: the output leaves the ε-ball or the box, is not shaped like the input, is out of order,
            or the attack changed its inputs.

    Examples::
        >>> from zsr_lab.defences import SaturatedLogits
        >>> cw = lambda d, x, y: zl.attacks.build_attack(d, "cw-10", 8, n_classes=10)(x, y)
        >>> print(zl.grader.grade(SaturatedLogits(clip), cw))
    """
    images, labels, name, eps = graded_images(defence.model, scale, data_root=data_root, download=download, seed=seed)
    _reseed(defence, seed)  # first, as grading does: the defence's random state before does not matter
    inputs = dict(defence=defence, attack=attack, images=images, labels=labels, margin=margin, seed=seed)
    random_sources = [torch.default_generator, *_generators(defence)]
    with work("evaluating", f"grade {type(defence).__name__}") as record:
        result, record.cached = remember(
            "grade",
            inputs,
            lambda: _grade(defence, attack, images, labels, name, eps, margin, seed),
            random_sources=random_sources,
        )
    return result


def _generators(defence: Defence) -> list[torch.Generator]:
    generator = getattr(defence, "generator", None)
    return [generator] if isinstance(generator, torch.Generator) else []


def undefended_accuracy(model, images: torch.Tensor, labels: torch.Tensor, eps: float, seed: int = 0) -> float:
    """The undefended model's accuracy (%) under PGD-50 at ``eps`` (units of 1/255): the grader's reference.
    Computed once per model, images and ε, then read (every grade of a defence of the same model shares it)."""
    n_classes = model.class_embeddings.shape[0]

    def compute() -> float:
        reference = build_attack(model, "pgd-50", eps, n_classes=n_classes, seed=seed)(images, labels)
        return accuracy(model, reference, labels)

    inputs = dict(model=model, images=images, labels=labels, eps=eps, seed=seed)
    return remember("undefended_pgd50", inputs, compute)[0]


def _grade(defence, attack, images, labels, name: str, eps: float, margin: float, seed: int) -> Grade:
    kept_images, kept_labels = images.clone(), labels.clone()
    _reseed(defence, seed)
    adversarial = _check(attack(defence, images, labels), images, labels, kept_images, kept_labels, eps)
    _reseed(defence, seed)
    undefended = undefended_accuracy(defence.model, images, labels, eps, seed)
    scores = []
    for draw in range(EVALUATION_DRAWS):
        _reseed(defence, seed + 1 + draw)
        scores.append((accuracy(defence, images, labels), accuracy(defence, adversarial, labels)))
    clean, robust = (sum(values) / len(values) for values in zip(*scores))
    threshold = undefended + margin
    passed = robust <= threshold
    what = f"{type(defence).__name__} on {len(images)} {name} images at ε = {eps:g}/255"
    if passed:
        message = (
            f"Broken: {what}, robust accuracy {robust:.1f} % (clean {clean:.1f} %), within {margin:g} "
            f"points of the undefended model under PGD-50 ({undefended:.1f} %)."
        )
    else:
        first = "your attack changed almost no prediction: look at the gradient first. " if robust >= clean - 2 else ""
        message = (
            f"Not broken yet: {what}, robust accuracy is still {robust:.1f} % (clean {clean:.1f} %; pass at "
            f"or below {threshold:.1f} %, the undefended model's {undefended:.1f} % under PGD-50 plus "
            f"{margin:g}). {first.capitalize()}Hint: {defence.hint}."
        )
    return Grade(passed, robust, clean, undefended, threshold, type(defence).__name__, name, eps, len(images), message)
