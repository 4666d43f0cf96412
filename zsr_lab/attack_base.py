"""The base of zsr_lab's attacks: torchattacks' calling conventions, without depending on torchattacks.

An attack is built once for a model and budget and called as ``attack(images, labels) -> adv_images`` on [0,1]
images, as in torchattacks; the model is put in eval mode for the attack and its own mode restored after. The
package does not install torchattacks because its metadata pins ``requests~=2.25.1``, which would downgrade the
``requests`` of an environment such as Colab's; torchattacks' attacks still work on a :class:`ZeroShotCLIP`.

Randomness is drawn per image, never per batch: an attack called with ``seeds`` (one integer per image, e.g. from
the image's identity in its split) draws each image's random start from that image's seed alone, so an image's
verdict does not depend on which images share its batch, on the batch size, or on the number of processes.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


class Attack:
    """``attack(images, labels) -> adv_images``: subclasses implement :meth:`forward` and set ``iterations``.

    Arguments:
        name (str): the attack's name, for messages.
        model (nn.Module): model taking [0,1] images and returning logits.

    Attributes:
        iterations: after a call, forward-backward passes (queries for a black-box attack) each image received
            (``[N]``, long).
    """

    seed: int | None = None  # the attack's own seed; None: seeds are drawn from torch's global generator

    def __init__(self, name: str, model: nn.Module):
        self.name, self.model = name, model
        self.device = next(model.parameters()).device
        self.iterations = torch.zeros(0, dtype=torch.long)

    def get_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor | None = None) -> torch.Tensor:
        """Attack ``images``; ``seeds`` (``[N]`` integers, one per image) fix each image's randomness. Without
        them, an image's seed comes from the attack's ``seed`` and its position in the batch (or from torch's
        global generator when the attack has no seed)."""
        if seeds is None:
            seeds = positional_seeds(len(images), self.seed)
        elif len(seeds) != len(images):
            raise ValueError(f"{self.name}: {len(seeds)} seeds for {len(images)} images; pass one seed per image")
        training = self.model.training
        self.model.eval()
        try:
            return self.forward(images, labels, torch.as_tensor(seeds, dtype=torch.long).cpu())
        finally:
            self.model.train(training)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


SEED_LIMIT = 2**63 - 1


def seed_from(*parts) -> int:
    """A 56-bit seed fixed by ``parts`` (their text), the same on every machine and in every process."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def positional_seeds(n: int, seed: int | None) -> torch.Tensor:
    """Seeds for ``n`` images known only by their position: from ``seed`` and the position, or drawn from torch's
    global generator when ``seed`` is ``None`` (so ``torch.manual_seed`` fixes them)."""
    if seed is None:
        return torch.randint(SEED_LIMIT, (n,), dtype=torch.long)
    return torch.tensor([seed_from(seed, i) for i in range(n)], dtype=torch.long)


def derive_seeds(seeds: torch.Tensor, *stream) -> torch.Tensor:
    """Per image, a new seed for another stream of its randomness (a restart, a target class): a function of the
    image's seed and ``stream`` only."""
    return torch.tensor([seed_from(int(s), *stream) for s in seeds.tolist()], dtype=torch.long)


def image_noise(seeds: torch.Tensor, shape, *, like: torch.Tensor, normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) noise (standard normal with ``normal``) of ``shape`` (``[N, ...]``), each image's slice drawn
    from its own seed on the CPU: the same values for an image whatever its batch, device or process. Returned on
    ``like``'s device and dtype.

    Shape:
        - seeds: :math:`(N)`; output: ``shape``.
    """
    if len(seeds) != shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {shape[0]} images")
    generator = torch.Generator()
    noise = torch.empty(tuple(shape), dtype=torch.float32)
    for i, seed in enumerate(seeds.tolist()):
        generator.manual_seed(int(seed))
        draw = torch.randn if normal else torch.rand
        noise[i] = draw(tuple(shape[1:]), generator=generator)
    return noise.to(device=like.device, dtype=like.dtype)
