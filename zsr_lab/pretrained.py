"""Loading a CLIP with its weights: open_clip tags, zsr_lab's named checkpoints, checkpoint files, the classroom
CLIP that zsr_lab pre-trains itself.

The tags ``load_clip`` knows beyond open_clip's own are registries, read like open_clip's pretrained registry:
:data:`zsr_lab.weights.PUBLISHED` (published robust checkpoints by name) and
:data:`zsr_lab.classroom.PRETRAINING` (the classroom architectures, tag ``"zsr_lab"``); ``"none"`` means random
weights. An unknown tag is answered with the closest known ones.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import open_clip
import torch
from torch import nn

from . import settings
from .classroom import PRETRAINING, pretrained_checkpoint
from .models import (
    CLASSROOM_MODEL,
    CLASSROOM_MODELS,
    CLASSROOM_PRETRAINED,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ZeroShotCLIP,
    weights_set_later,
)
from .registry import Registry
from .weights import NORMALIZATIONS, PUBLISHED, load_weights, looks_like_file, published_file, read_weights

RANDOM_WEIGHTS = "none"  # the pretrained tag of randomly initialised weights (benchmarks and tests)


class WeightsUnavailableError(RuntimeError):
    """Pretrained CLIP weights could not be fetched (offline machine, hub unreachable, unknown tag)."""


def known_tags(model_name: str) -> Registry[str]:
    """Every pretrained tag of an architecture: open_clip's, zsr_lab's named checkpoints of it, and the classroom
    CLIP's own tag for the classroom architectures (each entry: where the tag comes from)."""
    stored = model_name.startswith(("hf-hub:", "local-dir:"))
    tags = {} if stored else dict.fromkeys(open_clip.list_pretrained_tags_by_model(model_name), "open_clip")
    tags.update({name: "zsr_lab.weights.PUBLISHED" for name, entry in PUBLISHED.items() if entry.model == model_name})
    if model_name in PRETRAINING:
        tags[CLASSROOM_PRETRAINED] = "zsr_lab.classroom.PRETRAINING"
    return Registry(f"pretrained tag for {model_name}", tags)


def load_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    resize_mode: str = "bicubic",
    base: str | None = None,
    normalization: str | None = None,
    allow_pickle: bool = False,
) -> ZeroShotCLIP:
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
            (shipped with the package); ``None`` for random weights (same FLOPs, for benchmarks).
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
        raise ValueError(
            f"unknown CLIP architecture {model_name!r}; choose one of open_clip.list_models(), "
            f"e.g. {DEFAULT_MODEL!r} (full scale) or {CLASSROOM_MODEL!r} (classroom scale), or a "
            f"stored model 'hf-hub:org/name' or 'local-dir:path'"
        )
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
    return ZeroShotCLIP(
        clip,
        open_clip.get_tokenizer(model_name),
        model_name=model_name,
        pretrained=pretrained if not stored else model_name,
        mean=mean,
        std=std,
        resize_mode=resize_mode,
    )


def _default_base(model_name: str) -> str:
    if model_name in CLASSROOM_MODELS:
        return CLASSROOM_PRETRAINED
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if "openai" in tags:
        return "openai"
    raise ValueError(
        f"the file holds an image tower alone; say which weights complete it with base=... "
        f"(the text tower's tag; known tags for {model_name}: {tags})"
    )


def _base_weights(model_name: str, tag: str, cache_dir) -> str:
    """What open_clip's ``pretrained=`` takes for a tag (the classroom CLIP's is a file zsr_lab makes)."""
    if model_name in CLASSROOM_MODELS and tag == CLASSROOM_PRETRAINED:
        return str(pretrained_checkpoint(PRETRAINING[model_name], cache_dir=cache_dir))
    return tag


def _create(model_name: str, weights: str | None, device, *, pretrained) -> nn.Module:
    """``open_clip.create_model`` with a failed download turned into what to do."""
    try:
        if weights is None and pretrained is not None:
            with weights_set_later():
                return open_clip.create_model(model_name, pretrained=None, device=device)
        return open_clip.create_model(model_name, pretrained=weights, device=device)
    except (RuntimeError, OSError) as err:
        message = str(err)
        offline = (
            "Failed to download" in message
            or "not a known tag" in message
            or "offline" in message.lower()
            or "connect" in message.lower()
            or isinstance(err, OSError)
        )
        if not offline:
            raise
        tags = known_tags(model_name)
        unknown = f"{tags.unknown(pretrained)}.\n" if weights is not None and pretrained not in tags else ""
        what = model_name if weights is None else f"{pretrained!r} for {model_name!r}"
        raise WeightsUnavailableError(
            f"{unknown}could not load pretrained weights {what}: {err}\n"
            f"What to do: (1) on a machine with internet access, unset HF_HUB_OFFLINE and run again (weights "
            f"are cached after the first download); (2) or download the checkpoint elsewhere and pass its file "
            f"path as pretrained=...; (3) or work at classroom scale (scale='classroom'), which needs no "
            f"download. Known tags for this model: {list(tags)}"
        ) from err
