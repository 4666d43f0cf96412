r"""TIMA (Ma, Liu, Cheng): text-image mutual awareness — the losses of its two tuning parts.

Only the paper's description is available (no official code); where it is silent, the choice here is an explicit,
documented option.

Image-aware text tuning (IAT) moves the class text embeddings ``T`` (``[C, d]``, L2-normalised):

- :func:`mhe_energy`: stabilised Minimum Hyperspherical Energy, :math:`\frac{1}{C(C-1)}\sum_{j\ne k}
  \frac{1}{1 + \lVert t_j - t_k\rVert^2}`; minimising it spreads the classes apart.
- :func:`probe_distillation` (IAKD): :math:`\mathrm{KL}(\mathrm{softmax}(z_0 T_0^\top/\tau) \,\|\,
  \mathrm{softmax}(z_0 T^\top/\tau))` with fixed pre-trained image embeddings ``z_0`` as probes, so the tuned
  embeddings keep the original class relations as the images see them.

Text-aware image tuning (TAI) trains the image tower adversarially:

- :func:`text_margins`: an additive margin per class pair from the *original* text geometry, larger for closer
  classes (``"cosine"``: :math:`\gamma\cos(t^0_y, t^0_j)`, the default; ``"distance"``:
  :math:`\gamma(1 - \lVert t^0_y - t^0_j\rVert/2)`, which is never negative), zero on the diagonal.
- :func:`margin_cross_entropy` (TAM): :math:`\mathrm{CE}((\cos(z, T) + M_y)/\tau, y)`: the margin is added to the
  non-target logits, so the true class must win by more against the classes whose text is close.
- :func:`image_distillation` (TAKD): :math:`\mathrm{KL}(\mathrm{softmax}(z_0(x) T^\top/\tau) \,\|\,
  \mathrm{softmax}(z_\theta(x_{adv}) T^\top/\tau))`: the adversarial prediction of the trained tower follows the
  pre-trained tower's clean prediction.

``tau`` is the temperature: 0.01 is CLIP's (logit scale 100).

The text side: :func:`text_parameters` names what IAT may change (``"projection"``: the text projection only, the
default; ``"tower"``: every text-tower weight), :class:`ClassText` recomputes the class embeddings from those
weights with gradient, and :func:`tune_text` runs IAT on its own (the first stage of the staged schedule).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from .models import ZeroShotCLIP

MARGIN_FUNCTIONS = ("cosine", "distance")
TEXT_PARAMETERS = ("projection", "tower")


def mhe_energy(text: torch.Tensor) -> torch.Tensor:
    """Stabilised hyperspherical energy of ``[C, d]`` embeddings: mean over ordered pairs j ≠ k of
    ``1 / (1 + ‖t_j − t_k‖²)`` (lower = more spread out)."""
    if text.dim() != 2 or text.shape[0] < 2:
        raise ValueError(f"need at least two embeddings as a [C, d] matrix, got shape {tuple(text.shape)}")
    squared = torch.cdist(text, text).pow(2)
    off_diagonal = ~torch.eye(len(text), dtype=torch.bool, device=text.device)
    return (1 / (1 + squared[off_diagonal])).mean()


def _kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) ‖ softmax(student)), averaged over the batch."""
    return F.kl_div(
        student_logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True, reduction="batchmean"
    )


def probe_distillation(
    probes: torch.Tensor, text0: torch.Tensor, text: torch.Tensor, *, tau: float = 0.01
) -> torch.Tensor:
    """IAKD: how far the tuned class embeddings ``text`` change the class distribution of fixed image probes.

    Arguments:
        probes: pre-trained image embeddings ``[N, d]`` (normalised here).
        text0, text: original and tuned class embeddings ``[C, d]`` (normalised here).
        tau: temperature.
    """
    z = F.normalize(probes.float(), dim=-1)
    return _kl(z @ F.normalize(text0.float(), dim=-1).T / tau, z @ F.normalize(text.float(), dim=-1).T / tau)


def text_margins(text0: torch.Tensor, *, gamma: float, function: str = "cosine") -> torch.Tensor:
    """Margins ``[C, C]`` (row = true class y, column = other class j) from the original class embeddings."""
    if function not in MARGIN_FUNCTIONS:
        raise ValueError(f"margin function must be one of {', '.join(MARGIN_FUNCTIONS)}, got {function!r}")
    t = F.normalize(text0.float(), dim=-1)
    if function == "cosine":
        margins = gamma * (t @ t.T)
    else:
        margins = gamma * (1 - torch.cdist(t, t) / 2)
    return margins.fill_diagonal_(0)


def margin_cross_entropy(
    image_embedding: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, *, tau: float = 0.01
) -> torch.Tensor:
    """TAM: cross-entropy of ``(cos(z, T) + M[y]) / τ`` with the margins of each image's true class added."""
    cosines = F.normalize(image_embedding.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    return F.cross_entropy((cosines + margins[labels]) / tau, labels)


def image_distillation(
    reference_clean: torch.Tensor, adversarial: torch.Tensor, text: torch.Tensor, *, tau: float = 0.01
) -> torch.Tensor:
    """TAKD: KL from the pre-trained tower's clean class distribution to the trained tower's adversarial one."""
    t = F.normalize(text.float(), dim=-1)
    teacher = F.normalize(reference_clean.float(), dim=-1) @ t.T / tau
    student = F.normalize(adversarial.float(), dim=-1) @ t.T / tau
    return _kl(teacher, student)


def _check_text_params(which: str) -> None:
    if which not in TEXT_PARAMETERS:
        raise ValueError(f"text_params must be one of {', '.join(TEXT_PARAMETERS)}, got {which!r}")


def text_parameters(model: ZeroShotCLIP, which: str) -> list[nn.Parameter]:
    """The text-side weights IAT tunes: ``"projection"`` (the joint-space projection of the text tower) or
    ``"tower"`` (every weight of the text tower, projection included)."""
    _check_text_params(which)
    projection = model.clip.text_projection
    if which == "projection":
        return list(projection.parameters()) if isinstance(projection, nn.Module) else [projection]
    return [
        p
        for name, p in model.clip.named_parameters()
        if not name.startswith("visual.") and not name.startswith("logit_")
    ]


def _pooled_text_features(model: ZeroShotCLIP, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower's pooled features *before* the projection (captured from ``ln_final``)."""
    captured = []
    handle = model.clip.ln_final.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        model.clip.encode_text(tokens)
    finally:
        handle.remove()
    return text_global_pool(
        captured[0], tokens, model.clip.text_pool_type, eos_token_id=getattr(model.clip, "text_eos_id", None)
    )


class ClassText(nn.Module):
    """Class embeddings ``[C, d]`` of fixed prompts, recomputed with gradient from the tuned text weights.

    With ``trainable="projection"`` the tower's pooled features are computed once and only the projection runs
    per call; with ``"tower"`` the whole text tower runs. Templates are averaged as in
    :func:`zsr_lab.zero_shot_classifier`, so untuned weights give the same embeddings as the zero-shot classifier.
    """

    def __init__(
        self, model: ZeroShotCLIP, classnames: Sequence[str], templates: Sequence[str], trainable: str = "projection"
    ):
        super().__init__()
        _check_text_params(trainable)
        self.trainable, self.shape = trainable, (len(classnames), len(templates))
        texts = [template.format(name) for name in classnames for template in templates]
        self.register_buffer("tokens", model.tokenizer(texts).to(model.device), persistent=False)
        if trainable == "projection":
            with torch.no_grad():
                self.register_buffer("pooled", _pooled_text_features(model, self.tokens), persistent=False)

    def forward(self, model: ZeroShotCLIP) -> torch.Tensor:
        if self.trainable == "projection":
            projection = model.clip.text_projection
            embedding = projection(self.pooled) if isinstance(projection, nn.Module) else self.pooled @ projection
        else:
            embedding = model.clip.encode_text(self.tokens)
        per_class = F.normalize(embedding.float(), dim=-1).view(*self.shape, -1).mean(dim=1)
        return F.normalize(per_class, dim=-1)


def tune_text(
    model: ZeroShotCLIP,
    class_text: ClassText,
    probes: torch.Tensor,
    *,
    which: str,
    steps: int,
    lr: float,
    mhe_weight: float = 1.0,
    iakd_weight: float = 1.0,
    tau: float = 0.01,
    batch_size: int = 512,
    seed: int = 0,
) -> list[dict]:
    """Image-aware text tuning alone: Adam on the ``which`` text weights, minimising
    ``mhe_weight · L_MHE(T) + iakd_weight · L_IAKD(z_0, T_0, T)`` over batches of the fixed image probes.

    Returns one record per step (``step``, ``mhe``, ``iakd``, ``loss``). The weights not named by ``which`` are
    left untouched; the caller reinstalls the classifier afterwards.
    """
    parameters = text_parameters(model, which)
    flags = {p: p.requires_grad for p in model.clip.parameters()}
    model.clip.requires_grad_(False)
    for p in parameters:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        text0 = class_text(model)
    history = []
    try:
        for step in range(1, steps + 1):
            batch = probes[torch.randint(len(probes), (min(batch_size, len(probes)),), generator=generator)]
            text = class_text(model)
            mhe, iakd = mhe_energy(text), probe_distillation(batch, text0, text, tau=tau)
            loss = mhe_weight * mhe + iakd_weight * iakd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append({"step": step, "mhe": mhe.item(), "iakd": iakd.item(), "loss": loss.item()})
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
    return history
