"""The two scales of the book: one parameter switches every chapter between them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import datasets, scenes, settings
from .models import CLASSROOM_MODEL, CLASSROOM_PRETRAINED, CLASSROOM_SCENES_MODEL, DEFAULT_MODEL, DEFAULT_PRETRAINED
from .protocol import FULL_SCALE_EXAMPLES, Protocol
from .registry import Registry


@dataclass(frozen=True)
class Scale:
    """A scale: which CLIP, which fine-tuning set, which held-out zero-shot evaluation sets.

    Attributes:
        name: ``"classroom"``, ``"scenes"`` (the classroom's objects placed on photos, for where the model looks)
            or ``"full"``.
        model_name, pretrained: the "pre-trained CLIP" (open_clip architecture and tag).
        train_dataset: the fine-tuning set (Tiny-ImageNet at full scale).
        eval_datasets: the zero-shot evaluation sets (the 16-dataset benchmark at full scale).
        image_size: the model's input resolution.
        batch_size: evaluation batch size.
        description: one line for printouts.
        protocol: the default robustness evaluation (worst case over a suite, fixed images per dataset).
        region_datasets: the evaluation sets whose objects have a known place (object masks), on which
            :func:`zsr_lab.measure_attention_localisation` scores where the model looks; empty when none.
    """

    name: str
    model_name: str
    pretrained: str
    train_dataset: str
    eval_datasets: tuple[str, ...]
    image_size: int
    batch_size: int
    description: str
    protocol: Protocol
    region_datasets: tuple[str, ...] = ()

    def examples(self, n: int | None, dataset_names=None, *, data_root=None) -> int | dict | None:
        """``n_examples`` for a protocol on this scale's evaluation sets that draws ``n`` images per dataset and
        takes the splits smaller than ``n`` whole (the classroom's textures and faces), said explicitly per
        dataset so that every row records what it used. ``None``: whole splits."""
        if n is None:
            return None
        names = self.eval_datasets if dataset_names is None else dataset_names
        sizes = {
            name: len(datasets.load_dataset(name, data_root=data_root, image_size=self.image_size, verbose=False))
            for name in names
        }
        return {name: (n if n < size else None) for name, size in sizes.items()}

    def banner(self, model: str | None = None, pretrained: str | None = None) -> str:
        """Which scale, model (the scale's unless given: a run's own) and device a chapter runs at, and how to read
        its numbers."""
        device = settings.default_device()
        lines = [
            f"{self.description}",
            f"model {model or self.model_name} ({pretrained or self.pretrained}) on {device}",
        ]
        if self.name != "full":
            lines.append(
                "Numbers are classroom-scale numbers: they show the phenomena, they do not reproduce "
                "the papers' tables."
            )
            if device.type == "cuda":
                lines.append(
                    f'A GPU is available ({torch.cuda.get_device_name(device)}): set scale = "full" to '
                    f"run this chapter with OpenAI ViT-B/32 on the benchmark datasets."
                )
        elif device.type != "cuda":
            lines.append("No GPU found: full scale runs, but very slowly, on the CPU.")
        return "\n".join(lines)


# The per-image worst case over PGD-10, APGD-CE and APGD-T with 10 iterations each (the full aa costs ~10x more
# on 2 cores and, measured on the classroom CLIP, breaks no more images), and PGD-10 alone beside it. The classroom
# aims APGD-T at the top-3 other classes instead of 9: half the evaluation time, and the same worst case in every
# one of 56 cells measured (the pre-trained CLIP and the six methods' runs, 4 sets, ε = 1 and 4; a test keeps
# checking it). The scenes CLIP lost one image in 200 with 3 targets, so the scenes scale keeps all 9.
CLASSROOM_ATTACKS = ("pgd-10+aa-10:targets=3", "pgd-10")
SCENES_ATTACKS = ("pgd-10+aa-10", "pgd-10")

SCALES: Registry[Scale] = Registry(
    "scale",
    {
        "classroom": Scale(
            "classroom",
            CLASSROOM_MODEL,
            CLASSROOM_PRETRAINED,
            "fashion_mnist_train",
            datasets.CLASSROOM_DATASETS,
            28,
            512,
            "classroom scale: a small CLIP pre-trained by zsr_lab on real offline data, CPU, minutes",
            # 200 images of the two large sets; textures (135) and faces (100) whole
            Protocol(datasets.CLASSROOM_DATASETS, CLASSROOM_ATTACKS, (1.0, 4.0), {"fashion_mnist": 200, "digits": 200}),
        ),
        # objects at a known place: a 56-px CLIP with a 7×7 patch grid, fine-tuned on Fashion-MNIST items placed on
        # photos, evaluated on held-out digits placed on photos (object masks kept), textures and faces
        "scenes": Scale(
            "scenes",
            CLASSROOM_SCENES_MODEL,
            CLASSROOM_PRETRAINED,
            "fashion_scenes_train",
            datasets.SCENE_DATASETS,
            scenes.CANVAS_SIZE,
            512,
            "scenes scale: the classroom's objects placed on photos, a 56-px CLIP pre-trained by zsr_lab, CPU, minutes",
            Protocol(datasets.SCENE_DATASETS, SCENES_ATTACKS, (1.0, 4.0), {"fashion_scenes": 200, "digit_scenes": 200}),
            ("digit_scenes", "fashion_scenes"),
        ),
        "full": Scale(
            "full",
            DEFAULT_MODEL,
            DEFAULT_PRETRAINED,
            "tiny_imagenet_train",
            datasets.BENCHMARK_DATASETS,
            224,
            256,
            "full scale: OpenAI CLIP ViT-B/32, the 16-dataset benchmark, GPU",
            Protocol(datasets.BENCHMARK_DATASETS, ("aa",), (1.0,), FULL_SCALE_EXAMPLES),
            ("oxford_pets",),
        ),  # the pet's pixels, from the dataset's trimaps
    },
)


def get_scale(name: str) -> Scale:
    """The preset for ``"classroom"``, ``"scenes"`` or ``"full"``."""
    return SCALES[name]


def localisation_scale(name: str) -> Scale:
    """The scale at which a chapter run at scale ``name`` asks *where the model looks*: the scenes scale for the
    classroom, whose CLIP sees objects that fill the image through a 4×4 patch grid and so cannot show object
    against background; the scale itself otherwise (full scale: Oxford-IIIT Pets' pet masks)."""
    setup = get_scale(name)
    return get_scale("scenes") if setup.name == "classroom" else setup
