"""Objects with a known place: classroom images in which the object covers part of the image, with its mask.

Each scene is a grey canvas cut from a real photo that ships with scikit-image (the camera man, the coffee cup,
the moon, the Hubble deep field, ...; never the brick, grass and gravel photos that the textures dataset is
made of), dimmed and reduced in contrast, with one object pasted at a random position and scale: a
Fashion-MNIST item or a scikit-learn digit. The object's pixels form its mask (its silhouette, holes filled),
kept with the scene together with the mask's bounding box, so a measure of where a model looks can be checked
against where the object is (:func:`zsr_lab.measure_attention_localisation`).

Training scenes take their backgrounds from the top three quarters of each photo and test scenes from the
bottom quarter, and their objects from the sources' own training and test splits, so the two never share a
pixel. Scenes are deterministic given their parameters and seed, generated once and cached under
``<cache>/scenes/`` (a few seconds to make).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import classroom_data, settings

FORMAT_VERSION = 1  # bump when the generation code changes what a config produces

# Photos of scikit-image's data module used as backgrounds (the textures dataset's brick, grass and gravel are not).
BACKGROUND_PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "moon",
    "page",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cell",
    "text",
)


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        size: canvas side in pixels (the classroom CLIP's input size).
        n: scenes to draw; each draws an object of the source split (each object once before any repeats).
        object_scale: range of the object's side as a share of the canvas side.
        background_level: range of the background's mean grey level (in [0, 1]).
        background_contrast: range of the factor that scales the background photo's deviations from its mean.
        seed: seeds every random choice.
    """

    size: int
    n: int
    object_scale: tuple[float, float] = (0.55, 0.85)
    background_level: tuple[float, float] = (0.15, 0.45)
    background_contrast: tuple[float, float] = (0.15, 0.5)
    seed: int = 0

    def cache_key(self, source: str, split: str) -> str:
        blob = json.dumps(
            {
                "config": asdict(self),
                "source": source,
                "split": split,
                "photos": BACKGROUND_PHOTOS,
                "version": FORMAT_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class SceneDataset(classroom_data.GreyImageDataset):
    """Grey scenes ``[N, S, S]`` (uint8) with integer labels and each object's mask, served as PIL images.

    Attributes:
        masks: ``[N, S, S]`` bool, True on the object.
        boxes: ``[N, 4]`` the mask's bounding box ``(left, top, right, bottom)``, right and bottom exclusive.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        masks: np.ndarray,
        boxes: np.ndarray,
        classes: list[str],
        transform=None,
    ):
        super().__init__(images, labels, classes, transform)
        self.masks, self.boxes = masks, boxes

    def object_mask(self, index: int, size: int | None = None) -> torch.Tensor:
        """The object's mask of scene ``index`` as a float ``[size, size]`` tensor (the canvas size by default;
        another size resizes it as the image is resized, bilinearly, so edges take fractional values)."""
        mask = self.masks[index]
        if size is None or size == mask.shape[0]:
            return torch.from_numpy(mask.astype(np.float32))
        return torch.from_numpy(_resize(mask, size).clip(0, 1))


def _grey(photo) -> np.ndarray:
    if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity)
        photo = photo[0]
    if photo.ndim == 3:
        photo = photo[..., :3] @ np.array([0.299, 0.587, 0.114])
    return photo.astype(np.uint8)


def background_photos(split: str) -> list[np.ndarray]:
    """The background photos in grey: their top three quarters for ``"train"``, the bottom quarter for ``"test"``."""
    import skimage.data

    classroom_data.check_split(split)
    photos = []
    for name in BACKGROUND_PHOTOS:
        photo = _grey(getattr(skimage.data, name)())
        boundary = photo.shape[0] * 3 // 4
        photos.append(photo[:boundary] if split == "train" else photo[boundary:])
    return photos


def place_objects(
    objects: np.ndarray, labels: np.ndarray, classes: list[str], split: str, config: SceneConfig
) -> SceneDataset:
    """Paste each object onto a background crop at a random position and scale.

    Arguments:
        objects: grey objects on a black background, ``[M, h, w]`` (any range; each is scaled to peak at 1).
        labels: their classes, ``[M]``.
        classes: class names.
        split: ``"train"`` or ``"test"``: which part of the background photos to cut from.
        config: canvas size, number of scenes, ranges and seed.
    """
    from scipy import ndimage

    rng = np.random.default_rng(config.seed)
    photos = background_photos(split)
    size, n = config.size, config.n
    images = np.empty((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), bool)
    boxes = np.empty((n, 4), np.int16)
    # every object once (in random order) before any repeats
    picked = np.concatenate(
        [rng.permutation(len(objects))[:n], rng.integers(0, len(objects), max(0, n - len(objects)))]
    )
    for i, k in enumerate(picked):
        obj = objects[k].astype(np.float32)
        obj /= max(float(obj.max()), 1e-6)
        silhouette = ndimage.binary_fill_holes(obj > 0.08).astype(np.float32)
        photo = photos[rng.integers(len(photos))]
        shortest = min(photo.shape)  # crops of at least the canvas size where the photo allows, up to half the photo
        crop = int(rng.integers(min(size, shortest), max(min(size, shortest), shortest // 2) + 1))
        top, left = rng.integers(0, photo.shape[0] - crop + 1), rng.integers(0, photo.shape[1] - crop + 1)
        background = _resize(photo[top : top + crop, left : left + crop].astype(np.float32) / 255, size)
        contrast = rng.uniform(*config.background_contrast)
        canvas = rng.uniform(*config.background_level) + (background - background.mean()) * contrast
        side = round(size * rng.uniform(*config.object_scale))
        pixels, alpha = _resize(obj, side), _resize(silhouette, side).clip(0, 1)
        y, x = rng.integers(0, size - side + 1, size=2)
        window = canvas[y : y + side, x : x + side]
        window[:] = alpha * pixels + (1 - alpha) * window
        masks[i, y : y + side, x : x + side] = alpha > 0.5
        rows, cols = np.nonzero(masks[i])
        boxes[i] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        images[i] = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    return SceneDataset(images, np.asarray(labels)[picked], masks, boxes, list(classes))


def _resize(array: np.ndarray, side: int) -> np.ndarray:
    """A 2-D array resized bilinearly to ``side × side``, as float32."""
    return np.asarray(
        Image.fromarray(array.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR), dtype=np.float32
    )


def _cached(source: str, split: str, config: SceneConfig, make_objects, cache_dir=None) -> SceneDataset:
    path = (
        settings.cache_dir(cache_dir)
        / "scenes"
        / f"{source}-{split}-{config.size}px-{config.cache_key(source, split)}.npz"
    )
    if path.exists():
        with np.load(path) as stored:
            return SceneDataset(
                stored["images"],
                stored["labels"],
                stored["masks"],
                stored["boxes"],
                [str(c) for c in stored["classes"]],
            )
    objects, labels, classes = make_objects()
    scenes = place_objects(objects, labels, classes, split, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = settings.temporary_path(path)
    with open(temporary, "wb") as handle:
        np.savez_compressed(
            handle,
            images=scenes.images,
            labels=scenes.labels,
            masks=scenes.masks,
            boxes=scenes.boxes,
            classes=np.array(scenes.classes),
        )
    Path(temporary).replace(path)
    return scenes


CANVAS_SIZE = 56  # the classroom CLIP's input size
# How many scenes each split holds: the test splits place every test object once; the training splits draw
# enough scenes for pre-training and fine-tuning (each digit ten times: scikit-learn has only 898 to train on).
SCENE_COUNTS = {
    ("fashion_mnist", "train"): 24_000,
    ("fashion_mnist", "test"): 10_000,
    ("digits", "train"): 8_980,
    ("digits", "test"): 899,
}
_SEEDS = {("fashion_mnist", "train"): 0, ("fashion_mnist", "test"): 1, ("digits", "train"): 2, ("digits", "test"): 3}


def scene_config(source: str, split: str) -> SceneConfig:
    """The registered scenes' configuration for a source (``"fashion_mnist"`` or ``"digits"``) and split."""
    classroom_data.check_split(split)
    return SceneConfig(size=CANVAS_SIZE, n=SCENE_COUNTS[source, split], seed=_SEEDS[source, split])


def fashion_scenes(root, split: str, transform=None, download: bool = False, cache_dir=None) -> SceneDataset:
    """Fashion-MNIST items of ``split`` on photo backgrounds (Fashion-MNIST found as
    :func:`zsr_lab.classroom_data.fashion_mnist` finds it)."""

    def objects():
        source = classroom_data.fashion_mnist(root, split, download=download)
        return source.data.numpy(), source.targets.numpy(), list(source.classes)

    scenes = _cached("fashion_mnist", split, scene_config("fashion_mnist", split), objects, cache_dir)
    scenes.transform = transform
    return scenes


def digit_scenes(split: str, transform=None, cache_dir=None) -> SceneDataset:
    """scikit-learn's digits of ``split`` (8×8, enlarged with the object) on photo backgrounds."""

    def objects():
        source = classroom_data.digits(split)
        return source.images, source.labels, source.classes

    scenes = _cached("digits", split, scene_config("digits", split), objects, cache_dir)
    scenes.transform = transform
    return scenes
