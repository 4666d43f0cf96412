"""Fine-tuning methods as small loss modules behind one registry.

A method tells the training engine three things:

- what the training attack maximises (:meth:`Method.attack_objective`: the cross-entropy of the 100-scaled
  logits for the supervised methods, the embedding distance for FARE);
- the loss of a training step (:meth:`Method.forward`), given clean images, their adversarial versions and labels;
- whether it needs the frozen pre-trained model ``f_0`` (``needs_reference``) and targets computed from it once per
  step, without gradient (:meth:`Method.prepare`).

Notation as in the book: ``s_θ(x) = 100 · norm(f_θ(N(x))) · Tᵀ`` with ``T`` the frozen class embeddings of the
training classes, ``f_0`` the frozen pre-trained image tower. Register a new method with ``@METHODS.register``
(a :class:`~zsr_lab.registry.Registry`).
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from .attention import (
    NORMALIZATIONS,
    attention_distance,
    complementary_attention,
    non_class_classifier,
    text_guided_attention,
)
from .models import ZeroShotCLIP
from .registry import Registry
from .tima import (
    MARGIN_FUNCTIONS,
    TEXT_PARAMETERS,
    ClassText,
    image_distillation,
    margin_cross_entropy,
    mhe_energy,
    probe_distillation,
    text_margins,
    text_parameters,
    tune_text,
)
from .weights import IMAGENET_NORMALIZATION

METHODS: Registry[type[Method]] = Registry("method")


def build_method(name: str, **options) -> Method:
    """The method registered as ``name``, with its options (e.g. ``build_method("pmg_aft", form="repository")``)."""
    cls = METHODS[name]
    try:
        return cls(**options)
    except TypeError as err:
        raise TypeError(f"bad option for method {name!r}: {err}") from err


class Method(nn.Module):
    """Base class of a fine-tuning method (see the module docstring).

    Attributes:
        name: registry key.
        needs_reference: the loss or its targets use the frozen pre-trained model ``f_0``.
        supervised: the method uses labels (and the training classes' text embeddings).
        attack_momentum: ``None`` for plain sign steps in the training attack, μ for momentum sign steps.
        pixel_stats: normalisation ``(mean, std)`` to train (and evaluate) with instead of the model's own
            (``None``: CLIP's).
        revision: the method's version; a run trained by an earlier revision is never resumed or reused as finished.
    """

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    supervised: ClassVar[bool] = True
    attack_momentum: ClassVar[float | None] = None
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    revision: ClassVar[int] = 1  # raised when a change alters what a method trains: older runs are not reused

    def options(self) -> dict:
        """The constructor's options with the values in use, defaults included (stored as same-named attributes)."""
        parameters = inspect.signature(type(self).__init__).parameters.values()
        return {
            p.name: getattr(self, p.name)
            for p in parameters
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }  # nn.Module's *args

    def setup(self, model: ZeroShotCLIP, classnames: list[str], templates: list[str]) -> None:
        """Called once by the engine after the training classifier (these class names and prompt templates) is
        installed, before the reference copy is taken (e.g. to encode extra prompts)."""

    def text_parameters(self, model: ZeroShotCLIP) -> list[nn.Parameter]:
        """Text-side weights the training loop updates together with the image tower (none: the text is frozen)."""
        return []

    def before_training(self, model: ZeroShotCLIP, reference: ZeroShotCLIP | None, train_data) -> list[dict]:
        """Called once at the start of a fresh run (not on resume); returns log records (``kind`` set by the
        engine to ``"text"``). TIMA's staged schedule tunes the text side here."""
        return []

    def refresh_classifier(self, model: ZeroShotCLIP) -> None:
        """Reinstall the class embeddings after the text side may have changed (loaded or tuned weights)."""

    def prepare(
        self, model: ZeroShotCLIP, reference: ZeroShotCLIP | None, images: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Targets that do not depend on the trained weights, computed once per step without gradient."""
        return {}

    def attack_objective(
        self, model: ZeroShotCLIP, adversarial: torch.Tensor, labels: torch.Tensor, context: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """What the training attack maximises: by default ``CE(s_θ(x + δ), y)``."""
        return F.cross_entropy(model(adversarial).float(), labels)

    def forward(
        self,
        model: ZeroShotCLIP,
        reference: ZeroShotCLIP | None,
        images: torch.Tensor,
        adversarial: torch.Tensor,
        labels: torch.Tensor,
        context: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, terms)``: the scalar training loss and its named parts (detached, for the log)."""
        raise NotImplementedError


def adversarial_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of training images still classified correctly under the training attack (for the log)."""
    return (logits.argmax(1) == labels).float().mean().detach()


@METHODS.register
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


@METHODS.register
class PMGAFT(Method):
    r"""PMG-AFT (Wang et al., 2024): TeCoA plus two KL terms that keep the model close to the pre-trained one.

    .. math::
        L = \mathrm{CE}(s_\theta(x_{adv}), y)
            + \alpha\,\mathrm{KL}\big(p(s_0(x_{adv}))\,\|\,p(s_\theta(x_{adv}))\big)
            + \beta\,\mathrm{KL}\big(p(s_\theta(x))\,\|\,p(s_\theta(x_{adv}))\big)

    The frozen model sees the *adversarial* image; the clean output of the trained model is not detached.

    Arguments:
        alpha, beta: weights of the two KL terms (1 and 1).
        form: ``"paper"`` (default): the formula above with ``s`` the 100-scaled logits, KL averaged over the batch,
            CLIP's input normalisation. ``"repository"``: what the official ``PMG_AFT.py`` (a53fdd8) runs, which
            differs from the paper in exactly three ways:

            1. every logit is a plain cosine, without CLIP's ×100: in the cross-entropy term, in both KL terms
               and in the training attack's cross-entropy (its evaluation too);
            2. both KL terms are summed over the batch (``reduction="sum"``) while the cross-entropy is averaged,
               so each KL weighs about batch-size times its weight (its README trains with batch 256, the
               recipe here with 128);
            3. inputs are normalised with ImageNet's mean and std, in training and in the evaluation (the model is
               evaluated with the statistics it was trained with; ``weights.pt`` records them).

            Everything else is common to both forms: which model sees which image, the clean target left attached,
            no temperature, the 2-step PGD at ε = 1/255 with a uniform random start, SGD with warm-up and cosine.
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
            self.pixel_stats = IMAGENET_NORMALIZATION

    @property
    def revision(self) -> int:
        """2 for the repository form since its cross-entropy and training attack use cosine logits, as the official
        code does (revision 1 kept the ×100 there); the paper form never changed."""
        return 2 if self.form == "repository" else 1

    def _logits(self, model: ZeroShotCLIP, embedding: torch.Tensor) -> torch.Tensor:
        if self.form == "paper":
            return model.logits(embedding)
        return F.normalize(embedding, dim=-1) @ model.class_embeddings.to(embedding.dtype).T  # plain cosines

    def _kl(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``KL(p(teacher) ‖ p(student))`` in PyTorch's form ``kl_div(log_softmax(student), softmax(teacher))``."""
        reduction = "batchmean" if self.form == "paper" else "sum"
        return F.kl_div(F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction=reduction)

    def attack_objective(self, model, adversarial, labels, context):
        return F.cross_entropy(self._logits(model, model.encode_image(adversarial)).float(), labels)

    def forward(self, model, reference, images, adversarial, labels, context):
        # one pass of the trained tower over clean and adversarial images together
        embeddings = model.encode_image(torch.cat([images, adversarial])).float()
        clean_emb, adv_emb = embeddings.chunk(2)
        with torch.no_grad():
            reference_emb = reference.encode_image(adversarial).float()
        adv_logits = self._logits(model, adv_emb)
        ce = F.cross_entropy(adv_logits, labels)
        kl_reference = self._kl(adv_logits, self._logits(model, reference_emb))
        kl_clean = self._kl(adv_logits, self._logits(model, clean_emb))
        loss = ce + self.alpha * kl_reference + self.beta * kl_clean
        return loss, {
            "ce": ce.detach(),
            "kl_reference": kl_reference.detach(),
            "kl_clean": kl_clean.detach(),
            "adv_accuracy": adversarial_accuracy(adv_logits, labels),
        }


@METHODS.register
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


@METHODS.register
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

    Under fp16 or bf16 autocast the tokens leave the tower rounded, so while the trained weights are still within
    rounding distance of the frozen ones (the first steps of the warm-up) GACM reads exactly 0 and pushes nothing;
    in fp32 it reads a difference of the same size that comes from rounding too (at step 0 the two maps differ only
    because the trained tower sees clean and adversarial images in one batch). Measured on the classroom recipe,
    30 steps: GACM is 0 for the first 2 steps in fp16 and the first step in bf16 and fp32, and from step 8 on the
    three precisions log the same GACM (1.0–1.6) within their step-to-step spread. So the maps are computed from
    the autocast tokens, as the official code's mixed-precision training does.

    Arguments:
        alpha, beta: weights of LARM and GACM (0.08 and 0.05).
        normalize: ``"tokens"`` (the official computation) or ``"per_token"``.
    """

    name = "tga_zsr"
    needs_reference = True

    def __init__(self, alpha: float = 0.08, beta: float = 0.05, normalize: str = "tokens"):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be 'tokens' (the official computation) or 'per_token', got {normalize!r}")
        self.alpha, self.beta, self.normalize = float(alpha), float(beta), normalize

    def attention(self, model: ZeroShotCLIP, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The maps of the ground-truth classes for these tokens."""
        return text_guided_attention(
            tokens.float(), model.class_embeddings[labels], image_size=model.image_size, normalize=self.normalize
        )

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
        return loss, {
            "ce": ce.detach(),
            "larm": larm.detach(),
            "gacm": gacm.detach(),
            "adv_accuracy": adversarial_accuracy(logits, labels),
        }


@METHODS.register
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
    def setup(self, model, classnames, templates):
        self.non_class_embeddings = non_class_classifier(model, classnames)

    def attention(self, model, tokens, labels):
        if self.non_class_embeddings.numel() == 0:
            raise RuntimeError("Comp-TGA needs its non-class prompts: call setup(model, classnames) first")
        size, tokens = model.image_size, tokens.float()
        class_maps = text_guided_attention(
            tokens, model.class_embeddings[labels], image_size=size, normalize=self.normalize
        )
        non_class_maps = text_guided_attention(
            tokens, self.non_class_embeddings[labels].to(tokens.device), image_size=size, normalize=self.normalize
        )
        return complementary_attention(class_maps, non_class_maps)


@METHODS.register
class TIMA(Method):
    r"""TIMA (Ma, Liu, Cheng): text-image mutual awareness.

    Image-aware text tuning (IAT) spreads the class text embeddings apart (stabilised MHE) while pre-trained image
    embeddings of training images, used as fixed probes, keep their class distributions (IAKD). Text-aware image
    tuning (TAI) trains the image tower adversarially with a margin per class pair that grows with the classes'
    original text similarity (TAM) and a distillation to the pre-trained tower's clean prediction (TAKD):

    .. math::
        L_{TAI} = \mathrm{CE}\Big(\frac{\cos(z_\theta(x_{adv}), T) + M_y}{\tau}, y\Big)
            + \lambda_{TAKD}\, \mathrm{KL}\big(p_\tau(z_0(x)) \,\|\, p_\tau(z_\theta(x_{adv}))\big),
        \qquad L_{IAT} = \lambda_{MHE} L_{MHE}(T) + \lambda_{IAKD} L_{IAKD}(z_0, T_0, T)

    No official code exists; the paper leaves these open and they are options here (defaults in brackets):

    Arguments:
        gamma: margin scale γ [0.05]; ``margin``: ``"cosine"`` (γ·cos(t⁰_y, t⁰_j)) or ``"distance"``.
        tau: temperature τ of every softmax [0.01, CLIP's].
        takd_weight, mhe_weight, iakd_weight: λ's [1, 1, 1].
        text_params: text weights IAT tunes: ``"projection"`` [default: one d×d matrix acting on every prompt, so the
            tuned text still serves any dataset's class names, and it is part of the model's own weights, so
            checkpoints, ``load_clip`` and the classifier cache follow it] or ``"tower"``.
        schedule: ``"staged"`` [IAT first, ``text_steps`` Adam steps at ``text_lr`` on ``probe_examples`` probes, then
            TAI with the tuned text fixed; IAT needs no attack and no trained image tower, since its probes are the
            pre-trained ones] or ``"joint"`` (both losses every step; the text weights join the optimizer).
    """

    name = "tima"
    needs_reference = True
    SCHEDULES = ("staged", "joint")

    def __init__(
        self,
        gamma: float = 0.05,
        margin: str = "cosine",
        tau: float = 0.01,
        takd_weight: float = 1.0,
        mhe_weight: float = 1.0,
        iakd_weight: float = 1.0,
        text_params: str = "projection",
        schedule: str = "staged",
        text_steps: int = 200,
        text_lr: float = 1e-3,
        probe_examples: int = 10_000,
    ):
        super().__init__()
        checks = (
            ("margin", margin, MARGIN_FUNCTIONS),
            ("text_params", text_params, TEXT_PARAMETERS),
            ("schedule", schedule, self.SCHEDULES),
        )
        for option, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau!r}")
        self.gamma, self.margin, self.tau = float(gamma), margin, float(tau)
        self.takd_weight, self.mhe_weight, self.iakd_weight = float(takd_weight), float(mhe_weight), float(iakd_weight)
        self.text_params, self.schedule = text_params, schedule
        self.text_steps, self.text_lr, self.probe_examples = int(text_steps), float(text_lr), int(probe_examples)
        for name in ("text0", "margins"):
            self.register_buffer(name, torch.empty(0), persistent=False)
        self.class_text: ClassText | None = None

    def setup(self, model, classnames, templates):
        self.text0 = model.class_embeddings.detach().clone()  # the original geometry: margins and IAKD
        self.margins = text_margins(self.text0, gamma=self.gamma, function=self.margin)
        self.class_text = ClassText(model, classnames, templates, self.text_params)

    def text_parameters(self, model):
        return text_parameters(model, self.text_params) if self.schedule == "joint" else []

    @torch.no_grad()
    def refresh_classifier(self, model):
        model.set_classifier(self.class_text(model))

    def _probes(self, reference, train_data) -> torch.Tensor:
        count = min(self.probe_examples, len(train_data))
        loader = DataLoader(Subset(train_data, range(count)), batch_size=256)
        with torch.no_grad():
            return torch.cat([reference.encode_image(x.to(reference.device)).float() for x, _ in loader])

    def before_training(self, model, reference, train_data):
        if self.schedule != "staged" or self.text_steps == 0:
            return []
        history = tune_text(
            model,
            self.class_text,
            self._probes(reference, train_data),
            which=self.text_params,
            steps=self.text_steps,
            lr=self.text_lr,
            mhe_weight=self.mhe_weight,
            iakd_weight=self.iakd_weight,
            tau=self.tau,
        )
        self.refresh_classifier(model)
        return history

    def prepare(self, model, reference, images, labels):
        return {"reference_clean": reference.encode_image(images).float()}

    def forward(self, model, reference, images, adversarial, labels, context):
        joint = self.schedule == "joint"
        text = self.class_text(model) if joint else model.class_embeddings
        adv_embedding = model.encode_image(adversarial).float()
        tam = margin_cross_entropy(adv_embedding, text, labels, self.margins, tau=self.tau)
        takd = image_distillation(context["reference_clean"], adv_embedding, text, tau=self.tau)
        loss = tam + self.takd_weight * takd
        terms = {"tam": tam.detach(), "takd": takd.detach()}
        if joint:
            mhe = mhe_energy(text)
            iakd = probe_distillation(context["reference_clean"], self.text0, text, tau=self.tau)
            loss = loss + self.mhe_weight * mhe + self.iakd_weight * iakd
            terms.update(mhe=mhe.detach(), iakd=iakd.detach())
        logits = F.normalize(adv_embedding, dim=-1) @ text.detach().T
        return loss, {**terms, "adv_accuracy": adversarial_accuracy(logits, labels)}
