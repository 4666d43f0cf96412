"""The base of zsr_lab's attacks: torchattacks' calling conventions, without depending on torchattacks.

An attack is built once for a model and budget and called as ``attack(images, labels) -> adv_images`` on [0,1]
images, as in torchattacks; the model is put in eval mode for the attack and its own mode restored after. The
package does not install torchattacks because its metadata pins ``requests~=2.25.1``, which would downgrade the
``requests`` of an environment such as Colab's; torchattacks' attacks still work on a :class:`ZeroShotCLIP`.
"""

from __future__ import annotations

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

    def __init__(self, name: str, model: nn.Module):
        self.name, self.model = name, model
        self.device = next(model.parameters()).device
        self.iterations = torch.zeros(0, dtype=torch.long)

    def get_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        training = self.model.training
        self.model.eval()
        try:
            return self.forward(images, labels)
        finally:
            self.model.train(training)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
