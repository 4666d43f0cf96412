"""APGD (Croce & Hein, 2020): the parameter-free ℓ∞ attacks of AutoAttack, with per-image early exit.

Written in torchattacks' conventions ([0,1] images, ``attack(images, labels) -> adv_images``) and following the
reference AutoAttack implementation step by step: a random start on the ε-sphere's corners scaled per image,
first step size 2ε, momentum 0.75 from the second iteration on, checkpoints after 22 % of the iterations and then
at shrinking intervals (−3 %, at least 6 %), where an image's step size halves and it restarts from its best point
if fewer than ρ = 75 % of its steps since the last checkpoint raised the loss, or if its step size was not halved
at the last checkpoint and its best loss has not risen since. Losses: cross-entropy, DLR, and targeted DLR
against each of the top-k other classes of the clean image (APGD-T); restarts run on the images still robust.

What the reference does not do, and why it is safe here: every quantity above is per image, so an image that is
misclassified at some iteration is finished (it is an adversarial example inside the ball) and can leave the
batch mid-run without changing any other image's trajectory. ``early_stop=True`` does that; the reference keeps
optimising it, which costs compute and changes no verdict. ``iterations`` records the forward-backward passes
each image received, so the saving can be counted independently of the hardware.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attack_base import Attack, derive_seeds, image_noise

LOSSES = ("ce", "dlr", "dlr_targeted")
MOMENTUM = 0.75  # weight of the new step against the previous move (the reference's a = 0.75)
RHO = 0.75  # fraction of loss increases since the last checkpoint below which the step size halves


def checkpoints(steps: int) -> list[int]:
    """Iteration indices (0-based) after which the step-size conditions are checked: the first after 22 % of
    ``steps``, then at intervals shrinking by 3 % of ``steps`` down to 6 % (the reference's schedule)."""
    interval = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, last = [], -1
    while last + interval < steps:
        last += interval
        points.append(last)
        interval = max(interval - shrink, shortest)
    return points


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Per-example DLR loss :math:`-(z_y - \max_{k \ne y} z_k) / (z_{\pi_1} - z_{\pi_3})`: invariant to the
    logits' scale and shift, so a saturated softmax cannot hide the gradient. Needs at least 3 classes."""
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    best_other = torch.where(logits.argmax(1) == labels, ordered[:, 1], ordered[:, 0])
    return -(true - best_other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Per-example targeted DLR loss :math:`-(z_y - z_t) / (z_{\pi_1} - (z_{\pi_3} + z_{\pi_4}) / 2)`.
    Needs at least 4 classes."""
    ordered = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


def minimum_classes(loss: str) -> int:
    """Classes a dataset needs for this loss (DLR compares the 3, targeted DLR the 4 largest logits)."""
    return {"ce": 2, "dlr": 3, "dlr_targeted": 4}[loss]


class APGD(Attack):
    r"""ℓ∞ APGD with the cross-entropy, DLR or targeted-DLR loss (APGD-CE, APGD-DLR, APGD-T).

    Arguments:
        model (nn.Module): model taking [0,1] images and returning logits.
        eps (float): ℓ∞ budget in pixel units. (Default: 1/255)
        steps (int): iterations per run. (Default: 100)
        loss (str): ``"ce"``, ``"dlr"`` or ``"dlr_targeted"``. (Default: ``"ce"``)
        restarts (int): runs from new random starts, each on the images still robust. (Default: 1)
        n_targets (int): APGD-T: target classes, the top ones of the clean logits after the true class,
            capped at classes − 1. (Default: 9)
        seed (int): seeds the random starts of images called without their own ``seeds``. (Default: 0)
        early_stop (bool): an image leaves the batch at the first iteration that misclassifies it. (Default: True)

    Attributes:
        iterations: after a call, forward-backward passes each image received (``[N]``, long).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]. - labels: :math:`(N)`. - output: like images.

    Examples::
        >>> attack = APGD(model, eps=4/255, steps=100, loss="dlr_targeted", n_targets=9)
        >>> adv_images = attack(images, labels)
        >>> attack.iterations.float().mean()
    """

    def __init__(self, model, eps=1 / 255, steps=100, loss="ce", restarts=1, n_targets=9, seed=0, early_stop=True):
        super().__init__(f"APGD-{loss}", model)
        if loss not in LOSSES:
            raise ValueError(f"unknown APGD loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.eps, self.steps, self.loss, self.restarts = eps, steps, loss, restarts
        self.n_targets, self.seed, self.early_stop = n_targets, seed, early_stop

    def forward(self, images, labels, seeds):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images.clone()
        robust = torch.ones(len(images), dtype=torch.bool, device=images.device)
        self.iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
        targets = [None]
        if self.loss == "dlr_targeted":
            with torch.no_grad():
                order = self.get_logits(images).argsort(dim=1, descending=True)
            if order.shape[1] < 4:
                raise ValueError(f"APGD-T needs at least 4 classes, the model has {order.shape[1]}")
            targets = [order[:, k] for k in range(1, min(self.n_targets, order.shape[1] - 1) + 1)]
        for t, target in enumerate(targets):
            for restart in range(self.restarts):
                index = robust.nonzero().squeeze(1)
                if len(index) == 0:
                    return adv
                run_target = None if target is None else target[index]
                # each image's start in each run (target, restart) comes from its own seed alone
                run_seeds = derive_seeds(seeds[index.cpu()], "apgd", t, restart)
                best, fooled, spent = self._run(images[index], labels[index], run_target, run_seeds)
                adv[index] = best
                robust[index[fooled]] = False
                self.iterations[index] += spent
        return adv

    def _loss(self, logits, labels, targets):
        if self.loss == "ce":
            return F.cross_entropy(logits, labels, reduction="none")
        if self.loss == "dlr":
            return dlr_loss(logits, labels)
        return targeted_dlr_loss(logits, labels, targets)

    def _evaluate(self, x, labels, targets):
        """Loss, gradient and misclassification of every image at ``x`` (one forward-backward pass)."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.get_logits(x)
            loss = self._loss(logits, labels, targets)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach().argmax(1) != labels

    def _run(self, images, labels, targets, seeds):
        """One APGD run; returns (adversarial or best-loss images, fooled mask, passes per image)."""
        n, eps = len(images), self.eps
        noise = 2 * image_noise(seeds, images.shape, like=images) - 1
        scale = noise.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (images.dim() - 1))
        x = (images + eps * noise / scale).clamp(0, 1)

        def project(z, lower, upper):
            return torch.minimum(torch.maximum(z, lower), upper)

        lower, upper = (images - eps).clamp(0, 1), (images + eps).clamp(0, 1)
        out = x.clone()
        fooled_all = torch.zeros(n, dtype=torch.bool, device=images.device)
        spent = torch.zeros(n, dtype=torch.long, device=images.device)
        alive = torch.arange(n, device=images.device)  # original positions of the images still in the batch

        loss, grad, fooled = self._evaluate(x, labels, targets)
        spent += 1
        state = {
            "images": images,
            "labels": labels,
            "lower": lower,
            "upper": upper,
            "x": x,
            "x_prev": x.clone(),
            "grad": grad,
            "x_best": x.clone(),
            "grad_best": grad.clone(),
            "loss_best": loss.clone(),
            "loss_last": loss.clone(),
            "loss_at_check": loss.clone(),
            "reduced_at_check": torch.ones(n, dtype=torch.bool, device=images.device),
            "increases": torch.zeros(n, device=images.device),
            "step": torch.full((n,), 2 * eps, device=images.device, dtype=images.dtype),
        }
        if targets is not None:
            state["targets"] = targets

        def settle(fooled_now):
            """Record the images fooled now; with early stopping, drop them from the batch."""
            nonlocal alive, state
            positions = alive[fooled_now]
            out[positions] = state["x"][fooled_now]
            fooled_all[positions] = True
            if self.early_stop and fooled_now.any():
                keep = ~fooled_now
                alive = alive[keep]
                state = {key: value[keep] for key, value in state.items()}

        settle(fooled)
        marks = set(checkpoints(self.steps))
        intervals = iter(b - a for a, b in zip([-1] + sorted(marks), sorted(marks)))
        interval = next(intervals, self.steps)
        for i in range(self.steps):
            if len(alive) == 0:
                break
            s = state
            view = (-1,) + (1,) * (s["x"].dim() - 1)
            step = s["step"].view(view)
            with torch.no_grad():
                z = project(s["x"] + step * s["grad"].sign(), s["lower"], s["upper"])
                if i > 0:
                    z = project(
                        s["x"] + MOMENTUM * (z - s["x"]) + (1 - MOMENTUM) * (s["x"] - s["x_prev"]),
                        s["lower"],
                        s["upper"],
                    )
                s["x_prev"], s["x"] = s["x"], z
            loss, grad, fooled = self._evaluate(s["x"], s["labels"], s.get("targets"))
            spent[alive] += 1
            s["grad"] = grad
            s["increases"] += (loss > s["loss_last"]).float()
            s["loss_last"] = loss
            better = loss > s["loss_best"]
            s["x_best"][better], s["grad_best"][better] = s["x"][better], grad[better]
            s["loss_best"] = torch.where(better, loss, s["loss_best"])
            # record a fooled image at the iterate that fooled it, before a checkpoint can move it back
            settle(fooled & ~fooled_all[alive])
            s = state
            if i in marks:
                reduce = (s["increases"] <= RHO * interval) | (
                    ~s["reduced_at_check"] & (s["loss_at_check"] >= s["loss_best"])
                )
                s["reduced_at_check"], s["loss_at_check"] = reduce, s["loss_best"].clone()
                s["step"] = torch.where(reduce, s["step"] / 2, s["step"])
                # restart from the best point: the move that momentum carries on is measured from the iterate
                # before this step, as in the reference
                s["x"] = torch.where(reduce.view(view), s["x_best"], s["x"])
                s["grad"] = torch.where(reduce.view(view), s["grad_best"], s["grad"])
                s["increases"] = torch.zeros_like(s["increases"])
                interval = next(intervals, interval)
        survivors = ~fooled_all[alive]
        out[alive[survivors]] = state["x_best"][survivors]
        return out, fooled_all, spent
