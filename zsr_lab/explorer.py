"""An interactive look at text-guided attention: pick an image, a class prompt, ε, a model and the kind of map.

:class:`AttentionExplorer` draws one figure per choice (:meth:`~AttentionExplorer.show`, usable without widgets,
so a static book page shows it too) and wraps it in ipywidgets controls (:meth:`~AttentionExplorer.widget`).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from . import datasets
from .attacks import pgd_linf
from .attention import MAP_KINDS, attention_drift, attention_maps, non_class_classifier
from .classifier import dataset_classifier
from .models import ZeroShotCLIP
from .plots import COLUMN_INCHES, FONT_POINTS, attention_colour_bar, overlay_attention, suptitle

TRUE_CLASS = "(true class)"


class AttentionExplorer:
    """Where do the models look, on clean and on adversarial images?

    For the chosen image the attack is PGD on the chosen model (cross-entropy of the true class, ``steps``
    sign steps of ε/4, random start), so each model is shown under its own worst case. The map is computed for
    the chosen prompt's class: its class map, its non-class map ("This is not a photo of a {}") or the
    complementary map ``A_c ⊙ (1 − A_n)``.

    Arguments:
        models: name → :class:`ZeroShotCLIP`, e.g. ``{"CLIP (zero-shot)": clip, "TGA-ZSR": result.model}``. Each
            model's classifier is set to ``dataset``'s classes.
        dataset: registry name of the dataset to take the images from (its test split).
        n_images: how many images (a fixed spread over the split) the explorer offers.
        eps_choices: the budgets offered, in units of 1/255.
        steps: PGD steps.
        data_root: where the dataset lives (as everywhere in zsr_lab).

    Examples::

        >>> explorer = AttentionExplorer({"CLIP": clip, "TeCoA": tecoa.model}, "fashion_mnist")
        >>> explorer.show(image=3, eps=4, model="TeCoA")    # one static figure
        >>> explorer.widget()                                 # the same, with controls (in Jupyter)
    """

    def __init__(
        self,
        models: Mapping[str, ZeroShotCLIP],
        dataset: str,
        *,
        n_images: int = 24,
        eps_choices: tuple[float, ...] = (0, 1, 2, 4, 8),
        steps: int = 10,
        data_root=None,
        seed: int = 0,
    ):
        if not models:
            raise ValueError("models must name at least one model, e.g. {'CLIP (zero-shot)': clip}")
        self.models = dict(models)
        self.spec = datasets.get_spec(dataset)
        self.classnames = self.spec.classnames
        self.eps_choices, self.steps, self.seed = tuple(eps_choices), steps, seed
        first = next(iter(self.models.values()))
        data = datasets.load_dataset(dataset, data_root=data_root, image_size=first.image_size[0], verbose=False)
        indices = torch.linspace(0, len(data) - 1, n_images).long().tolist()
        self.images = torch.stack([data[i][0] for i in indices])
        self.labels = torch.tensor([data[i][1] for i in indices])
        self._non_class = {}
        for name, model in self.models.items():
            model.set_classifier(dataset_classifier(model, dataset))
            self._non_class[name] = non_class_classifier(model, self.classnames)
        self._adversarial: dict[tuple[str, int, float], torch.Tensor] = {}

    def adversarial(self, model: str, image: int, eps: float) -> torch.Tensor:
        """The PGD image (``[1, C, h, w]``) of image ``image`` against ``model`` at ``eps``/255 (cached)."""
        key = (model, image, float(eps))
        if key not in self._adversarial:
            clip, x = self.models[model], self.images[image : image + 1].to(self.models[model].device)
            if eps == 0:
                self._adversarial[key] = x.cpu()
            else:
                y = self.labels[image : image + 1].to(clip.device)
                generator = torch.Generator().manual_seed(self.seed + image)
                start = torch.rand(x.shape, generator=generator).to(clip.device)
                adv = pgd_linf(
                    lambda a: F.cross_entropy(clip(a), y),
                    x,
                    eps=eps / 255,
                    step_size=eps / 4 / 255,
                    steps=self.steps,
                    start=start,
                )
                self._adversarial[key] = adv.detach().cpu()
        return self._adversarial[key]

    def maps(self, model: str, images: torch.Tensor, prompt_class: int, kind: str) -> torch.Tensor:
        """Maps ``[B, H, W]`` of ``images`` under ``model`` for one class and one kind of map."""
        if kind not in MAP_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MAP_KINDS)}, got {kind!r}")
        clip = self.models[model]
        class_text, non_class_text = clip.class_embeddings[prompt_class], self._non_class[model][prompt_class]
        if kind == "class":
            return attention_maps(clip, images, class_text)
        if kind == "non_class":
            return attention_maps(clip, images, non_class_text)
        return attention_maps(clip, images, class_text, non_class_text=non_class_text)

    def show(
        self, image: int = 0, prompt: str = TRUE_CLASS, eps: float = 4, model: str | None = None, kind: str = "class"
    ):
        """Clean image with its map, adversarial image with its map, and where the map moved."""
        model = model or next(iter(self.models))
        if model not in self.models:
            raise ValueError(f"unknown model {model!r}; the explorer has {', '.join(self.models)}")
        if not 0 <= image < len(self.images):
            raise ValueError(f"image must be between 0 and {len(self.images) - 1}, got {image}")
        label = int(self.labels[image])
        prompt_class = label if prompt == TRUE_CLASS else self.classnames.index(prompt)
        clean, adversarial = self.images[image : image + 1], self.adversarial(model, image, eps)
        clean_map, adv_map = (self.maps(model, x, prompt_class, kind) for x in (clean, adversarial))
        with torch.no_grad():
            clip = self.models[model]
            clean_pred, adv_pred = (int(clip(x.to(clip.device)).argmax(1)) for x in (clean, adversarial))
        fig, axes = plt.subplots(1, 3, figsize=(COLUMN_INCHES, 3.0))
        vmax = max(float(clean_map.max()), float(adv_map.max()), 1e-6)  # one scale for both maps
        for ax, x, m, pred, what in (
            (axes[0], clean, clean_map, clean_pred, "clean"),
            (axes[1], adversarial, adv_map, adv_pred, f"PGD-{self.steps}, ε = {eps:g}/255"),
        ):
            artist = overlay_attention(ax, x[0], m[0], vmax=vmax)
            ax.set_title(
                f"{what}\npredicted: {self.classnames[pred][:18]}",
                fontsize=FONT_POINTS,
                color="tab:green" if pred == label else "tab:red",
            )
        shift = (adv_map[0] - clean_map[0]).numpy()
        limit = max(0.1, float(abs(shift).max()))  # small shifts stay visible
        image_artist = axes[2].imshow(shift, cmap="coolwarm", vmin=-limit, vmax=limit)
        attention_colour_bar(fig, artist, axes[:2].tolist())
        fig.colorbar(image_artist, ax=axes[2], fraction=0.046).ax.set_label("<colorbar>")
        axes[2].set_title(
            f"adversarial − clean map\ndrift {float(attention_drift(adv_map, clean_map)[0]):.3f}", fontsize=FONT_POINTS
        )
        for ax in axes:
            ax.axis("off")
        prompt_name = self.classnames[prompt_class]
        suptitle(
            fig, f'{model}: {kind.replace("_", "-")} map for "{prompt_name}" (true class: {self.classnames[label]})'
        )
        return fig

    def widget(self):
        """ipywidgets controls around :meth:`show` (needs a running Jupyter kernel to react)."""
        import ipywidgets as widgets

        controls = {
            "image": widgets.IntSlider(value=0, min=0, max=len(self.images) - 1, description="image"),
            "prompt": widgets.Dropdown(options=[TRUE_CLASS, *self.classnames], description="prompt"),
            "eps": widgets.SelectionSlider(
                options=list(self.eps_choices), value=max(self.eps_choices), description="ε × 255"
            ),
            "model": widgets.Dropdown(options=list(self.models), description="model"),
            "kind": widgets.ToggleButtons(options=list(MAP_KINDS), description="map"),
        }

        def draw(**choice):
            self.show(**choice)
            plt.show()

        output = widgets.interactive_output(draw, controls)
        return widgets.VBox(
            [
                widgets.HBox([controls["image"], controls["eps"]]),
                widgets.HBox([controls["model"], controls["prompt"]]),
                controls["kind"],
                output,
            ]
        )
