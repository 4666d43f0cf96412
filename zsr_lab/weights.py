"""CLIP weights from files: the published robust checkpoints by name, and any checkpoint by its layout.

Robust CLIP checkpoints come in several layouts, and :func:`read_weights` tells them apart by their content:

- a whole open_clip / OpenAI CLIP state dict (``visual.conv1.weight`` … ``token_embedding.weight``), bare or
  nested under ``state_dict`` (open_clip's and zsr_lab's training checkpoints);
- the image tower alone (``conv1.weight``, ``transformer.resblocks.0…``, ``proj``): RobustVLM's released files
  (``model.visual.load_state_dict(torch.load(file))``) and the official TeCoA, PMG-AFT and TGA-ZSR / Comp-TGA training
  checkpoints, which keep it under ``vision_encoder_state_dict`` beside a visual prompter (``state_dict``, empty or
  ``module.``-prefixed when no prompt is trained), ``add_prompter``, ``optimizer``, ``epoch`` and ``best_acc1``;
- any of these with DataParallel's ``module.`` or ``torch.compile``'s ``_orig_mod.`` prefixes, in fp16 or fp32.

An image tower alone completes a CLIP whose text tower comes from ``base`` (``openai`` for OpenAI's ViT-B/32).
Named tags (:data:`PUBLISHED`) download once into the zsr_lab cache; offline, the error names the file and
where to put it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from . import settings
from .registry import Registry

CLIP_NORMALIZATION = (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
IMAGENET_NORMALIZATION = (IMAGENET_MEAN, IMAGENET_STD)
NORMALIZATIONS = {"clip": CLIP_NORMALIZATION, "imagenet": IMAGENET_NORMALIZATION}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt", ".safetensors")
_PREFIXES = ("module.", "_orig_mod.")
_NESTED = ("vision_encoder_state_dict", "state_dict", "model_state_dict", "model")  # searched in this order


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or its layout is not one zsr_lab knows; the message says what was found."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A robust CLIP checkpoint published by its authors, loadable by tag (``load_clip(model, tag)``).

    Attributes:
        url: where the authors publish it. ``file_name``: its name there and in the cache.
        model: the open_clip architecture it belongs to; ``base``: the pretrained tag of the text tower it
            completes (the files hold the image tower only).
        normalization: the input statistics it was trained with (``"clip"`` or ``"imagenet"``).
        source: who published it, and where; ``description``: what it is.
        sha256: the file's hash when known. The authors publish none; without one, the hash measured at the first
            download is recorded beside the file and checked at every later load.
    """

    url: str
    file_name: str
    model: str
    base: str
    normalization: str
    source: str
    description: str
    sha256: str | None = None


_ROBUSTVLM = "Schlarmann et al. 2024, github.com/chs20/RobustVLM (README, Additional Models)"
PUBLISHED: Registry[PublishedCheckpoint] = Registry(
    "published checkpoint",
    {
        f"robustvlm-{method}-eps{eps}": PublishedCheckpoint(
            url=f"https://nc.mlcloud.uni-tuebingen.de/index.php/s/{share}/download/vitb32_{method}_eps_{eps}.pt",
            file_name=f"vitb32_{method}_eps_{eps}.pt",
            model="ViT-B-32-quickgelu",
            base="openai",
            normalization="clip",
            source=_ROBUSTVLM,
            description=f"{title} image tower of OpenAI ViT-B/32, fine-tuned two epochs on ImageNet at ε = {eps}/255",
        )
        for method, title, eps, share in (
            ("tecoa", "TeCoA", 1, "LHgi84RskrtYCiX"),
            ("fare", "FARE", 1, "cCgQAS8QW9arj9d"),
            ("tecoa", "TeCoA", 4, "RiWGQzBrqYNCaDk"),
            ("fare", "FARE", 4, "3nMxBKEwbWnDymT"),
        )
    },
)
PUBLISHED.add(
    "tecoa-mao2023",
    PublishedCheckpoint(
        url="https://cv.cs.columbia.edu/mcz/TeCoA/TeCoAmodel_best.pth.tar",
        file_name="TeCoAmodel_best.pth.tar",
        model="ViT-B-32-quickgelu",
        base="openai",
        normalization="clip",
        source="Mao et al. 2023, github.com/cvlab-columbia/ZSRobust4FoundationModel (README)",
        description="TeCoA's own release: OpenAI ViT-B/32 fine-tuned on ImageNet at ε = 1/255 (training checkpoint)",
    ),
)


@dataclass
class Weights:
    """What :func:`read_weights` found in a file.

    Attributes:
        state_dict: float32 tensors, prefixes removed; keys as open_clip names them (``visual.`` omitted for an image
            tower alone).
        kind: ``"clip"`` (image and text towers) or ``"visual"`` (the image tower alone).
        found: where in the file the weights were, e.g. ``"vision_encoder_state_dict"`` (for messages and records).
        normalization: the input ``(mean, std)`` recorded in the file (zsr_lab's ``weights.pt``), else ``None``.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    found: str
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def looks_like_file(pretrained: str) -> bool:
    """Whether ``pretrained`` names a file rather than an open_clip or zsr_lab tag."""
    return os.sep in pretrained or "/" in pretrained or pretrained.lower().endswith(CHECKPOINT_SUFFIXES)


def _load(path: Path, allow_pickle: bool):
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file {path} does not exist: check the path (an open_clip tag such as "
            f"'openai' has no slash or file suffix; zsr_lab's named checkpoints are "
            f"{', '.join(PUBLISHED)})"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle, mmap=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path} holds Python objects besides tensors, which torch loads only by running code from the file: "
                f"if you trust its source, pass allow_pickle=True"
            ) from err
        raise CheckpointError(
            f"could not read checkpoint {path} ({path.stat().st_size:,} bytes): {type(err).__name__}: {err}\n"
            f"The file is probably truncated (an interrupted download or copy) or not a PyTorch checkpoint: compare "
            f"its size with the original and fetch it again"
        ) from err


def _strip(state: dict) -> dict:
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _kind(state: dict) -> str | None:
    if "visual.conv1.weight" in state and ("token_embedding.weight" in state or "text.token_embedding.weight" in state):
        return "clip"
    if "conv1.weight" in state and "transformer.resblocks.0.attn.in_proj_weight" in state:
        return "visual"
    if "visual.conv1.weight" in state:  # an image tower saved with its parent's prefix
        return "visual-prefixed"
    return None


def _tensor_dict(value) -> bool:
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _describe(content) -> str:
    if not isinstance(content, dict):
        return f"a {type(content).__name__}"
    parts = []
    for key, value in list(content.items())[:12]:
        if _tensor_dict(value):
            sample = ", ".join(list(value)[:4])
            parts.append(f"{key!r}: {len(value)} tensors ({sample}, ...)")
        elif isinstance(value, torch.Tensor):
            parts.append(f"{key!r}: tensor {tuple(value.shape)}")
        else:
            parts.append(f"{key!r}: {type(value).__name__}")
    more = f", and {len(content) - 12} more" if len(content) > 12 else ""
    return "{" + "; ".join(parts) + more + "}"


def read_weights(path, *, allow_pickle: bool = False) -> Weights:
    """The CLIP weights in a checkpoint file, its layout detected from its content (see the module docstring).

    Arguments:
        path: a ``.pt`` / ``.pth`` / ``.pth.tar`` / ``.bin`` file (``torch.save``) or ``.safetensors``.
        allow_pickle: let torch run code stored in the file (only for files from a source you trust; needed when
            a training checkpoint stores Python objects besides tensors).

    Returns:
        :class:`Weights` (float32, prefixes removed).

    Raises:
        FileNotFoundError: no such file. CheckpointError: unreadable (truncated) or an unknown layout; the message
            lists what the file holds.

    Examples::

        >>> weights = read_weights("vitb32_fare_eps_1.pt")
        >>> weights.kind, weights.found
        ('visual', 'the top level')
    """
    path = Path(path).expanduser()
    content = _load(path, allow_pickle)
    candidates = []
    if _tensor_dict(content):
        candidates.append(("the top level", content))
    if isinstance(content, dict):
        candidates += [(f"{key!r}", content[key]) for key in _NESTED if _tensor_dict(content.get(key))]
    for where, state in candidates:
        state = _strip(state)
        kind = _kind(state)
        if kind == "visual-prefixed":
            state, kind = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}, "visual"
        if kind is not None:
            recorded = content.get("normalization") if isinstance(content, dict) else None
            normalization = (tuple(recorded["mean"]), tuple(recorded["std"])) if recorded else None
            return Weights(
                {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, kind, where, normalization
            )
    raise CheckpointError(
        f"{path}: no CLIP weights in a layout zsr_lab knows. Expected a CLIP state dict (keys 'visual.conv1.weight', "
        f"'token_embedding.weight', ...) or an image tower alone ('conv1.weight', 'transformer.resblocks.0.attn."
        f"in_proj_weight', ...), at the top level or under one of {', '.join(_NESTED)}, optionally with a 'module.' "
        f"prefix. Found: {_describe(content)}"
    )


def load_weights(clip: torch.nn.Module, weights: Weights, *, source: str) -> None:
    """Copy ``weights`` into an open_clip model (the whole model, or its image tower), every key checked.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (e.g. weights of another architecture).
    """
    target = clip if weights.kind == "clip" else clip.visual
    expected = target.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    shapes = [
        f"{k}: file {tuple(weights.state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights.state_dict and weights.state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        where = "image tower" if weights.kind == "visual" else "model"
        details = "; ".join(
            filter(
                None,
                [
                    f"missing {len(missing)} (e.g. {', '.join(missing[:3])})" if missing else "",
                    f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
                    f"shapes differ for {len(shapes)} (e.g. {shapes[0]})" if shapes else "",
                ],
            )
        )
        raise CheckpointError(
            f"{source} ({weights.found}) does not fit the {where} of this architecture: {details}. "
            f"Is the architecture (model name) the one it was trained with?"
        )
    target.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.state_dict.items()})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published_file(tag: str, *, cache_dir=None) -> Path:
    """The local file of a published checkpoint: downloaded once into ``<cache>/published/``, its hash checked.

    Raises:
        ValueError: unknown tag. RuntimeError (``WeightsUnavailableError`` via :func:`zsr_lab.load_clip`): offline,
            with the file's name, its URL and where to put it. CheckpointError: the hash does not match.
    """
    entry = PUBLISHED[tag]
    folder = settings.cache_dir(cache_dir) / "published"
    path = folder / entry.file_name
    record = path.with_name(path.name + ".sha256")
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = settings.temporary_path(path)
        try:
            torch.hub.download_url_to_file(entry.url, str(tmp), progress=True)
        except Exception as err:  # offline, proxy, moved file: the user can fetch it by hand
            tmp.unlink(missing_ok=True)
            raise OSError(
                f"could not download {entry.file_name} ({entry.description}; {entry.source}) from "
                f"{entry.url}: {err}\nWhat to do: download it on a machine with internet access and put it "
                f"at {path} (or pass the file's path as pretrained=...)"
            ) from err
        os.replace(tmp, path)
    measured = _sha256(path)
    expected = entry.sha256 or (record.read_text().strip() if record.exists() else None)
    if expected is None:
        record.write_text(measured + "\n")  # the first copy defines the hash every later load is checked against
    elif measured != expected:
        raise CheckpointError(
            f"{path} has sha256 {measured}, expected {expected}: the file changed or is damaged; "
            f"delete it (and {record.name}) to download it again"
        )
    return path
