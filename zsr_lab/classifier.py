"""Zero-shot classifiers: class-embedding matrices built from class names and prompt templates.

Building the classifier is separate from running it (as in CLIP_benchmark): :func:`zero_shot_classifier`
turns names + templates into an L2-normalised ``[C, d]`` matrix once; :meth:`ZeroShotCLIP.set_classifier`
installs it; attacks and training then reuse it at every step without touching the text tower again.
:func:`dataset_classifier` adds an on-disk cache keyed by model, pretrained tag, dataset, class names,
templates and a fingerprint of the text-tower weights (so a tuned text side never hits a stale entry).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from . import datasets, settings
from .models import ZeroShotCLIP


@torch.no_grad()
def zero_shot_classifier(
    model: ZeroShotCLIP, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """Class embeddings ``[C, d]``: for each class, the normalised mean of its normalised template embeddings.

    With one template this is just the normalised text embedding of ``template.format(name)``; with several
    it is CLIP's prompt ensemble.
    """
    if isinstance(templates, str):
        raise TypeError("templates must be a list of strings such as ['This is a photo of a {}'], not a string")
    if not templates or not classnames:
        raise ValueError("need at least one class name and one template")
    texts = [template.format(name) for name in classnames for template in templates]
    embeddings = torch.cat(
        [model.encode_text(texts[i : i + batch_size], normalize=True) for i in range(0, len(texts), batch_size)]
    )
    per_class = embeddings.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(per_class.float(), dim=-1)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(text)).stem if "/" in str(text) else str(text))


def classifier_cache_path(
    model: ZeroShotCLIP, dataset: str, classnames: Sequence[str], templates: Sequence[str], cache_dir=None
) -> Path:
    """The cache file for this (model, pretrained, dataset, names, templates, text weights) combination."""
    key = json.dumps(
        {
            "model": model.model_name,
            "pretrained": str(model.pretrained),
            "dataset": dataset,
            "classnames": list(classnames),
            "templates": list(templates),
            "text": model.text_fingerprint(),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = f"{_safe(dataset)}-{_safe(model.model_name)}-{_safe(model.pretrained)}-{digest}.pt"
    return settings.cache_dir(cache_dir) / "classifiers" / name


def dataset_classifier(
    model: ZeroShotCLIP, dataset: str, *, templates: Sequence[str] | None = None, cache: bool = True, cache_dir=None
) -> torch.Tensor:
    """The zero-shot classifier of a registered dataset, with its protocol template(s) unless overridden.

    Cached on disk after the first call (``cache=False`` to skip the cache).
    """
    spec = datasets.get_spec(dataset)
    templates = list(templates) if templates is not None else list(spec.templates)
    path = classifier_cache_path(model, dataset, spec.classnames, templates, cache_dir)
    if cache and path.exists():
        return torch.load(path, map_location=model.device, weights_only=True)
    weights = zero_shot_classifier(model, spec.classnames, templates)
    if cache:
        settings.atomic_save(weights.cpu(), path)
    return weights
