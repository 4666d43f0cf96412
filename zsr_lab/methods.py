"""Fine-tuning methods as small loss modules behind one registry.

A method tells the training engine three things:

- what the training attack maximises (:meth:`Method.attack_objective`: the cross-entropy of the 100-scaled
  logits for the supervised methods, the embedding distance for FARE);
- the loss of a training step (:meth:`Method.forward`), given clean images, their adversarial versions and labels;
- whether it needs the frozen pre-trained model ``f_0`` (``needs_reference``) and targets computed from it once per
  step, without gradient (:meth:`Method.prepare`).

Notation as in the book: ``s_θ(x) = 100 · norm(f_θ(N(x))) · Tᵀ`` with ``T`` the frozen class embeddings of the
training classes, ``f_0`` the frozen pre-trained image tower. Register a new method with :func:`register_method`.
"""
from __future__ import annotations

import difflib
import inspect
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (NORMALIZATIONS, attention_distance, complementary_attention, non_class_classifier,
                        text_guided_attention)
from .models import ZeroShotCLIP

METHODS: dict[str, type["Method"]] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a :class:`Method` available to the training engine under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def build_method(name: str, **options) -> "Method":
    """The method registered as ``name``, with its options (e.g. ``build_method("pmg_aft", form="repository")``)."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; choose one of {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](**options)
    except TypeError as err:
        raise TypeError(f"bad option for method {name!r}: {err}") from err


class Method(nn.Module):
    """Base class of a fine-tuning method (see the module docstring).

    Attributes:
        name: registry key.
        needs_reference: the loss or its targets use the frozen pre-trained model ``f_0``.
        supervised: the method uses labels (and the training classes' text embeddings).
        attack_momentum: ``None`` for plain sign steps in the training attack, μ for momentum sign steps.
        pixel_stats: normalisation ``(mean, std)`` to train with instead of the model's own (``None``: CLIP's).
    """

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    supervised: ClassVar[bool] = True
    attack_momentum: ClassVar[float | None] = None
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def options(self) -> dict:
        """The constructor's options with the values in use, defaults included (stored as same-named attributes)."""
        parameters = inspect.signature(type(self).__init__).parameters.values()
        return {p.name: getattr(self, p.name) for p in parameters
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}  # nn.Module's *args

    def setup(self, model: ZeroShotCLIP, classnames: list[str]) -> None:
        """Called once by the engine after the training classifier is installed (e.g. to encode extra prompts)."""

    def prepare(self, model: ZeroShotCLIP, reference: ZeroShotCLIP | None, images: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets that do not depend on the trained weights, computed once per step without gradient."""
        return {}

    def attack_objective(self, model: ZeroShotCLIP, adversarial: torch.Tensor, labels: torch.Tensor,
                         context: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the training attack maximises: by default ``CE(s_θ(x + δ), y)``."""
        return F.cross_entropy(model(adversarial).float(), labels)

    def forward(self, model: ZeroShotCLIP, reference: ZeroShotCLIP | None, images: torch.Tensor,
                adversarial: torch.Tensor, labels: torch.Tensor,
                context: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms)``: the scalar training loss and its named parts (detached, for the log)."""
        raise NotImplementedError


def adversarial_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of training images still classified correctly under the training attack (for the log)."""
    return (logits.argmax(1) == labels).float().mean().detach()


@register_method
class TeCoA(Method):
    r"""TeCoA (Mao et al., 2023): cross-entropy of the adversarial images against the frozen class text embeddings.

    .. math:: L = \mathrm{CE}(s_\theta(x_{adv}), y)

    No clean term and no reference model.
    """

    name = "tecoa"

    def forward(self, model, reference, images, adversarial, labels, context):
        logits = model(adversarial).float()
        loss = F.cross_entropy(logits, labels)
        return loss, {"ce": loss.detach(), "adv_accuracy": adversarial_accuracy(logits, labels)}


@register_method
class PMGAFT(Method):
    r"""PMG-AFT (Wang et al., 2024): TeCoA plus two KL terms that keep the model close to the pre-trained one.

    .. math::
        L = \mathrm{CE}(s_\theta(x_{adv}), y)
            + \alpha\,\mathrm{KL}\big(p(s_0(x_{adv}))\,\|\,p(s_\theta(x_{adv}))\big)
            + \beta\,\mathrm{KL}\big(p(s_\theta(x))\,\|\,p(s_\theta(x_{adv}))\big)

    The frozen model sees the *adversarial* image; the clean output of the trained model is not detached.

    Arguments:
        alpha, beta: weights of the two KL terms (1 and 1).
        form: ``"paper"`` (default): KL averaged over the batch, 100-scaled logits, CLIP's normalisation.
            ``"repository"``: what the official code runs: KL summed over the batch (≈ batch size × the weight),
            KL terms on unscaled cosine logits, and ImageNet mean/std as the input normalisation during training.
    """

    name = "pmg_aft"
    needs_reference = True
    FORMS = ("paper", "repository")

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, form: str = "paper"):
        super().__init__()
        if form not in self.FORMS:
            raise ValueError(f"form must be 'paper' or 'repository', got {form!r}")
        self.alpha, self.beta, self.form = float(alpha), float(beta), form
        if form == "repository":
            self.pixel_stats = (IMAGENET_MEAN, IMAGENET_STD)

    def _kl(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``KL(p(teacher) ‖ p(student))`` in PyTorch's form ``kl_div(log_softmax(student), softmax(teacher))``."""
        reduction = "batchmean" if self.form == "paper" else "sum"
        return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1),
                        reduction=reduction)

    def forward(self, model, reference, images, adversarial, labels, context):
        # one pass of the trained tower over clean and adversarial images together
        embeddings = model.encode_image(torch.cat([images, adversarial])).float()
        clean_emb, adv_emb = embeddings.chunk(2)
        with torch.no_grad():
            reference_emb = reference.encode_image(adversarial).float()
        adv_logits = model.logits(adv_emb)
        ce = F.cross_entropy(adv_logits, labels)
        if self.form == "paper":
            student, teacher_ref, teacher_clean = adv_logits, model.logits(reference_emb), model.logits(clean_emb)
        else:  # the repository's KL terms use cosine similarities, without the ×100
            student, teacher_ref, teacher_clean = (self._cosines(model, e) for e in (adv_emb, reference_emb,
                                                                                      clean_emb))
        kl_reference = self._kl(student, teacher_ref)
        kl_clean = self._kl(student, teacher_clean)
        loss = ce + self.alpha * kl_reference + self.beta * kl_clean
        return loss, {"ce": ce.detach(), "kl_reference": kl_reference.detach(), "kl_clean": kl_clean.detach(),
                      "adv_accuracy": adversarial_accuracy(adv_logits, labels)}

    @staticmethod
    def _cosines(model: ZeroShotCLIP, embedding: torch.Tensor) -> torch.Tensor:
        return F.normalize(embedding, dim=-1) @ model.class_embeddings.to(embedding.dtype).T


@register_method
class FARE(Method):
    r"""FARE (Schlarmann et al., 2024): unsupervised; the adversarial embedding must stay at the clean
    embedding of the frozen pre-trained model.

    .. math:: L = \big\|f_\theta(N(x_{adv})) - f_0(N(x))\big\|_2^2

    (squared L2 summed over embedding dimensions, mean over the batch, *unnormalised* embeddings). The training
    attack maximises the same distance with momentum sign steps (``momentum`` 0.9).
    """

    name = "fare"
    needs_reference = True
    supervised = False
    attack_momentum = 0.9

    def prepare(self, model, reference, images, labels):
        return {"target": reference.encode_image(images).float()}

    @staticmethod
    def distance(embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance summed over dimensions, averaged over the batch."""
        return (embedding.float() - target).pow(2).sum(dim=1).mean()

    def attack_objective(self, model, adversarial, labels, context):
        return self.distance(model.encode_image(adversarial), context["target"])

    def forward(self, model, reference, images, adversarial, labels, context):
        loss = self.distance(model.encode_image(adversarial), context["target"])
        return loss, {"embedding_distance": loss.detach()}


@register_method
class TGAZSR(Method):
    r"""TGA-ZSR (Yu et al., 2024): TeCoA plus two terms that keep the text-guided attention where the pre-trained
    model puts it on the clean image.

    .. math::
        L = \mathrm{CE}(s_\theta(x_{adv}), y)
            + \alpha\, \underbrace{\overline{\lVert A_\theta(x_{adv}) - A_0(x) \rVert_2}}_{\text{LARM}}
            + \beta\, \underbrace{\overline{\lVert A_\theta(x) - A_0(x) \rVert_2}}_{\text{GACM}}

    ``A`` is the attention map of the ground-truth class (:func:`zsr_lab.attention.text_guided_attention`),
    upsampled to the input size; the frozen model's map is a constant target computed without gradient. One
    forward pass of the trained tower over clean and adversarial images gives both the logits and the maps.

    Arguments:
        alpha, beta: weights of LARM and GACM (0.08 and 0.05).
        normalize: ``"tokens"`` (the official computation) or ``"per_token"``.
    """

    name = "tga_zsr"
    needs_reference = True

    def __init__(self, alpha: float = 0.08, beta: float = 0.05, normalize: str = "tokens"):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be 'tokens' (the official computation) or 'per_token', "
                             f"got {normalize!r}")
        self.alpha, self.beta, self.normalize = float(alpha), float(beta), normalize

    def attention(self, model: ZeroShotCLIP, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The maps of the ground-truth classes for these tokens."""
        return text_guided_attention(tokens.float(), model.class_embeddings[labels], image_size=model.image_size,
                                     normalize=self.normalize)

    def prepare(self, model, reference, images, labels):
        return {"target": self.attention(reference, reference.encode_image_tokens(images).tokens, labels)}

    def forward(self, model, reference, images, adversarial, labels, context):
        features = model.encode_image_tokens(torch.cat([images, adversarial]))
        _, adv_embedding = features.embedding.float().chunk(2)
        clean_maps, adv_maps = self.attention(model, features.tokens, labels.repeat(2)).chunk(2)
        logits = model.logits(adv_embedding)
        ce = F.cross_entropy(logits, labels)
        larm = attention_distance(adv_maps, context["target"])
        gacm = attention_distance(clean_maps, context["target"])
        loss = ce + self.alpha * larm + self.beta * gacm
        return loss, {"ce": ce.detach(), "larm": larm.detach(), "gacm": gacm.detach(),
                      "adv_accuracy": adversarial_accuracy(logits, labels)}


@register_method
class CompTGA(TGAZSR):
    r"""Comp-TGA (Yu et al., 2026): TGA-ZSR with the complementary map ``A_c ⊙ (1 − A_n)``, where ``A_n`` is the map
    of the non-class prompt "This is not a photo of a {}" of the ground-truth class.

    Arguments:
        alpha, beta: weights of the two attention terms (0.10 and 0.07).
        normalize: as for :class:`TGAZSR`.
    """

    name = "comp_tga"

    def __init__(self, alpha: float = 0.10, beta: float = 0.07, normalize: str = "tokens"):
        super().__init__(alpha, beta, normalize)
        self.register_buffer("non_class_embeddings", torch.empty(0), persistent=False)

    @torch.no_grad()
    def setup(self, model, classnames):
        self.non_class_embeddings = non_class_classifier(model, classnames)

    def attention(self, model, tokens, labels):
        if self.non_class_embeddings.numel() == 0:
            raise RuntimeError("Comp-TGA needs its non-class prompts: call setup(model, classnames) first")
        size, tokens = model.image_size, tokens.float()
        class_maps = text_guided_attention(tokens, model.class_embeddings[labels], image_size=size,
                                           normalize=self.normalize)
        non_class_maps = text_guided_attention(tokens, self.non_class_embeddings[labels].to(tokens.device),
                                               image_size=size, normalize=self.normalize)
        return complementary_attention(class_maps, non_class_maps)
