"""Figures the chapters draw (seaborn/matplotlib); every figure that shows numbers names its scale."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from . import datasets
from .attention import attention_maps
from .evaluate import select_attack
from .models import ZeroShotCLIP

COLUMN_INCHES = 7.0  # the book's text column (about 690 px): a figure this wide is shown at its own size


def show_examples(dataset_names: Sequence[str], *, per_dataset: int = 6, image_size: int = 224,
                  data_root=None, seed: int = 0):
    """A grid of random test images, one row per dataset, titled with their class names."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(dataset_names), per_dataset, figsize=(1.6 * per_dataset, 1.9 * len(dataset_names)),
                             squeeze=False)
    for row, name in zip(axes, dataset_names):
        data = datasets.load_dataset(name, data_root=data_root, image_size=image_size, verbose=False)
        names = datasets.get_spec(name).classnames
        for ax, index in zip(row, rng.choice(len(data), per_dataset, replace=False)):
            image, label = data[int(index)]
            ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_title(names[label][:24], fontsize=8)
            ax.axis("off")
        row[0].text(-0.15, 0.5, datasets.get_spec(name).title, transform=row[0].transAxes, rotation=90,
                    ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_class_similarity(class_embeddings: torch.Tensor, classnames: Sequence[str], *, title: str = "", ax=None):
    """Heatmap of cosine similarities between the class text embeddings of a zero-shot classifier."""
    similarity = (class_embeddings @ class_embeddings.T).cpu().numpy()
    ax = ax or plt.subplots(figsize=(6, 5))[1]
    sns.heatmap(pd.DataFrame(similarity, index=classnames, columns=classnames), ax=ax, cmap="viridis",
                square=True, cbar_kws={"label": "cosine similarity"})
    ax.set_title(title)
    return ax


@torch.no_grad()
def show_predictions(model: ZeroShotCLIP, images: torch.Tensor, labels: Sequence[int],
                     classnames: Sequence[str], *, k: int = 3):
    """Each image above a bar chart of its top-k zero-shot class probabilities (true class in green)."""
    probabilities = model(images.to(model.device)).softmax(dim=-1).cpu()
    fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.0), squeeze=False,
                             gridspec_kw={"height_ratios": [1.4, 1]})
    for column, (image, label, probs) in enumerate(zip(images, labels, probabilities)):
        axes[0, column].imshow(image.permute(1, 2, 0).numpy())
        axes[0, column].set_title(classnames[label][:24], fontsize=8)
        axes[0, column].axis("off")
        top = probs.topk(min(k, len(classnames)))
        colours = ["tab:green" if int(i) == label else "tab:gray" for i in top.indices]
        ax = axes[1, column]
        ax.barh(range(len(top.values)), top.values.numpy()[::-1], color=colours[::-1])
        ax.set_yticks(range(len(top.values)), [classnames[int(i)][:14] for i in top.indices][::-1], fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return fig


def plot_accuracy(table: pd.DataFrame, *, scale: str, hue: str | None = None, value: str = "accuracy",
                  title: str = "Zero-shot accuracy", attack: str | None = None, ax=None):
    """Bar chart of accuracy per dataset (with the plain mean as its own bar), labelled with the scale; robust
    accuracy is shown under one attack (default: the table's first, the protocol's worst case)."""
    rows = table[table["dataset"] != "mean"]
    if value == "robust_accuracy":
        rows = select_attack(rows, attack)
    ax = ax or plt.subplots(figsize=(max(5.0, 0.7 * rows["dataset"].nunique() + 2), 3.6))[1]
    sns.barplot(data=rows, x="dataset", y=value, hue=hue, ax=ax)
    mean = rows.groupby(hue)[value].mean() if hue else pd.Series({"": rows[value].mean()})
    text = ", ".join(f"{k}: {v:.1f}" if k else f"{v:.1f}" for k, v in mean.items())
    ax.set_title(f"{title} ({scale} scale) — mean {text} %")
    ax.set_ylabel(f"{value} (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=30)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.0f", fontsize=7)
    return ax


def show_adversarial(clean: torch.Tensor, adversarial: torch.Tensor, clean_pred: Sequence[int],
                     adv_pred: Sequence[int], labels: Sequence[int], classnames: Sequence[str], *, eps_label: str):
    """Clean images, their perturbations (amplified to be visible) and the adversarial images, with predictions."""
    n = len(clean)
    fig, axes = plt.subplots(3, n, figsize=(2.0 * n, 6.2), squeeze=False)
    delta = adversarial - clean
    scale = delta.abs().max().clamp_min(1e-12)
    for i in range(n):
        tiles = [(clean[i], f"{classnames[clean_pred[i]][:16]}", clean_pred[i] == labels[i]),
                 (0.5 + 0.5 * delta[i] / scale, "δ (amplified)", None),
                 (adversarial[i], f"{classnames[adv_pred[i]][:16]}", adv_pred[i] == labels[i])]
        for row, (image, title, right) in enumerate(tiles):
            ax = axes[row, i]
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_title(title, fontsize=8, color={True: "tab:green", False: "tab:red", None: "black"}[right])
            ax.axis("off")
    axes[0, 0].text(-0.1, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, ha="right", va="center")
    axes[2, 0].text(-0.1, 0.5, f"adversarial\n{eps_label}", transform=axes[2, 0].transAxes, rotation=90,
                    ha="right", va="center")
    fig.tight_layout()
    return fig


@torch.no_grad()
def show_budget_series(model: ZeroShotCLIP, image: torch.Tensor, label: torch.Tensor, classnames: Sequence[str], *,
                       budgets: Sequence[float] = (0, 1, 2, 4, 8, 16), steps: int = 10, seed: int = 0):
    """One image attacked with PGD at growing budgets, side by side, each titled with the predicted class and its
    probability (green: right, red: wrong): what the chapter's ε slider shows, without a running kernel.

    Arguments:
        model: a :class:`ZeroShotCLIP` with the image's classifier installed.
        image: ``[1, C, H, W]`` in [0, 1]; label: ``[1]``.
        budgets: ε in units of 1/255 (0: the clean image).
    """
    from .attacks import build_attack

    fig, axes = plt.subplots(1, len(budgets), figsize=(COLUMN_INCHES, COLUMN_INCHES / len(budgets) + 0.8),
                             squeeze=False)
    for ax, eps in zip(axes[0], budgets):
        torch.manual_seed(seed)
        with torch.enable_grad():
            adversarial = image if eps == 0 else build_attack(model, f"pgd-{steps}", eps,
                                                              n_classes=len(classnames))(image, label)
        probabilities = model(adversarial.to(model.device)).softmax(-1)[0].cpu()
        top = int(probabilities.argmax())
        ax.imshow(adversarial[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.set_title(f"ε = {eps:g}/255\n{classnames[top][:12]} {100 * probabilities[top]:.0f} %", fontsize=9,
                     color="tab:green" if top == int(label[0]) else "tab:red")
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_robustness_curve(table: pd.DataFrame, *, scale: str, hue: str = "dataset", attack: str | None = None,
                          ax=None):
    """Robust accuracy against ε (in units of 1/255), one line per dataset (or per ``hue``, e.g. ``"method"``:
    then each line is the mean over datasets), under one attack (default: the table's first, the protocol's
    worst case), labelled with the scale."""
    rows = select_attack(table[table["dataset"] != "mean"], attack)
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    sns.lineplot(data=rows, x="eps", y="robust_accuracy", hue=hue, marker="o", errorbar=None, ax=ax)
    attacks = ", ".join(rows["attack"].unique())
    over = "" if hue == "dataset" else f", mean over {rows['dataset'].nunique()} datasets"
    ax.set_title(f"Robust accuracy under {attacks}{over} ({scale} scale)")
    ax.set_xlabel("ε (× 1/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    return ax


def plot_training(history: pd.DataFrame, *, scale: str, title: str = "Adversarial fine-tuning"):
    """Training loss per logged step (left) and clean/robust accuracy on the held-out training images (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    train = history[history["kind"] == "train"]
    bookkeeping = {"kind", "step", "epoch", "lr", "images_per_s", "adv_accuracy", "clean_accuracy",
                   "robust_accuracy", "attack", "n"}
    terms = [c for c in train.columns if c not in bookkeeping and train[c].notna().any()]  # each method's terms
    for term in terms:
        left.plot(train["step"], train[term], label=term)
    left.set_xlabel("optimizer step")
    left.set_title(f"{title}: loss ({scale} scale)")
    left.legend(fontsize=8)
    holdout = history[history["kind"] == "holdout"]
    if len(holdout):
        tidy = holdout.melt(id_vars="step", value_vars=["clean_accuracy", "robust_accuracy"],
                            var_name="accuracy", value_name="percent")
        sns.lineplot(data=tidy, x="step", y="percent", hue="accuracy", marker="o", ax=right)
        right.set_title(f"held-out training images, {holdout['attack'].iloc[-1]}")
        right.set_ylim(0, 100)
    else:
        right.axis("off")
    fig.tight_layout()
    return fig


def plot_tradeoff(summary: pd.DataFrame, *, scale: str, eps: float, attack: str | None = None, ax=None,
                  title: str | None = None):
    """Mean clean vs mean robust accuracy at one ε, one point per method (a ``summarize`` table), under one
    attack (default: the table's first, the protocol's worst case); ``title`` replaces the default one (which
    names the scale)."""
    rows = select_attack(summary[summary["eps"] == eps], attack)
    ax = ax or plt.subplots(figsize=(5.2, 4.2))[1]
    sns.scatterplot(data=rows, x="clean_accuracy", y="robust_accuracy", hue="method", s=90, ax=ax)
    # each label goes right of its point, moved down or up until its box is clear of the labels placed so far
    # (boxes estimated in units of the data span, which the axes show at about 2/3 of their size)
    span_x = max(np.ptp(rows["clean_accuracy"]), 1.0)
    span_y = max(np.ptp(rows["robust_accuracy"]), 1.0)
    placed = []
    for _, row in rows.iterrows():
        x, y = row["clean_accuracy"] / span_x, row["robust_accuracy"] / span_y
        for offset in (4, -8, 16, -20, 28, -32):
            box = (x + 0.02, x + 0.02 + 0.024 * len(row["method"]), y + 0.006 * offset, y + 0.006 * offset + 0.06)
            if not any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(row["method"], (row["clean_accuracy"], row["robust_accuracy"]), textcoords="offset points",
                    xytext=(5, offset), fontsize=8)
    ax.margins(0.25)  # room for the labels
    ax.set_xlabel("mean clean accuracy (%)")
    under = f" ({rows['attack'].iloc[0]})" if "attack" in rows.columns and len(rows) else ""
    ax.set_ylabel(f"mean robust accuracy at {eps:g}/255{under} (%)")
    ax.set_title(title or f"Clean vs robust, held-out zero-shot sets ({scale} scale)")
    ax.legend(fontsize=8, loc="best")
    return ax


def plot_heatmap(table: pd.DataFrame, *, scale: str, value: str = "robust_accuracy", eps: float | None = None,
                 attack: str | None = None, ax=None):
    """Accuracy per method (rows, in order of appearance) and dataset (columns, plus their mean), annotated.

    Arguments:
        table: per-dataset rows of one or more methods (e.g. the evaluation tables of several runs).
        value: ``"robust_accuracy"`` or ``"clean_accuracy"``.
        eps: keep the rows at this ε (robust accuracy needs one; clean accuracy is the same at every ε).
        attack: the attack or suite (default: the table's first, the protocol's worst case).
    """
    rows = select_attack(table[table["dataset"] != "mean"], attack)
    if eps is not None:
        rows = rows[rows["eps"] == eps]
    grid = rows.pivot_table(index="method", columns="dataset", values=value, aggfunc="mean", sort=False)
    grid["mean"] = grid.mean(axis=1)
    ax = ax or plt.subplots(figsize=(1.0 * grid.shape[1] + 3, 0.45 * grid.shape[0] + 1.6))[1]
    sns.heatmap(grid, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, cbar_kws={"label": "%"}, ax=ax)
    ax.axvline(grid.shape[1] - 1, color="white", lw=2)  # the mean column is not a dataset
    what = "robust accuracy" if value == "robust_accuracy" else "clean accuracy"
    attack = f" under {', '.join(rows['attack'].unique())} at {eps:g}/255" if value == "robust_accuracy" else ""
    ax.set_title(f"{what.capitalize()}{attack} ({scale} scale)")
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=30)
    return ax


def overlay_attention(ax, image: torch.Tensor, attention_map: torch.Tensor, *, alpha: float = 0.5) -> None:
    """Draw a [C, h, w] image in [0,1] with its [H, W] attention map on top (jet, 0 blue … 1 red)."""
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    size = tuple(attention_map.shape[-2:])
    if tuple(image.shape[-2:]) != size:  # show the image at the map's size
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy())
    ax.imshow(attention_map.detach().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)


def show_attention(rows: Mapping[str, tuple[torch.Tensor, torch.Tensor]], *,
                   captions: Mapping[str, Sequence[tuple[str, bool | None]]] | None = None, alpha: float = 0.5,
                   title: str | None = None):
    """Attention maps overlaid on their images: one row per entry, one column per image.

    Arguments:
        rows: row label → (images ``[B, C, h, w]`` in [0,1], maps ``[B, H, W]`` in [0,1]), e.g.
            ``{"clean · CLIP": (images, clean_maps), "PGD · CLIP": (adversarial, adversarial_maps)}``.
        captions: row label → one (text, correct) per image; the text is green when ``correct`` is True,
            red when False, black when None.
        alpha: opacity of the map (jet colour map, 0 blue … 1 red).
    """
    labels = list(rows)
    n = len(rows[labels[0]][0])
    fig, axes = plt.subplots(len(labels), n, figsize=(1.55 * n + 0.8, 1.75 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        images, maps = rows[label]
        for i in range(n):
            ax = axes[r, i]
            overlay_attention(ax, images[i], maps[i], alpha=alpha)
            ax.set_xticks([])
            ax.set_yticks([])
            if captions and label in captions:
                text, correct = captions[label][i]
                ax.set_title(text[:18], fontsize=7, color={True: "tab:green", False: "tab:red", None: "black"}[correct])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_model_attention(views: Mapping[str, tuple[ZeroShotCLIP, torch.Tensor]], labels: torch.Tensor,
                         classnames: Sequence[str], *, title: str | None = None):
    """Each row: a model and the images it sees, with its attention map for the true class overlaid and its
    prediction as the caption (green when right). Each model must have the images' classifier installed."""
    rows, captions = {}, {}
    for label, (model, images) in views.items():
        text = model.class_embeddings[labels.to(model.device)]
        rows[label] = (images, attention_maps(model, images, text))
        with torch.no_grad():
            predicted = model(images.to(model.device)).argmax(1).cpu()
        captions[label] = [(classnames[p], p == y) for p, y in zip(predicted.tolist(), labels.tolist())]
    return show_attention(rows, captions=captions, title=title)


def show_attention_shift(models: Mapping[str, ZeroShotCLIP], images: torch.Tensor, labels: torch.Tensor, *,
                         masks: torch.Tensor | None = None, eps: float = 4, steps: int = 10, seed: int = 0,
                         title: str | None = None):
    """Where each model looks, clean and under its own attack, and how much that moved.

    One row per model; for each image four panels: the image (with the object's outline when ``masks`` are
    given), the model's class map on it, the map on the model's own PGD image (:func:`zsr_lab.attention.perturbed_images`:
    ε, ``steps``, ``seed``), and the absolute difference ``|A(x_adv) − A(x)|``. Maps use one perceptual colour map
    (magma) on a shared 0–1 scale with its colour bar; differences a second one (viridis) with its own. Each panel
    title gives the mass on the object (when masks are given) or the prediction. Each model must have the images'
    classifier installed.

    Arguments:
        models: name → model, shown top to bottom.
        images: [0,1] images ``[B, C, H, W]`` at the models' input size (keep B small: 2–3); labels: ``[B]``.
        masks: the objects' masks ``[B, H, W]`` (:func:`zsr_lab.datasets.object_masks`), or None.
    """
    from .attention import attention_mass_in_object, perturbed_images

    n, panels = len(images), ("image", "clean map", "attacked map", "|attacked − clean|")
    fig, axes = plt.subplots(len(models), 4 * n, figsize=(1.45 * 4 * n + 1.2, 1.6 * len(models) + 0.5),
                             squeeze=False)
    for row, (name, model) in enumerate(models.items()):
        x, y = images.to(model.device), labels.to(model.device)
        adversarial = perturbed_images(model, x, y, eps=eps, steps=steps, seed=seed)["adversarial"]
        text = model.class_embeddings[y]
        clean_maps, adversarial_maps = attention_maps(model, x, text), attention_maps(model, adversarial, text)
        with torch.no_grad():
            predicted = model(adversarial).argmax(1).cpu()
        for i in range(n):
            cells = axes[row, 4 * i: 4 * i + 4]
            cells[0].imshow(images[i].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            maps = cells[1].imshow(clean_maps[i].numpy(), cmap="magma", vmin=0, vmax=1)
            cells[2].imshow(adversarial_maps[i].numpy(), cmap="magma", vmin=0, vmax=1)
            shift = cells[3].imshow((adversarial_maps[i] - clean_maps[i]).abs().numpy(), cmap="viridis", vmin=0,
                                    vmax=1)
            for cell, panel in zip(cells, panels):
                cell.set_xticks([])
                cell.set_yticks([])
                if masks is not None:
                    cell.contour(masks[i].cpu().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
                if row == 0:
                    cell.set_title(panel, fontsize=7)
            if masks is not None:
                for cell, view in ((cells[1], clean_maps), (cells[2], adversarial_maps)):
                    mass = float(attention_mass_in_object(view[i:i + 1], masks[i:i + 1].cpu()))
                    cell.set_xlabel(f"on object {mass:.2f}", fontsize=7)
            cells[3].set_xlabel(f"attacked: {'right' if predicted[i] == labels[i] else 'wrong'}", fontsize=7)
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title or f"Class attention clean and under each model's own PGD-{steps}, ε = {eps:g}/255",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    for left, artist, label in ((0.895, maps, "attention (class map)"), (0.955, shift, "|change|")):
        bar = fig.colorbar(artist, cax=fig.add_axes((left, 0.15, 0.012, 0.7), label="<colorbar>"))
        bar.set_label(label, fontsize=7)
        bar.ax.tick_params(labelsize=7)
    return fig


def _bar_panels(tidy: pd.DataFrame, *, panel: str, x: str, y: str, hue: str, ylabel: str, width: float,
                decorate=None):
    """One bar panel per value of ``panel`` (shared y axis), the legend right of the last panel (outside the bars);
    ``decorate(ax, rows)`` adds to each panel before its legend is drawn. Returns the figure."""
    names = list(dict.fromkeys(tidy[panel]))
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names) + 1, 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        rows = tidy[tidy[panel] == name]
        sns.barplot(data=rows, x=x, y=y, hue=hue, ax=ax)
        if decorate is not None:
            decorate(ax, rows)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("")  # the tick labels name the bars
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylabel(ylabel)
        if ax is axes[0, -1]:
            ax.legend(fontsize=7, title=hue, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        else:
            ax.get_legend().remove()
    return fig


def plot_attention_drift(table: pd.DataFrame, *, scale: str):
    """Mean attention drift per dataset on clean, randomly perturbed and attacked images, one panel per model
    (a :func:`zsr_lab.attention.measure_attention_drift` table)."""
    tidy = table.melt(id_vars=["model", "dataset"], value_vars=["clean", "random_noise", "adversarial"],
                      var_name="images", value_name="drift")
    fig = _bar_panels(tidy, panel="model", x="dataset", y="drift", hue="images", width=3.6,
                      ylabel="attention drift (RMS per pixel)")
    eps = table["eps"].iloc[0]
    fig.suptitle(f"How far the class attention moves from the pre-trained model's clean map, ε = {eps:g}/255 "
                 f"({scale} scale)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_attention_localisation(table: pd.DataFrame, *, scale: str, value: str = "mass_in_object"):
    """Share of the class attention on the object, per model, for clean, randomly perturbed and attacked images,
    one panel per dataset, with the share a uniform map would get as a dashed line (a
    :func:`zsr_lab.attention.measure_attention_localisation` table; ``value="pointing"`` for the pointing game)."""
    if value not in ("mass_in_object", "pointing"):
        raise ValueError(f"value must be 'mass_in_object' or 'pointing', got {value!r}")

    def chance_level(ax, rows):  # a map spread evenly over the image
        ax.axhline(rows["uniform"].iloc[0], color="black", linestyle="--", linewidth=1, label="uniform map")

    fig = _bar_panels(table, panel="dataset", x="model", y=value, hue="condition", width=3.8,
                      ylabel="attention mass on the object" if value == "mass_in_object" else "pointing game hits",
                      decorate=chance_level if value == "mass_in_object" else None)
    eps = table["eps"].iloc[0]
    fig.suptitle(f"Where the class attention falls: clean, random ±{eps:g}/255 noise, each model's own PGD "
                 f"({scale} scale)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_sensitivity(table: pd.DataFrame, *, scale: str, eps: float, reference: pd.DataFrame | None = None,
                     attack: str | None = None):
    """Mean clean and robust accuracy against each swept option (a :func:`zsr_lab.train.sensitivity` table),
    robust under one attack (default: the table's first, the protocol's worst case).

    One panel per option; ``reference`` (a ``summarize`` table, e.g. TeCoA's) draws dashed horizontal lines.
    """
    rows = select_attack(table[table["eps"] == eps], attack)
    if reference is not None:
        reference = select_attack(reference, rows["attack"].iloc[0] if "attack" in rows.columns else None)
    options = list(dict.fromkeys(rows["option"]))
    fig, axes = plt.subplots(1, len(options), figsize=(4.6 * len(options), 3.4), squeeze=False, sharey=True)
    for ax, option in zip(axes[0], options):
        swept = rows[rows["option"] == option].sort_values("value")
        tidy = swept.melt(id_vars="value", value_vars=["clean_accuracy", "robust_accuracy"], var_name="accuracy",
                          value_name="percent")
        sns.lineplot(data=tidy, x="value", y="percent", hue="accuracy", marker="o", ax=ax)
        ax.set_xscale("symlog", linthresh=min(v for v in swept["value"] if v > 0))
        ax.set_xticks(swept["value"], [f"{v:g}" for v in swept["value"]])
        ax.minorticks_off()
        fixed = swept["fixed"].iloc[0]
        ax.set_xlabel(f"{option} ({fixed})" if fixed else option)
        under = f" ({rows['attack'].iloc[0]})" if "attack" in rows.columns else ""
        ax.set_ylabel(f"mean accuracy (%), robust at {eps:g}/255{under}")
        if reference is not None:
            ref = reference[reference["eps"] == eps].iloc[0]
            for value, colour in ((ref["clean_accuracy"], "C0"), (ref["robust_accuracy"], "C1")):
                ax.axhline(value, ls="--", lw=1, color=colour)
            ax.text(0.01, 0.02, f"dashed: {ref['method']}", transform=ax.transAxes, fontsize=8)
        ax.set_title(f"sensitivity to {option} ({scale} scale)")
    fig.tight_layout()
    return fig


def plot_text_geometry(original: torch.Tensor, tuned: torch.Tensor, classnames: Sequence[str], *, scale: str,
                       margins: torch.Tensor | None = None):
    """Pairwise cosine similarity of the class text embeddings before and after text tuning (heatmaps), and the
    distribution of the off-diagonal values (and of the margins, when given)."""
    panels = 4 if margins is not None else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2))
    upper = torch.triu(torch.ones(len(classnames), len(classnames), dtype=torch.bool), diagonal=1)
    values = {}
    for ax, (name, text) in zip(axes, (("original", original), ("tuned", tuned))):
        similarity = (text @ text.T).detach().cpu()
        values[name] = similarity[upper].numpy()
        sns.heatmap(pd.DataFrame(similarity.numpy(), index=classnames, columns=classnames), ax=ax, cmap="viridis",
                    vmin=-1, vmax=1, square=True, cbar=ax is axes[1], xticklabels=False)
        ax.set_title(f"{name} class text: mean off-diagonal cos {values[name].mean():.2f}", fontsize=9)
        ax.tick_params(axis="y", labelsize=6)
    tidy = pd.DataFrame([{"text": name, "cosine": v} for name, vs in values.items() for v in vs])
    sns.histplot(data=tidy, x="cosine", hue="text", bins=30, element="step", ax=axes[2])
    axes[2].set_title(f"pairwise cosines ({scale} scale)", fontsize=9)
    if margins is not None:
        off_diagonal = ~torch.eye(len(classnames), dtype=torch.bool)
        sns.histplot(margins.detach().cpu()[off_diagonal].numpy(), bins=30, ax=axes[3], color="tab:purple")
        axes[3].set_title("TAM margins m(y, j), j ≠ y", fontsize=9)
        axes[3].set_xlabel("margin (cosine units)")
    fig.tight_layout()
    return fig


def plot_attack_gap(summary: pd.DataFrame, *, scale: str, eps: float, worst: str, single: str, ax=None):
    """How much a single attack over-states robustness: per method, mean robust accuracy under ``single`` (e.g.
    PGD-10) minus the worst case under ``worst`` (e.g. aa-10), at one ε, on the same images."""
    rows = summary[summary["eps"] == eps].set_index(["method", "attack"])["robust_accuracy"]
    methods = list(dict.fromkeys(summary["method"]))
    gap = pd.Series({m: rows[(m, single)] - rows[(m, worst)] for m in methods})
    ax = ax or plt.subplots(figsize=(max(5.0, 0.8 * len(gap) + 2), 3.4))[1]
    ax.bar(gap.index, gap.values, color="tab:red")
    for x, value in enumerate(gap.values):
        ax.annotate(f"{value:.1f}", (x, value), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.margins(y=0.15)  # room for the value labels
    ax.set_ylabel("points over-stated")
    ax.set_title(f"{single} minus the worst case of {worst}, robust accuracy at {eps:g}/255 ({scale} scale)")
    ax.tick_params(axis="x", rotation=30)
    return ax
