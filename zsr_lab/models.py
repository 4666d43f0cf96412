"""CLIP models at both scales, wrapped as zero-shot classifiers over [0,1] images.

Every method in zsr_lab talks to CLIP through :class:`ZeroShotCLIP`: it takes images in [0,1] pixel space
(where attacks and ε live), resizes and normalises *inside*, and returns the image embedding, the
100-scaled zero-shot logits against a class-embedding matrix, and all last-layer tokens projected into the
joint space (what the text-guided attention methods need), all from one forward pass of the image tower.

Loading a model with its weights is :mod:`zsr_lab.pretrained`'s (``load_clip``); this module also holds what
freezes weights: :func:`freeze`, :func:`frozen_copy` (the reference ``f_0``), :func:`frozen_parameters` (during an
attack) and :func:`train_image_tower_only`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MODEL = "ViT-B-32-quickgelu"
DEFAULT_PRETRAINED = "openai"
CLASSROOM_MODEL = "zsr-classroom-vit"
# a 56-px CLIP whose 7×7 patch grid can tell an object from its background (the "scenes" scale)
CLASSROOM_SCENES_MODEL = "zsr-classroom-scenes-vit"
CLASSROOM_MODELS = (CLASSROOM_MODEL, CLASSROOM_SCENES_MODEL)
CLASSROOM_PRETRAINED = "zsr_lab"  # the tag of the checkpoints zsr_lab pre-trains itself

# Make the classroom architectures first-class open_clip models.
open_clip.add_model_config(Path(__file__).parent / "model_configs")


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

    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        *,
        model_name: str,
        pretrained: str | None,
        mean: Sequence[float],
        std: Sequence[float],
        resize_mode: str = "bicubic",
    ):
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
            raise ValueError(
                f"expected images of shape [B, 3, H, W] (or [B, 1, H, W]) in [0, 1], got {tuple(images.shape)}"
            )
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

    def set_classifier(self, class_embeddings: torch.Tensor) -> ZeroShotCLIP:
        """Use these L2-normalised class embeddings (``[C, d]``) as the zero-shot classifier."""
        if class_embeddings.dim() != 2 or class_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"class embeddings must have shape [C, {self.embed_dim}], got {tuple(class_embeddings.shape)}"
            )
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

    def content_fingerprint(self) -> str:
        """A hash of what decides this model's outputs: its weights and its installed classifier (cached results
        that take the model, such as :func:`zsr_lab.sanity.red_flags`, are keyed by it)."""
        digest = hashlib.blake2b(self.weights_fingerprint().encode(), digest_size=8)
        embeddings = self.class_embeddings.detach().cpu().contiguous()
        digest.update(str(embeddings.dtype).encode())
        digest.update(embeddings.reshape(-1).view(torch.uint8).numpy().tobytes())
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


@contextlib.contextmanager
def weights_set_later():
    """Hide open_clip's "initialized randomly" warning while a model is created whose weights zsr_lab sets itself
    (loaded from a file right after, or trained from scratch): there it is the point, not a mistake."""

    class SetLater(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    root, quiet = logging.getLogger(), SetLater()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def create_untrained(model_name: str) -> nn.Module:
    """The open_clip model with freshly initialised weights, what pre-training starts from, without open_clip's
    "initialized randomly" warning."""
    with weights_set_later():
        return open_clip.create_model(model_name, pretrained=None)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module):
    """Parameters need no gradient while attacking: only the input's gradient is used, and less is saved. The
    parameters' own ``requires_grad`` flags come back afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


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
