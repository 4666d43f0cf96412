"""CLIP models at both scales, wrapped as zero-shot classifiers over [0,1] images.

Every method in zsr_lab talks to CLIP through :class:`ZeroShotCLIP`: it takes images in [0,1] pixel space
(where attacks and ε live), resizes and normalises *inside*, and returns the image embedding, the
100-scaled zero-shot logits against a class-embedding matrix, and all last-layer tokens projected into the
joint space (what the text-guided attention methods need), all from one forward pass of the image tower.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from . import settings
from .weights import NORMALIZATIONS, PUBLISHED, load_weights, looks_like_file, published_file, read_weights

DEFAULT_MODEL = "ViT-B-32-quickgelu"
DEFAULT_PRETRAINED = "openai"
CLASSROOM_MODEL = "zsr-classroom-vit"
# a 56-px CLIP whose 7×7 patch grid can tell an object from its background (the "scenes" scale)
CLASSROOM_SCENES_MODEL = "zsr-classroom-scenes-vit"
CLASSROOM_MODELS = (CLASSROOM_MODEL, CLASSROOM_SCENES_MODEL)
CLASSROOM_PRETRAINED = "zsr_lab"  # the tag of the checkpoints zsr_lab pre-trains itself

# Make the classroom architectures first-class open_clip models.
open_clip.add_model_config(Path(__file__).parent / "model_configs")


class WeightsUnavailableError(RuntimeError):
    """Pretrained CLIP weights could not be fetched (offline machine, hub unreachable, unknown tag)."""


@dataclass
class ImageFeatures:
    """What one forward pass of the image tower gives.

    Attributes:
        embedding: pooled image embedding in the joint space, unnormalised, ``[B, d]``.
        tokens: the pooled (CLS) embedding followed by every patch token after ``ln_post``, projected into
            the joint space, ``[B, 1 + P, d]`` (P = 49 for ViT-B/32 at 224).
    """

    embedding: torch.Tensor
    tokens: torch.Tensor


class ZeroShotCLIP(nn.Module):
    """An open_clip CLIP model used as a zero-shot classifier over [0,1] images.

    Arguments:
        clip: an open_clip ``CLIP`` model.
        tokenizer: its tokenizer (``open_clip.get_tokenizer``).
        model_name: open_clip architecture name, recorded in every result.
        pretrained: pretrained tag (or checkpoint file), recorded in every result.
        mean, std: normalisation statistics of the pretrained model (CLIP's own, not ImageNet's).
        resize_mode: interpolation used when images do not come at the model's resolution
            (``"bicubic"``, as TeCoA and FARE upsample CIFAR/STL inside the model).

    Shape:
        - Input: ``[B, 3, H, W]`` in [0, 1] (``[B, 1, H, W]`` grey images are repeated to 3 channels).
        - Output of ``forward``: ``[B, C]`` logits, ``C`` = rows of the class-embedding matrix.

    Examples::

        >>> clip = load_clip("ViT-B-32-quickgelu", "openai")
        >>> clip.set_classifier(zero_shot_classifier(clip, ["cat", "dog"], ["This is a photo of a {}"]))
        >>> clip(images).argmax(1)
    """

    def __init__(self, clip: nn.Module, tokenizer, *, model_name: str, pretrained: str | None,
                 mean: Sequence[float], std: Sequence[float], resize_mode: str = "bicubic"):
        super().__init__()
        self.clip = clip
        self.clip.visual.output_tokens = True  # one pass returns pooled embedding and patch tokens
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.pretrained = pretrained
        self.resize_mode = resize_mode
        self.image_size = tuple(clip.visual.image_size)
        device = clip.logit_scale.device  # buffers live where the model lives
        # Not named mean/std: torchattacks reads model.mean/std and would then normalise a second time.
        self.register_buffer("pixel_mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("class_embeddings", torch.empty(0, self.embed_dim, device=device), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) of the model: 100 for the OpenAI weights and for the classroom CLIP."""
        return self.clip.logit_scale.exp()

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images → resized, normalised model input (differentiable, so attacks see through it)."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape [B, 3, H, W] (or [B, 1, H, W]) in [0, 1], "
                             f"got {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode=self.resize_mode, align_corners=False)
        return (images - self.pixel_mean) / self.pixel_std

    def encode_image_tokens(self, images: torch.Tensor) -> ImageFeatures:
        """Pooled embedding and all projected last-layer tokens of [0,1] images, in one forward pass."""
        pooled, patches = self.clip.visual(self.preprocess(images))
        # open_clip returns patch tokens after ln_post but unprojected: map them into the joint space.
        tokens = torch.cat([pooled.unsqueeze(1), patches @ self.clip.visual.proj], dim=1)
        return ImageFeatures(embedding=pooled, tokens=tokens)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embedding of [0,1] images, ``[B, d]`` (unnormalised unless ``normalize``)."""
        pooled, _ = self.clip.visual(self.preprocess(images))
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Text embeddings of a list of strings, ``[len(texts), d]``."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        embedding = self.clip.encode_text(tokens)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def set_classifier(self, class_embeddings: torch.Tensor) -> "ZeroShotCLIP":
        """Use these L2-normalised class embeddings (``[C, d]``) as the zero-shot classifier."""
        if class_embeddings.dim() != 2 or class_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"class embeddings must have shape [C, {self.embed_dim}], "
                             f"got {tuple(class_embeddings.shape)}")
        self.class_embeddings = class_embeddings.detach().to(self.device, torch.float32)
        return self

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """``logit_scale · norm(embedding) · Tᵀ`` against the current classifier."""
        if self.class_embeddings.shape[0] == 0:
            raise RuntimeError("no classifier set: call set_classifier(zero_shot_classifier(...)) first")
        weights = self.class_embeddings.to(embedding.dtype)
        return self.logit_scale.to(embedding.dtype) * F.normalize(embedding, dim=-1) @ weights.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode_image(images))

    def weights_fingerprint(self) -> str:
        """A hash of every weight and buffer of the CLIP model and of the input normalisation: results are keyed
        by it, so new weights saved at the same path are never mistaken for the old ones."""
        digest = hashlib.blake2b(digest_size=8)
        tensors = [*self.clip.state_dict().items(), ("pixel_mean", self.pixel_mean), ("pixel_std", self.pixel_std)]
        for name, tensor in tensors:
            digest.update(name.encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def text_fingerprint(self) -> str:
        """A hash of the text-tower weights, so cached classifiers follow a tuned text side."""
        digest = hashlib.blake2b(digest_size=8)
        for name, param in self.clip.named_parameters():
            if name.startswith("visual.") or name.startswith("logit_"):
                continue
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()


def model_image_size(model_name: str) -> int:
    """The input resolution of an open_clip architecture (without building the model); for a hub model whose
    config cannot be fetched (offline), 224, the size of every published robust CLIP."""
    try:
        config = open_clip.get_model_config(model_name)
    except (OSError, ValueError, RuntimeError):  # hf-hub: offline; loading the model then says what to do
        config = None
    if config is None:
        return 224
    size = config["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def load_clip(model_name: str = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED, *,
              device: str | torch.device | None = None, cache_dir: str | os.PathLike | None = None,
              resize_mode: str = "bicubic", base: str | None = None, normalization: str | None = None,
              allow_pickle: bool = False) -> ZeroShotCLIP:
    """Load an open_clip model with its pretrained weights as a :class:`ZeroShotCLIP`.

    Arguments:
        model_name: any open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32-quickgelu"``, or
            ``"zsr-classroom-vit"`` for the classroom CLIP; or a model stored with its config: ``"hf-hub:org/name"``
            (e.g. ``"hf-hub:chs20/FARE4-ViT-B-32-laion2B-s34B-b79K"``) or ``"local-dir:path"`` (a folder written
            by :func:`zsr_lab.export_encoder`).
        pretrained: an open_clip tag (``"openai"``); a published robust checkpoint by name
            (:data:`zsr_lab.weights.PUBLISHED`, e.g. ``"robustvlm-fare-eps1"``, downloaded once); a checkpoint file
            in any layout :func:`zsr_lab.weights.read_weights` knows (whole CLIP, or the image tower alone, as the
            official training code of TeCoA, PMG-AFT and TGA-ZSR saves it); ``"zsr_lab"`` for the classroom CLIP
            (pre-trained and cached on first use); ``None`` for random weights (same FLOPs, for benchmarks).
        device: where to put the model (default: CUDA when available).
        cache_dir: zsr_lab cache (classroom checkpoint, published checkpoints); open_clip keeps its own hub cache.
        base: the tag whose text tower completes a file holding the image tower alone (default: ``"openai"``
            where the architecture has it, the classroom CLIP's for the classroom architecture).
        normalization: ``"clip"`` or ``"imagenet"``: the input statistics the weights were trained with (default:
            those recorded in the file (zsr_lab's ``weights.pt``), a published checkpoint's as registered, else the
            architecture's own). PMG-AFT's official code trains with ImageNet's.
        allow_pickle: let torch run code stored in a checkpoint file (only for files from a source you trust).

    Raises:
        WeightsUnavailableError: the weights cannot be fetched (offline); the message says what to do.
        FileNotFoundError: a checkpoint path that does not exist.
        CheckpointError: a damaged file or an unknown layout, with what the file holds.
        ValueError: unknown architecture, published tag for another architecture, unknown normalization.
    """
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    stored = model_name.startswith(("hf-hub:", "local-dir:"))
    if not stored and model_name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP architecture {model_name!r}; choose one of open_clip.list_models(), "
                         f"e.g. {DEFAULT_MODEL!r} (full scale) or {CLASSROOM_MODEL!r} (classroom scale), or a "
                         f"stored model 'hf-hub:org/name' or 'local-dir:path'")
    device = torch.device(device) if device is not None else settings.default_device()
    weights_file, recorded = None, None
    if pretrained in PUBLISHED:
        entry = PUBLISHED[pretrained]
        if model_name != entry.model:
            raise ValueError(f"{pretrained!r} is a checkpoint of {entry.model!r}, not of {model_name!r}")
        base = base or entry.base
        normalization = normalization or entry.normalization
        try:
            weights_file = published_file(pretrained, cache_dir=cache_dir)
        except OSError as err:
            raise WeightsUnavailableError(str(err)) from err
    elif pretrained is not None and not stored and (looks_like_file(pretrained) or Path(pretrained).is_file()):
        weights_file = Path(pretrained).expanduser()
    if stored:
        clip = _create(model_name, None, device, pretrained=pretrained)
    elif weights_file is not None:
        found = read_weights(weights_file, allow_pickle=allow_pickle)  # a bad file fails before any download
        if found.kind == "visual":
            base = base or _default_base(model_name)
            clip = _create(model_name, _base_weights(model_name, base, cache_dir), device, pretrained=base)
        else:
            clip = _create(model_name, None, device, pretrained=pretrained)
        load_weights(clip, found, source=str(weights_file))
        recorded = found.normalization
    else:
        weights = pretrained
        if model_name in CLASSROOM_MODELS and pretrained == CLASSROOM_PRETRAINED:
            weights = _base_weights(model_name, pretrained, cache_dir)
        clip = _create(model_name, weights, device, pretrained=pretrained)
    clip.eval()
    cfg = clip.visual.preprocess_cfg
    mean, std = NORMALIZATIONS[normalization] if normalization else recorded or (cfg["mean"], cfg["std"])
    logging.getLogger(__name__).info("loaded %s (%s) on %s", model_name, pretrained, device)
    return ZeroShotCLIP(clip, open_clip.get_tokenizer(model_name), model_name=model_name,
                        pretrained=pretrained if not stored else model_name, mean=mean, std=std,
                        resize_mode=resize_mode)


def _default_base(model_name: str) -> str:
    if model_name in CLASSROOM_MODELS:
        return CLASSROOM_PRETRAINED
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if "openai" in tags:
        return "openai"
    raise ValueError(f"the file holds an image tower alone; say which weights complete it with base=... "
                     f"(the text tower's tag; known tags for {model_name}: {tags})")


def _base_weights(model_name: str, tag: str, cache_dir) -> str:
    """What open_clip's ``pretrained=`` takes for a tag (the classroom CLIP's is a file zsr_lab makes)."""
    if model_name in CLASSROOM_MODELS and tag == CLASSROOM_PRETRAINED:
        from .classroom import pretrained_checkpoint, pretraining_config  # they need this module's loader
        return str(pretrained_checkpoint(pretraining_config(model_name), cache_dir=cache_dir))
    return tag


class _WeightsFollow(logging.Filter):
    """Hides open_clip's "initialized randomly" warning when the weights are zsr_lab's to set (loaded from a file
    right after, or trained from scratch)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


def create_untrained(model_name: str) -> nn.Module:
    """The open_clip model with freshly initialised weights, what pre-training starts from, without open_clip's
    "initialized randomly" warning (here that is the point, not a mistake)."""
    root, quiet = logging.getLogger(), _WeightsFollow()
    root.addFilter(quiet)
    try:
        return open_clip.create_model(model_name, pretrained=None)
    finally:
        root.removeFilter(quiet)


def _create(model_name: str, weights: str | None, device, *, pretrained) -> nn.Module:
    """``open_clip.create_model`` with a failed download turned into what to do."""
    quiet = _WeightsFollow() if weights is None and pretrained is not None else None
    root = logging.getLogger()
    try:
        if quiet:
            root.addFilter(quiet)
        return open_clip.create_model(model_name, pretrained=weights, device=device)
    except (RuntimeError, OSError) as err:
        message = str(err)
        offline = ("Failed to download" in message or "not a known tag" in message or "offline" in message.lower()
                   or "connect" in message.lower() or isinstance(err, OSError))
        if not offline:
            raise
        tags = [] if model_name.startswith(("hf-hub:", "local-dir:")) else \
            open_clip.list_pretrained_tags_by_model(model_name)
        what = model_name if weights is None else f"{pretrained!r} for {model_name!r}"
        raise WeightsUnavailableError(
            f"could not load pretrained weights {what}: {err}\n"
            f"What to do: (1) on a machine with internet access, unset HF_HUB_OFFLINE and run again (weights "
            f"are cached after the first download); (2) or download the checkpoint elsewhere and pass its file "
            f"path as pretrained=...; (3) or work at classroom scale (scale='classroom'), which needs no "
            f"download. Known tags for this model: {tags}; zsr_lab's named robust checkpoints: "
            f"{', '.join(PUBLISHED)}") from err
    finally:
        if quiet:
            root.removeFilter(quiet)


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients and put the module in eval mode; returns it."""
    module.requires_grad_(False)
    return module.eval()


def frozen_copy(model: ZeroShotCLIP) -> ZeroShotCLIP:
    """A frozen deep copy: the pre-trained reference ``f_0`` that several losses compare against."""
    return freeze(copy.deepcopy(model))


def train_image_tower_only(model: ZeroShotCLIP) -> list[nn.Parameter]:
    """Freeze the text tower and the logit scale, unfreeze the image tower; returns the trainable parameters."""
    freeze(model)
    model.clip.visual.requires_grad_(True)
    return [p for p in model.clip.visual.parameters()]
