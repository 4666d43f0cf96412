"""The classroom CLIP: a small open_clip model that zsr_lab pre-trains itself, contrastively, on real images.

It plays "pre-trained CLIP" at classroom scale. Images come from the training splits of the four classroom
datasets (Fashion-MNIST, digits, textures, faces; for the 56-px CLIP of the "scenes" scale, Fashion-MNIST items and
digits placed on photos, see :mod:`zsr_lab.scenes`); each image is paired with templated captions of its class
("a black and white photo of a sneaker", "a picture of a handwritten digit seven", ...). Training is CLIP's
symmetric image–text contrastive loss, with one change forced by templated captions: many images in a batch
share a class, so every caption of the image's class counts as a positive (a multi-positive InfoNCE over the
bank of all captions) instead of treating identical captions as negatives. Negated captions ("This is not a
photo of a sneaker") are true of every image of another class; they teach the text tower the "not" that web
captions teach a real CLIP, which Comp-TGA's non-class prompts rely on.

The checkpoint is deterministic given its config and seed, named by a hash of everything that shapes it. The
package ships the checkpoints of its own configs (``classroom_weights/``, 30 MB, saving a first build about
6.5 minutes of pre-training on 2 cores); any other config is pre-trained once and cached under
``<cache>/classroom/``. A slow test retrains the shipped ones and checks that the code still produces them;
``python -m zsr_lab.classroom`` remakes them after a deliberate change (bump ``FORMAT_VERSION``).

The logit scale is fixed at 100, as for the OpenAI weights, so the 100-scaled logits of the protocol mean the same
at both scales.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from . import classroom_data, datasets, scenes, settings
from .models import CLASSROOM_MODEL, CLASSROOM_SCENES_MODEL, create_untrained
from .progress import progress_bar
from .registry import Registry
from .worklog import work

FORMAT_VERSION = 2  # bump when the pre-training code changes what a config produces

CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a black and white photo of a {}",
    "a low resolution photo of a {}",
)
# Negated captions ("not a <class>") describe every image of every *other* class. Web captions teach a real CLIP
# what "not" means; templated captions would not, and Comp-TGA's non-class prompt would then be a copy of the
# class prompt. They only take part in the text→image direction (see multi_positive_clip_loss).
NEGATION_TEMPLATES = ("This is not a photo of a {}", "a picture that is not a {}")
# How a class is named inside the generic captions above, per classroom dataset.
CAPTION_PHRASES = {
    "fashion_mnist": "{}",
    "digits": "handwritten digit {}",
    "textures": "{} texture",
    "faces": "{}",
    "fashion_scenes": "{}",
    "digit_scenes": "handwritten digit {}",
}


@dataclass(frozen=True)
class ClassroomPretrainConfig:
    """Everything that shapes the classroom CLIP checkpoint.

    Attributes:
        model: the open_clip architecture (one of ``models.CLASSROOM_MODELS``).
        steps: optimisation steps (one batch each).
        batch_size: images per step.
        lr: peak AdamW learning rate (linear warm-up, then cosine to 0).
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps spent warming up.
        mixture: how often each dataset is drawn, as ``(name, weight)`` pairs.
        seed: seeds the initial weights and the sampling order.
    """

    model: str = CLASSROOM_MODEL
    steps: int = 700
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    mixture: tuple[tuple[str, float], ...] = (
        ("fashion_mnist", 0.55),
        ("digits", 0.2),
        ("textures", 0.15),
        ("faces", 0.1),
    )
    seed: int = 0

    def cache_key(self) -> str:
        model_cfg = open_clip.get_model_config(self.model)
        key = {
            "config": asdict(self),
            "model": model_cfg,
            "templates": CAPTION_TEMPLATES,
            "negations": NEGATION_TEMPLATES,
            "phrases": CAPTION_PHRASES,
            "version": FORMAT_VERSION,
        }
        # generated training sets change with their generator, not with this config: their recipe joins the key
        generated = {
            name: scenes.scene_config(SCENE_SOURCES[name], "train").cache_key(SCENE_SOURCES[name], "train")
            for name, _ in self.mixture
            if name in SCENE_SOURCES
        }
        if generated:
            key["scenes"] = generated
        blob = json.dumps(key, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class CaptionBank:
    """All captions, tokenised once, with the global class (dataset, label) each one names and whether it negates it."""

    tokens: torch.Tensor
    caption_class: torch.Tensor
    negated: torch.Tensor
    captions: list[str] = field(repr=False)


def captions_for(dataset: str) -> list[list[str]]:
    """For each class of a classroom dataset, its training captions (generic templates + its own template)."""
    spec = datasets.get_spec(dataset)
    phrase = CAPTION_PHRASES[dataset]
    return [
        [t.format(phrase.format(name)) for t in CAPTION_TEMPLATES] + [t.format(name) for t in spec.templates]
        for name in spec.classnames
    ]


def negated_captions_for(dataset: str) -> list[list[str]]:
    """For each class of a classroom dataset, captions that say an image is *not* of that class."""
    spec, phrase = datasets.get_spec(dataset), CAPTION_PHRASES[dataset]
    return [
        list(dict.fromkeys(t.format(n) for t in NEGATION_TEMPLATES for n in (name, phrase.format(name))))
        for name in spec.classnames
    ]


def multi_positive_clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_class: torch.Tensor,
    text_class: torch.Tensor,
    scale: torch.Tensor,
    negated: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE where every (image, text) pair of the same class is a positive.

    Image→text: cross-entropy against the uniform distribution over the captions of the image's class (negated
    captions take no part: an image's caption is what it shows).
    Text→image: the same over the images of the caption's class, for captions whose class is in the batch; for a
    negated caption (``negated`` True) the positives are the images of every *other* class.
    """
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    same = image_class[:, None] == text_class[None, :]
    negated = torch.zeros_like(text_class, dtype=torch.bool) if negated is None else negated
    affirmative = ~negated
    positive = torch.where(negated[None, :], ~same, same).float()
    rows = positive[:, affirmative]
    image_to_text = -(rows / rows.sum(1, keepdim=True) * logits[:, affirmative].log_softmax(1)).sum(1).mean()
    present = positive.sum(0) > 0
    cols = positive[:, present]
    text_to_image = -(cols / cols.sum(0, keepdim=True) * logits[:, present].log_softmax(0)).sum(0).mean()
    return (image_to_text + text_to_image) / 2


# the classroom sets generated by zsr_lab.scenes, and the source their objects come from
SCENE_SOURCES = {"fashion_scenes": "fashion_mnist", "digit_scenes": "digits"}


def _training_split(name: str, data_root):
    """The training split of a classroom dataset, untransformed."""
    root = settings.data_root(data_root)
    splits = {
        "fashion_mnist": lambda: classroom_data.fashion_mnist(root, "train", download=True),
        "fashion_scenes": lambda: scenes.fashion_scenes(root, "train", download=True),
        "digit_scenes": lambda: scenes.digit_scenes("train"),
    }
    return splits[name]() if name in splits else getattr(classroom_data, name)("train")


def _training_images(name: str, data_root, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split of a classroom dataset as grey uint8 images ``[N, S, S]`` and labels: grey and 8-bit
    hold tens of thousands of scenes in a twelfth of the memory of float RGB tensors, and give the same pixels."""
    split = _training_split(name, data_root)
    images = split.images if hasattr(split, "images") else split.data.numpy()  # torchvision's FashionMNIST: .data
    labels = torch.as_tensor(np.asarray(split.labels if hasattr(split, "labels") else split.targets))
    if images.shape[-1] == image_size:
        return torch.from_numpy(np.ascontiguousarray(images)), labels
    split.transform = datasets.build_transform(datasets.get_spec(name), image_size)
    resized, _ = classroom_data.as_tensors(split)
    return (resized[:, 0] * 255).round().to(torch.uint8), labels


def _training_data(config: ClassroomPretrainConfig, data_root, image_size: int):
    """Images, global class ids and per-image sampling weights, plus the caption bank."""
    tokenizer = open_clip.get_tokenizer(config.model)
    images, classes, weights, captions, caption_class, negated = [], [], [], [], [], []
    offset = 0
    for name, weight in config.mixture:
        x, y = _training_images(name, data_root, image_size)
        images.append(x)
        classes.append(y + offset)
        weights.append(torch.full((len(y),), weight / len(y)))
        for is_negated, per_class in ((False, captions_for(name)), (True, negated_captions_for(name))):
            for label, texts in enumerate(per_class):
                captions += texts
                caption_class += [offset + label] * len(texts)
                negated += [is_negated] * len(texts)
        offset += len(datasets.get_spec(name).classnames)
    bank = CaptionBank(tokenizer(captions), torch.tensor(caption_class), torch.tensor(negated), captions)
    return torch.cat(images), torch.cat(classes), torch.cat(weights), bank


# How each classroom architecture is pre-trained: the 56-px CLIP sees objects placed on photos, for 1,000 steps,
# what fits about 4 minutes on 2 cores (700 steps leave digit scenes near 56 %, 1,000 near 76-80 %).
PRETRAINING: Registry[ClassroomPretrainConfig] = Registry(
    "classroom CLIP",
    {
        CLASSROOM_MODEL: ClassroomPretrainConfig(),
        CLASSROOM_SCENES_MODEL: ClassroomPretrainConfig(
            model=CLASSROOM_SCENES_MODEL,
            steps=1000,
            mixture=(("fashion_scenes", 0.55), ("digit_scenes", 0.2), ("textures", 0.15), ("faces", 0.1)),
        ),
    },
)


def pretraining_config(model_name: str = CLASSROOM_MODEL) -> ClassroomPretrainConfig:
    """The pre-training config of a classroom architecture."""
    return PRETRAINING[model_name]


def pretrain_classroom_clip(
    config: ClassroomPretrainConfig = ClassroomPretrainConfig(), *, data_root=None, progress: bool = True
) -> tuple[torch.nn.Module, dict]:
    """Pre-train the classroom CLIP from scratch on CPU; returns the open_clip model and a training record."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_untrained(config.model)
    model.logit_scale.requires_grad_(False)  # fixed at 100, like the OpenAI weights
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    )
    images, classes, weights, bank = _training_data(config, data_root, model.visual.image_size[0])

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, round(config.warmup_fraction * config.steps))

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, config.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    losses = []
    for _ in progress_bar(range(config.steps), desc="pre-training the classroom CLIP", disable=not progress):
        batch = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        pixels = images[batch].float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
        image_emb = model.encode_image((pixels - mean) / std)
        text_emb = model.encode_text(bank.tokens)
        loss = multi_positive_clip_loss(
            image_emb, text_emb, classes[batch], bank.caption_class, model.logit_scale.exp(), bank.negated
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    record = {
        "config": asdict(config),
        "seconds": time.perf_counter() - start,
        "final_loss": losses[-1],
        "first_loss": losses[0],
        "n_images": len(classes),
        "n_captions": len(bank.captions),
    }
    return model, record


SHIPPED_WEIGHTS = Path(__file__).parent / "classroom_weights"
SHIPPED_THREADS = 2  # the shipped files were made on 2 cores: the order of the float sums follows the thread count


def checkpoint_name(config: ClassroomPretrainConfig) -> str:
    """The checkpoint's file name: the architecture and the hash of everything that shapes it."""
    return f"{config.model}-{config.cache_key()}.pt"


def checkpoint_path(config: ClassroomPretrainConfig = ClassroomPretrainConfig(), cache_dir=None) -> Path:
    """Where the cache keeps the checkpoint of this config (whether or not it exists yet)."""
    return settings.cache_dir(cache_dir) / "classroom" / checkpoint_name(config)


def shipped_checkpoint(config: ClassroomPretrainConfig) -> Path | None:
    """The checkpoint of this config that ships with the package, or ``None`` (a config the package does not ship,
    or one whose code changed since the files were made: its hash names another file)."""
    path = SHIPPED_WEIGHTS / checkpoint_name(config)
    return path if path.exists() else None


def pretrained_checkpoint(
    config: ClassroomPretrainConfig = ClassroomPretrainConfig(),
    *,
    cache_dir=None,
    data_root=None,
    progress: bool = True,
    shipped: bool = True,
) -> Path:
    """The checkpoint of the classroom CLIP: the package's own file for this config when it ships one (and
    ``shipped``), else the cached one, pre-trained first if missing (about 2 minutes on 2 CPU cores; the scenes
    CLIP about 4.5)."""
    if shipped and (path := shipped_checkpoint(config)) is not None:
        return path
    path = checkpoint_path(config, cache_dir)
    if not path.exists():
        print(f"No cached classroom CLIP for this config: pre-training it once (cached at {path}).")
        with torch.random.fork_rng(devices=[]), work("pre-training", config.model):
            model, record = pretrain_classroom_clip(config, data_root=data_root, progress=progress)
        settings.atomic_save({"state_dict": model.state_dict(), "record": record}, path)
        print(
            f"Pre-trained in {record['seconds']:.0f} s (contrastive loss {record['first_loss']:.2f} → "
            f"{record['final_loss']:.2f})."
        )
    return path


def ship_checkpoints(*, data_root=None, progress: bool = True) -> list[Path]:
    """Pre-train every config of :data:`PRETRAINING` into the package's ``classroom_weights/`` (on
    ``SHIPPED_THREADS`` threads), removing the files of configs that no longer exist; returns the new files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(SHIPPED_THREADS)
    try:
        made = []
        for config in PRETRAINING.values():
            model, record = pretrain_classroom_clip(config, data_root=data_root, progress=progress)
            path = SHIPPED_WEIGHTS / checkpoint_name(config)
            settings.atomic_save({"state_dict": model.state_dict(), "record": record}, path)
            made.append(path)
    finally:
        torch.set_num_threads(threads)
    for old in set(SHIPPED_WEIGHTS.glob("*.pt")) - set(made):
        old.unlink()
    return made


if __name__ == "__main__":
    for path in ship_checkpoints():
        print(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
