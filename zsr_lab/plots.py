"""Figures the chapters draw (seaborn/matplotlib); every figure that shows numbers names its scale."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.lines import Line2D

from . import datasets
from .attention import attention_maps
from .claims import percent
from .evaluate import select_attack, summarize, with_intervals
from .models import ZeroShotCLIP
from .uncertainty import paired_rows
from .worklog import timed

COLUMN_INCHES = 6.5  # the text column is 672 px; with the 0.1-in pad of the inline PNG (670 px at 100 dpi) a figure
# this wide is shown at its own size, so that its 9-pt text renders as 9 pt
FONT_POINTS = 9  # the smallest text in any figure, as rendered at the column width
BOOK_STYLE = {
    "figure.dpi": 100,  # so the column is 650 px of figure; inline output is retina PNG at twice that
    "figure.figsize": (COLUMN_INCHES, 3.6),
    "figure.constrained_layout.use": True,  # keeps outside legends and colour bars inside the figure
    "font.size": FONT_POINTS,
    "axes.titlesize": FONT_POINTS + 1,
    "axes.labelsize": FONT_POINTS,
    "xtick.labelsize": FONT_POINTS,
    "ytick.labelsize": FONT_POINTS,
    "legend.fontsize": FONT_POINTS,
    "legend.title_fontsize": FONT_POINTS,
    "figure.titlesize": FONT_POINTS + 1,
}


def use_book_style() -> None:
    """The one figure style of the book (applied when the package is imported): seaborn's white grid with
    :data:`BOOK_STYLE` (fonts of at least :data:`FONT_POINTS` points, figures at most :data:`COLUMN_INCHES`
    wide), and high-dpi (retina) inline PNGs when running in a Jupyter kernel."""
    sns.set_theme(style="whitegrid", rc=BOOK_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: no inline display to configure
        return
    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


use_book_style()


def _figure(rows: int, columns: int, *, height: float, width: float = COLUMN_INCHES, **kwargs):
    """A grid of axes ``height`` inches per row, at most the column wide."""
    return plt.subplots(rows, columns, figsize=(min(width, COLUMN_INCHES), height * rows), squeeze=False, **kwargs)


def _fill(text: str, width_points: float, font_points: float) -> str:
    """``text`` broken into lines of about ``width_points`` at half an em per character; "(classroom scale)"
    stays on one line."""
    kept = text.replace(" scale)", "\u00a0scale)")
    return textwrap.fill(kept, max(12, int(width_points / (0.52 * font_points)))).replace("\u00a0", " ")


def _wrapped(text: str, ax, *, font_points: float = FONT_POINTS + 1, vertical: bool = False) -> str:
    """``text`` broken into lines that fit the width of ``ax`` (its height when ``vertical``, for a y label)."""
    box, size = ax.get_position(), ax.figure.get_size_inches()
    return _fill(text, (box.height * size[1] if vertical else box.width * size[0]) * 72, font_points)


def suptitle(fig, text: str) -> None:
    """A figure title broken into lines that fit the figure's width."""
    fig.suptitle(_fill(text, fig.get_size_inches()[0] * 72, FONT_POINTS + 1))


def _image_cell(ax) -> None:
    """An axes that shows an image: no ticks or frame, but room for a title and axis labels."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend_outside(ax, **kwargs) -> None:
    """Move the axes' legend right of its data (constrained layout keeps it inside the figure)."""
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False, **kwargs)


def _short(name: str, characters: int) -> str:
    return name if len(name) <= characters else name[: characters - 1] + "…"


def _two_lines(name: str, characters: int) -> str:
    """``name`` on at most two lines of about ``characters``; only a name longer than that is cut."""
    lines = textwrap.wrap(name, characters) or [""]
    return "\n".join(lines[:1] + [_short(" ".join(lines[1:]), characters)] if len(lines) > 1 else lines)


RIGHT_WRONG = "green: right, red: wrong"  # the key of every figure that colours its predictions


@timed("drawing")
def show_examples(
    dataset_names: Sequence[str], *, per_dataset: int = 6, image_size: int = 224, data_root=None, seed: int = 0
):
    """A grid of random test images, one row per dataset, titled with their class names."""
    rng = np.random.default_rng(seed)
    tile = COLUMN_INCHES / per_dataset
    fig, axes = _figure(len(dataset_names), per_dataset, height=tile + 0.5)
    for row, name in zip(axes, dataset_names):
        data = datasets.load_dataset(name, data_root=data_root, image_size=image_size, verbose=False)
        names = datasets.get_spec(name).classnames
        for ax, index in zip(row, rng.choice(len(data), per_dataset, replace=False)):
            image, label = data[int(index)]
            ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_title(_two_lines(names[label], int(tile * 12)), fontsize=FONT_POINTS)
            _image_cell(ax)
        row[0].set_ylabel(textwrap.fill(datasets.get_spec(name).title, 14))
    return fig


@timed("drawing")
def plot_class_similarity(class_embeddings: torch.Tensor, classnames: Sequence[str], *, title: str = "", ax=None):
    """Heatmap of cosine similarities between the class text embeddings of a zero-shot classifier."""
    similarity = (class_embeddings @ class_embeddings.T).cpu().numpy()
    ax = ax or plt.subplots(figsize=(COLUMN_INCHES * 0.85, 5.6))[1]
    sns.heatmap(
        pd.DataFrame(similarity, index=classnames, columns=classnames),
        ax=ax,
        cmap="viridis",
        square=True,
        cbar_kws={"label": "cosine similarity"},
    )
    ax.set_title(_wrapped(title, ax))
    return ax


@timed("drawing")
@torch.no_grad()
def show_predictions(
    model: ZeroShotCLIP,
    images: torch.Tensor,
    labels: Sequence[int],
    classnames: Sequence[str],
    *,
    k: int = 3,
    per_row: int = 3,
):
    """Each image above a bar chart of its top-k zero-shot class probabilities (true class in green, the key in the
    title), ``per_row`` images to a row."""
    probabilities = model(images.to(model.device)).softmax(dim=-1).cpu()
    rows = math.ceil(len(images) / per_row)
    fig, axes = _figure(2 * rows, per_row, height=1.25, gridspec_kw={"height_ratios": [1.5, 1] * rows})
    for index, (image, label, probs) in enumerate(zip(images, labels, probabilities)):
        row, column = divmod(index, per_row)
        picture, bars = axes[2 * row, column], axes[2 * row + 1, column]
        picture.imshow(image.permute(1, 2, 0).numpy())
        picture.set_title(_short(classnames[label], 22))
        _image_cell(picture)
        top = probs.topk(min(k, len(classnames)))
        colours = ["tab:green" if int(i) == label else "tab:gray" for i in top.indices]
        bars.barh(range(len(top.values)), top.values.numpy()[::-1], color=colours[::-1])
        bars.set_yticks(range(len(top.values)), [_short(classnames[int(i)], 14) for i in top.indices][::-1])
        bars.set_xlim(0, 1)
        bars.set_xlabel("probability")
    for ax in axes.flat[2 * len(images) :]:  # cells past the last image in a wrapped row
        ax.remove()
    suptitle(fig, f"Top-{min(k, len(classnames))} zero-shot probabilities of each image (green: its true class)")
    return fig


@timed("drawing")
def plot_accuracy(
    table: pd.DataFrame,
    *,
    scale: str,
    hue: str | None = None,
    value: str = "accuracy",
    title: str = "Zero-shot accuracy",
    attack: str | None = None,
    ax=None,
):
    """Bar chart of accuracy per dataset (with the plain mean in the title), labelled with the scale; robust
    accuracy is shown under one attack (default: the table's first, the protocol's worst case). Bars carry
    their values when there is room for them."""
    rows = table[table["dataset"] != "mean"]
    if value == "robust_accuracy":
        rows = select_attack(rows, attack)
    ax = ax or plt.subplots(figsize=(COLUMN_INCHES, 3.8))[1]
    sns.barplot(data=rows, x="dataset", y=value, hue=hue, errorbar=None, ax=ax)
    mean = rows.groupby(hue)[value].mean() if hue else pd.Series({"": rows[value].mean()})
    text = ", ".join(f"{k}: {percent(v)}" if k else percent(v) for k, v in mean.items())
    ax.set_title(_wrapped(f"{title} ({scale} scale) — mean {text} %", ax))
    ax.set_xlabel("")
    ax.set_ylabel(f"{value.replace('_', ' ')} (%)")
    ax.set_ylim(0, 105)
    ax.tick_params(axis="x", rotation=30 if rows["dataset"].nunique() <= 8 else 60)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    bars = sum(len(container) for container in ax.containers)
    if bars <= 16:  # a value label (one decimal, as the tables round) needs about two fifths of an inch
        for container in ax.containers:
            ax.bar_label(container, labels=[percent(v) for v in container.datavalues], fontsize=FONT_POINTS)
    _legend_outside(ax)
    return ax


@timed("drawing")
def show_adversarial(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    clean_pred: Sequence[int],
    adv_pred: Sequence[int],
    labels: Sequence[int],
    classnames: Sequence[str],
    *,
    eps_label: str,
):
    """Clean images, their perturbations (amplified to be visible) and the adversarial images, with predictions."""
    n = len(clean)
    tile = min(1.6, (COLUMN_INCHES - 0.4) / n)
    fig, axes = _figure(3, n, height=tile + 0.3, width=tile * n + 0.4)
    delta = adversarial - clean
    scale = delta.abs().max().clamp_min(1e-12)
    for i in range(n):
        tiles = [
            (clean[i], classnames[clean_pred[i]], clean_pred[i] == labels[i]),
            (0.5 + 0.5 * delta[i] / scale, "δ (amplified)", None),
            (adversarial[i], classnames[adv_pred[i]], adv_pred[i] == labels[i]),
        ]
        for row, (image, title, right) in enumerate(tiles):
            ax = axes[row, i]
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_title(
                _short(title, int(tile * 13)),
                fontsize=FONT_POINTS,
                color={True: "tab:green", False: "tab:red", None: "black"}[right],
            )
            _image_cell(ax)
    axes[0, 0].set_ylabel("clean")
    axes[2, 0].set_ylabel(f"adversarial\n{eps_label}")
    suptitle(fig, f"Predicted class of each image ({RIGHT_WRONG})")
    return fig


@timed("drawing")
@torch.no_grad()
def show_budget_series(
    model: ZeroShotCLIP,
    image: torch.Tensor,
    label: torch.Tensor,
    classnames: Sequence[str],
    *,
    budgets: Sequence[float] = (0, 1, 2, 4, 8, 16),
    steps: int = 10,
    seed: int = 0,
):
    """One image attacked with PGD at growing budgets, side by side, each titled with the predicted class and its
    probability (green: right, red: wrong): what the chapter's ε slider shows, without a running kernel (and,
    with one budget, what the slider draws).

    Arguments:
        model: a :class:`ZeroShotCLIP` with the image's classifier installed.
        image: ``[1, C, H, W]`` in [0, 1]; label: ``[1]``.
        budgets: ε in units of 1/255 (0: the clean image).
    """
    from .attacks import build_attack

    tile = min(2.4, COLUMN_INCHES / len(budgets))
    fig, axes = _figure(1, len(budgets), height=tile + 0.5, width=tile * len(budgets))
    for ax, eps in zip(axes[0], budgets):
        torch.manual_seed(seed)
        with torch.enable_grad():
            adversarial = (
                image if eps == 0 else build_attack(model, f"pgd-{steps}", eps, n_classes=len(classnames))(image, label)
            )
        probabilities = model(adversarial.to(model.device)).softmax(-1)[0].cpu()
        top = int(probabilities.argmax())
        ax.imshow(adversarial[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.set_title(
            f"ε = {eps:g}/255\n{_short(classnames[top], int(tile * 10))} {100 * probabilities[top]:.0f} %",
            fontsize=FONT_POINTS,
            color="tab:green" if top == int(label[0]) else "tab:red",
        )
        _image_cell(ax)
    suptitle(fig, f"Predicted class and its probability under PGD-{steps} at each budget ({RIGHT_WRONG})")
    return fig


@timed("drawing")
def plot_clean_and_robust(table: pd.DataFrame, *, scale: str, title: str, attack: str | None = None, ax=None):
    """Clean and robust accuracy of each dataset side by side, the two means in the title (:func:`plot_accuracy`);
    ``table`` holds one ε, and robust accuracy is shown under one attack (default: the table's first)."""
    rows = select_attack(table[table["dataset"] != "mean"], attack)
    tidy = (
        rows[["dataset", "clean_accuracy", "robust_accuracy"]]
        .rename(columns={"clean_accuracy": "clean", "robust_accuracy": "robust"})
        .melt(id_vars=["dataset"], value_vars=["clean", "robust"], var_name="accuracy of", value_name="accuracy")
    )
    return plot_accuracy(tidy, scale=scale, hue="accuracy of", title=title, ax=ax)


@timed("drawing")
def plot_robustness_curve(table: pd.DataFrame, *, scale: str, hue: str = "dataset", attack: str | None = None, ax=None):
    """Robust accuracy against ε (in units of 1/255), one line per dataset (or per ``hue``, e.g. ``"method"``:
    then each line is the mean over datasets), under one attack (default: the table's first, the protocol's
    worst case), labelled with the scale; the legend sits right of the plot."""
    rows = select_attack(table[table["dataset"] != "mean"], attack)
    ax = ax or plt.subplots(figsize=(COLUMN_INCHES, 3.8))[1]
    keys = list(dict.fromkeys(rows[hue]))
    palette = dict(zip(keys, sns.color_palette(n_colors=len(keys))))
    sns.lineplot(data=rows, x="eps", y="robust_accuracy", hue=hue, marker="o", errorbar=None, palette=palette, ax=ax)
    if "n" in rows.columns:  # 95 % bands: each set's Wilson interval, or the mean's with the sets as strata
        bands = with_intervals(rows) if hue == "dataset" else summarize(rows, by=(hue, "attack", "eps"))
        for key, band in bands.sort_values("eps").groupby(hue, sort=False):
            ax.fill_between(band["eps"], band["robust_low"], band["robust_high"], color=palette[key], alpha=0.15, lw=0)
    attacks = ", ".join(rows["attack"].unique())
    over = "" if hue == "dataset" else f", mean over {rows['dataset'].nunique()} datasets"
    over += "; bands: 95\u00a0% intervals" if "n" in rows.columns else ""
    ax.set_title(_wrapped(f"Robust accuracy under {attacks}{over} ({scale} scale)", ax))
    ax.set_xlabel("ε (× 1/255)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    _legend_outside(ax, ncols=1 + rows[hue].nunique() // 12)
    return ax


@timed("drawing")
def plot_robustness_curves(table: pd.DataFrame, *, scale: str, attacks: Sequence[str], hue: str = "method"):
    """:func:`plot_robustness_curve` once per attack, stacked so that each keeps the column's width (e.g. the
    worst case above a single PGD run, to compare them at a glance). Returns the figure."""
    fig, axes = _figure(len(attacks), 1, height=3.4, sharex=True)
    for ax, attack in zip(axes[:, 0], attacks):
        plot_robustness_curve(table, scale=scale, hue=hue, attack=attack, ax=ax)
    return fig


@timed("drawing")
def plot_training(history: pd.DataFrame, *, scale: str, title: str = "Adversarial fine-tuning"):
    """The loss terms per logged step of each training stage (TIMA's text stage first, then the image stage),
    and clean/robust accuracy on the held-out training images: over the steps, or as bars when they were
    measured once. Panels are stacked, each the column's width."""
    bookkeeping = {
        "kind",
        "step",
        "epoch",
        "lr",
        "images_per_s",
        "adv_accuracy",
        "clean_accuracy",
        "robust_accuracy",
        "attack",
        "n",
    }
    stages = [(kind, history[history["kind"] == kind]) for kind in ("text", "train")]
    stages = [(kind, rows) for kind, rows in stages if len(rows)]
    holdout = history[history["kind"] == "holdout"]
    fig, axes = _figure(len(stages) + bool(len(holdout)), 1, height=2.5)
    for ax, (kind, rows) in zip(axes[:, 0], stages):
        for term in (c for c in rows.columns if c not in bookkeeping and rows[c].notna().any()):  # the method's terms
            ax.plot(rows["step"], rows[term], label=term)
        ax.set_xlabel("optimizer step")
        stage = {"text": "text stage", "train": "image stage"}[kind] if len(stages) > 1 else "training"
        ax.set_title(f"{title}: {stage} loss ({scale} scale)")
        ax.legend(title="term")
        _legend_outside(ax)
    if len(holdout):
        ax = axes[-1, 0]
        tidy = holdout.melt(
            id_vars="step", value_vars=["clean_accuracy", "robust_accuracy"], var_name="accuracy", value_name="percent"
        )
        tidy["accuracy"] = tidy["accuracy"].str.removesuffix("_accuracy")
        if holdout["step"].nunique() > 1:
            sns.lineplot(data=tidy, x="step", y="percent", hue="accuracy", marker="o", ax=ax)
            ax.set_xlabel("optimizer step")
            _legend_outside(ax)
        else:
            sns.barplot(data=tidy, x="accuracy", y="percent", errorbar=None, ax=ax)
            ax.bar_label(
                ax.containers[0], labels=[percent(v) for v in ax.containers[0].datavalues], fontsize=FONT_POINTS
            )
            ax.set_xlabel(f"after step {int(holdout['step'].iloc[0])}")
        ax.set_title(f"held-out training images, {holdout['attack'].iloc[-1]}")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
    return fig


def _label_points(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """Name each point right of it (left of it where the name would leave the axes), moved down or up a line at
    a time until its drawn box overlaps no label placed before it (top to bottom)."""
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.draw_without_rendering()  # the final layout, so that the boxes are the drawn ones
    right_edge = ax.get_window_extent(renderer).x1
    step = FONT_POINTS + 3
    placed = []

    def place(index, shift, side):
        return ax.annotate(
            labels[index],
            (xs[index], ys[index]),
            textcoords="offset points",
            xytext=(6 * side, shift * step - FONT_POINTS / 2),
            fontsize=FONT_POINTS,
            ha="left" if side > 0 else "right",
        )

    for index in sorted(range(len(labels)), key=lambda i: -ys[i]):
        text = place(index, 0, 1)
        side = 1 if text.get_window_extent(renderer).x1 <= right_edge else -1
        text.remove()
        for shift in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5):
            text = place(index, shift, side)
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        else:  # no free place within five lines: keep the nearest
            text = place(index, 0, side)
            box = text.get_window_extent(renderer)
        placed.append(box)


@timed("drawing")
def plot_tradeoff(
    summary: pd.DataFrame, *, scale: str, eps: float, attack: str | None = None, ax=None, title: str | None = None
):
    """Mean clean vs mean robust accuracy at one ε, one named point per method (a ``summarize`` table), under one
    attack (default: the table's first, the protocol's worst case); ``title`` replaces the default one (which
    names the scale)."""
    rows = select_attack(summary[summary["eps"] == eps], attack)
    ax = ax or plt.subplots(figsize=(COLUMN_INCHES * 0.8, 4.2))[1]
    bars = {"clean_low", "clean_high", "robust_low", "robust_high"} <= set(rows.columns)
    if bars:  # each mean's 95 % interval (image sampling), under the points
        ax.errorbar(
            rows["clean_accuracy"],
            rows["robust_accuracy"],
            xerr=[rows["clean_accuracy"] - rows["clean_low"], rows["clean_high"] - rows["clean_accuracy"]],
            yerr=[rows["robust_accuracy"] - rows["robust_low"], rows["robust_high"] - rows["robust_accuracy"]],
            fmt="none",
            ecolor="0.6",
            elinewidth=1,
            capsize=2,
            zorder=1,
        )
    sns.scatterplot(
        data=rows, x="clean_accuracy", y="robust_accuracy", hue="method", s=90, ax=ax, legend=False, zorder=2
    )
    ax.margins(x=0.3, y=0.2)  # room for the names
    ax.set_xlabel("mean clean accuracy (%)" + (" — bars: 95\u00a0% intervals" if bars else ""))
    under = f" ({rows['attack'].iloc[0]})" if "attack" in rows.columns and len(rows) else ""
    ax.set_ylabel(
        _wrapped(f"mean robust accuracy at {eps:g}/255{under} (%)", ax, font_points=FONT_POINTS, vertical=True)
    )
    ax.set_title(_wrapped(title or f"Clean vs robust, held-out zero-shot sets ({scale} scale)", ax))
    _label_points(ax, list(rows["clean_accuracy"]), list(rows["robust_accuracy"]), list(rows["method"]))
    return ax


@timed("drawing")
def plot_tradeoffs(summary: pd.DataFrame, *, scale: str, eps_values: Sequence[float], attack: str | None = None):
    """:func:`plot_tradeoff` once per budget, stacked so that each keeps its width. Returns the figure."""
    fig, axes = _figure(len(eps_values), 1, height=3.8, width=COLUMN_INCHES * 0.8)
    for ax, eps in zip(axes[:, 0], eps_values):
        plot_tradeoff(summary, scale=scale, eps=eps, attack=attack, ax=ax)
    return fig


@timed("drawing")
def plot_heatmap(
    table: pd.DataFrame,
    *,
    scale: str,
    value: str = "robust_accuracy",
    eps: float | None = None,
    attack: str | None = None,
    ax=None,
):
    """Accuracy per method and dataset (plus their mean), annotated: methods are rows (in order of appearance)
    and datasets columns, or the other way round when there are more datasets than fit across the column.

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
    across = grid.shape[1] <= 9  # datasets across; otherwise down, so that the cells keep their numbers legible
    if not across:
        grid = grid.T
    ax = ax or plt.subplots(figsize=(min(COLUMN_INCHES, 0.75 * grid.shape[1] + 2.4), 0.32 * grid.shape[0] + 1.4))[1]
    sns.heatmap(
        grid,
        annot=grid.map(percent),  # one decimal, rounded as the tables and the sentences round
        fmt="",
        cmap="viridis",
        vmin=0,
        vmax=100,
        cbar_kws={"label": "%"},
        ax=ax,
        annot_kws={"fontsize": FONT_POINTS},
    )
    if across:  # the mean is not a dataset
        ax.axvline(grid.shape[1] - 1, color="white", lw=2)
    else:
        ax.axhline(grid.shape[0] - 1, color="white", lw=2)
    what = "robust accuracy" if value == "robust_accuracy" else "clean accuracy"
    attack = f" under {', '.join(rows['attack'].unique())} at {eps:g}/255" if value == "robust_accuracy" else ""
    ax.set_title(_wrapped(f"{what.capitalize()}{attack} ({scale} scale)", ax))
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    return ax


ATTENTION_COLOURS = "magma"  # perceptual: brightness follows the value, in colour and in grey print alike


def overlay_attention(ax, image: torch.Tensor, attention_map: torch.Tensor, *, alpha: float = 0.6, vmax: float = 1.0):
    """Draw a [C, h, w] image in [0,1] with its [H, W] attention map on top (magma, 0 dark … ``vmax`` bright);
    returns the map's artist, for :func:`attention_colour_bar`."""
    image = image.detach().float().cpu()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    size = tuple(attention_map.shape[-2:])
    if tuple(image.shape[-2:]) != size:  # show the image at the map's size
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy())
    return ax.imshow(attention_map.detach().cpu().numpy(), cmap=ATTENTION_COLOURS, alpha=alpha, vmin=0, vmax=vmax)


def attention_colour_bar(fig, artist, axes, label: str = "attention"):
    """The colour bar of the maps drawn by ``artist``, beside ``axes`` (marked so that layout checks skip it), in
    full colour even when the maps are drawn see-through over their images."""
    opaque = ScalarMappable(norm=artist.norm, cmap=artist.cmap)
    # aspect 6: a row of small maps is short, and the default (20) would draw a hairline
    bar = fig.colorbar(opaque, ax=axes, fraction=0.04, pad=0.02, aspect=6, label=label)
    bar.ax.set_label("<colorbar>")
    return bar


@timed("drawing")
def show_attention(
    rows: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    captions: Mapping[str, Sequence[tuple[str, bool | None]]] | None = None,
    alpha: float = 0.6,
    title: str | None = None,
):
    """Attention maps overlaid on their images: one row per entry, one column per image, each row with its colour
    bar.

    Each row's colour scale runs from 0 to the largest value in that row, so that a map whose values are all small
    (a product of two maps, such as Comp-TGA's ``A_c ⊙ (1 − A_n)``) shows its structure; the colour bar gives the
    scale. Maps normalised to [0,1] reach 1, so their rows share the 0–1 scale.

    Arguments:
        rows: row label → (images ``[B, C, h, w]`` in [0,1], maps ``[B, H, W]`` in [0,1]), e.g.
            ``{"clean · CLIP": (images, clean_maps), "PGD · CLIP": (adversarial, adversarial_maps)}``.
        captions: row label → one (text, correct) per image; the text is green when ``correct`` is True,
            red when False, black when None.
        alpha: opacity of the map (magma colour map, 0 dark … the row's largest value bright).
    """
    labels = list(rows)
    n = len(rows[labels[0]][0])
    tile = min(1.5, (COLUMN_INCHES - 1.5) / n)  # room for the row names and the colour bars
    fig, axes = _figure(len(labels), n, height=tile + (0.3 if captions else 0.1), width=tile * n + 1.5)
    for r, label in enumerate(labels):
        images, maps = rows[label]
        vmax = max(float(maps.max()), 1e-6)
        for i in range(n):
            ax = axes[r, i]
            artist = overlay_attention(ax, images[i], maps[i], alpha=alpha, vmax=vmax)
            _image_cell(ax)
            if captions and label in captions:
                text, correct = captions[label][i]
                ax.set_title(
                    _short(text, int(tile * 11)),
                    fontsize=FONT_POINTS,
                    color={True: "tab:green", False: "tab:red", None: "black"}[correct],
                )
        axes[r, 0].set_ylabel(textwrap.fill(label, max(8, int(tile * 12))))
        attention_colour_bar(fig, artist, axes[r, :].tolist())
    key = (
        f" (captions {RIGHT_WRONG})"
        if captions and any(c is not None for row in captions.values() for _, c in row)
        else ""
    )
    if title or key:
        suptitle(fig, (title or "Attention maps") + key)
    return fig


@timed("drawing")
def show_model_attention(
    views: Mapping[str, tuple[ZeroShotCLIP, torch.Tensor]],
    labels: torch.Tensor,
    classnames: Sequence[str],
    *,
    title: str | None = None,
):
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


@timed("drawing")
def show_attention_shift(
    models: Mapping[str, ZeroShotCLIP],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    masks: torch.Tensor | None = None,
    eps: float = 4,
    steps: int = 10,
    seed: int = 0,
    title: str | None = None,
):
    """Where each model looks, clean and under its own attack, and how much that moved.

    One row per model and image (models top to bottom, each model's images together), four panels per row: the
    image (with the object's outline when ``masks`` are given), the model's class map on it, the map on the
    model's own PGD image (:func:`zsr_lab.attention_measures.perturbed_images`: ε, ``steps``, ``seed``), and the
    absolute difference ``|A(x_adv) − A(x)|``. Maps use one perceptual colour map (magma) on a shared 0–1 scale with its
    colour bar; differences a second one (viridis) with its own. Under each map: the mass on the object (when
    masks are given); under the difference: the prediction on the attacked image. Each model must have the
    images' classifier installed.

    Arguments:
        models: name → model, shown top to bottom.
        images: [0,1] images ``[B, C, H, W]`` at the models' input size (keep B small: 2–3); labels: ``[B]``.
        masks: the objects' masks ``[B, H, W]`` (:func:`zsr_lab.datasets.object_masks`), or None.
    """
    from .attention import attention_mass_in_object
    from .attention_measures import perturbed_images

    n, panels = len(images), ("image", "clean map", "attacked map", "|attacked − clean|")
    tile = (COLUMN_INCHES - 1.9) / 4  # room for the row names and the two colour bars
    fig, axes = _figure(len(models) * n, 4, height=tile + 0.35)
    for m, (name, model) in enumerate(models.items()):
        x, y = images.to(model.device), labels.to(model.device)
        adversarial = perturbed_images(model, x, y, eps=eps, steps=steps, seed=seed)["adversarial"]
        text = model.class_embeddings[y]
        clean_maps, adversarial_maps = attention_maps(model, x, text), attention_maps(model, adversarial, text)
        with torch.no_grad():
            predicted = model(adversarial).argmax(1).cpu()
        for i in range(n):
            cells = axes[m * n + i]
            cells[0].imshow(images[i].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            maps = cells[1].imshow(clean_maps[i].numpy(), cmap=ATTENTION_COLOURS, vmin=0, vmax=1)
            cells[2].imshow(adversarial_maps[i].numpy(), cmap=ATTENTION_COLOURS, vmin=0, vmax=1)
            shift = cells[3].imshow((adversarial_maps[i] - clean_maps[i]).abs().numpy(), cmap="viridis", vmin=0, vmax=1)
            for cell, panel in zip(cells, panels):
                _image_cell(cell)
                if masks is not None:
                    cell.contour(masks[i].cpu().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
                if m == 0 and i == 0:
                    cell.set_title(panel, fontsize=FONT_POINTS)
            if masks is not None:
                for cell, view in ((cells[1], clean_maps), (cells[2], adversarial_maps)):
                    mass = float(attention_mass_in_object(view[i : i + 1], masks[i : i + 1].cpu()))
                    cell.set_xlabel(f"on object {mass:.2f}")
            cells[3].set_xlabel(f"attacked: {'right' if predicted[i] == labels[i] else 'wrong'}")
            cells[0].set_ylabel(f"{name}\nimage {i + 1}")
    suptitle(fig, title or f"Class attention clean and under each model's own PGD-{steps}, ε = {eps:g}/255")
    for artist, label in ((shift, "|change|"), (maps, "attention (class map)")):  # the first sits nearest
        attention_colour_bar(fig, artist, axes, label)
    return fig


def _bar_panels(tidy: pd.DataFrame, *, panel: str, x: str, y: str, hue: str, ylabel: str, title: str, decorate=None):
    """One bar panel per value of ``panel`` (shared y axis), two to a row, with one legend below them (outside
    the bars); ``decorate(ax, rows)`` adds to each panel. Returns the figure."""
    names = list(dict.fromkeys(tidy[panel]))
    columns = min(2, len(names))
    fig, axes = _figure(math.ceil(len(names) / columns), columns, height=2.9, sharey=True)
    for ax, name in zip(axes.flat, names):
        rows = tidy[tidy[panel] == name]
        sns.barplot(data=rows, x=x, y=y, hue=hue, errorbar=None, ax=ax, legend=ax is axes.flat[0])
        if decorate is not None:
            decorate(ax, rows)
        ax.set_title(name)
        ax.set_xlabel("")  # the tick labels name the bars
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.set_ylabel(ylabel)
    for ax in axes.flat[len(names) :]:
        ax.remove()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), title=hue, frameon=False)
    suptitle(fig, title)
    return fig


@timed("drawing")
def plot_attention_drift(table: pd.DataFrame, *, scale: str):
    """Mean attention drift per dataset on clean, randomly perturbed and attacked images, one panel per model
    (a :func:`zsr_lab.measure_attention_drift` table)."""
    tidy = table.melt(
        id_vars=["model", "dataset"],
        value_vars=["clean", "random_noise", "adversarial"],
        var_name="images",
        value_name="drift",
    )
    eps = table["eps"].iloc[0]
    return _bar_panels(
        tidy,
        panel="model",
        x="dataset",
        y="drift",
        hue="images",
        ylabel="attention drift\n(RMS per pixel)",
        title=f"How far the class attention moves from the pre-trained model's clean map, "
        f"ε = {eps:g}/255 ({scale} scale)",
    )


@timed("drawing")
def plot_attention_localisation(table: pd.DataFrame, *, scale: str, value: str = "mass_in_object"):
    """Share of the class attention on the object, per model, for clean, randomly perturbed and attacked images,
    one panel per dataset, with the share a uniform map would get as a dashed line (a
    :func:`zsr_lab.measure_attention_localisation` table; ``value="pointing"`` for the pointing game)."""
    if value not in ("mass_in_object", "pointing"):
        raise ValueError(f"value must be 'mass_in_object' or 'pointing', got {value!r}")

    def chance_level(ax, rows):  # a map spread evenly over the image
        ax.axhline(rows["uniform"].iloc[0], color="black", linestyle="--", linewidth=1, label="uniform map")

    eps = table["eps"].iloc[0]
    return _bar_panels(
        table,
        panel="dataset",
        x="model",
        y=value,
        hue="condition",
        ylabel="attention mass\non the object" if value == "mass_in_object" else "pointing game hits",
        decorate=chance_level if value == "mass_in_object" else None,
        title=f"Where the class attention falls: clean, random ±{eps:g}/255 noise, each model's own "
        f"PGD ({scale} scale)",
    )


@timed("drawing")
def plot_sensitivity(
    table: pd.DataFrame, *, scale: str, eps: float, reference: pd.DataFrame | None = None, attack: str | None = None
):
    """Mean clean and robust accuracy against each swept option (a :func:`zsr_lab.sensitivity` table),
    robust under one attack (default: the table's first, the protocol's worst case).

    One panel per option, two to a row; ``reference`` (a ``summarize`` table, e.g. TeCoA's) draws dashed
    horizontal lines, named in the legend below the panels.
    """
    rows = select_attack(table[table["eps"] == eps], attack)
    if reference is not None:
        reference = select_attack(reference, rows["attack"].iloc[0] if "attack" in rows.columns else None)
    options = list(dict.fromkeys(rows["option"]))
    columns = min(2, len(options))
    fig, axes = _figure(math.ceil(len(options) / columns), columns, height=3.0, sharey=True)
    for ax, option in zip(axes.flat, options):
        swept = rows[rows["option"] == option].sort_values("value")
        tidy = swept.melt(
            id_vars="value", value_vars=["clean_accuracy", "robust_accuracy"], var_name="accuracy", value_name="percent"
        )
        sns.lineplot(data=tidy, x="value", y="percent", hue="accuracy", marker="o", ax=ax, legend=False)
        ax.set_xscale("symlog", linthresh=min(v for v in swept["value"] if v > 0))
        ax.set_xticks(swept["value"], [f"{v:g}" for v in swept["value"]])
        ax.minorticks_off()
        fixed = swept["fixed"].iloc[0]
        ax.set_xlabel(f"{option} ({fixed})" if fixed else option)
        ax.set_ylabel("mean accuracy (%)")
        if reference is not None:
            ref = reference[reference["eps"] == eps].iloc[0]
            for value, colour in ((ref["clean_accuracy"], "C0"), (ref["robust_accuracy"], "C1")):
                ax.axhline(value, ls="--", lw=1, color=colour)
    for ax in axes.flat[len(options) :]:
        ax.remove()
    handles = [Line2D([], [], color="C0", marker="o"), Line2D([], [], color="C1", marker="o")]
    names = ["clean", "robust"]
    if reference is not None:
        handles += [Line2D([], [], color="C0", ls="--"), Line2D([], [], color="C1", ls="--")]
        names += [f"{ref['method']} clean", f"{ref['method']} robust"]
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), frameon=False)
    under = f", {rows['attack'].iloc[0]}" if "attack" in rows.columns else ""
    suptitle(fig, f"Sensitivity of mean clean and robust accuracy (ε = {eps:g}/255{under}; {scale} scale)")
    return fig


@timed("drawing")
def plot_text_geometry(
    original: torch.Tensor,
    tuned: torch.Tensor,
    classnames: Sequence[str],
    *,
    scale: str,
    margins: torch.Tensor | None = None,
):
    """Pairwise cosine similarity of the class text embeddings before and after text tuning (heatmaps, above),
    and the distribution of the off-diagonal values (and of the margins, when given), below."""
    fig, axes = _figure(2, 2, height=3.3)
    upper = torch.triu(torch.ones(len(classnames), len(classnames), dtype=torch.bool), diagonal=1)
    names = list(classnames) if len(classnames) <= 20 else False  # more class names than fit beside the map
    values = {}
    for ax, (name, text) in zip(axes[0], (("original", original), ("tuned", tuned))):
        similarity = (text @ text.T).detach().cpu()
        values[name] = similarity[upper].numpy()
        sns.heatmap(
            pd.DataFrame(similarity.numpy(), index=classnames, columns=classnames),
            ax=ax,
            cmap="viridis",
            vmin=-1,
            vmax=1,
            square=True,
            cbar=False,
            xticklabels=False,
            yticklabels=names if ax is axes[0, 0] else False,
        )
        ax.set_title(f"{name} class text:\nmean off-diagonal cos {values[name].mean():.2f}")
    fig.colorbar(axes[0, 1].collections[0], ax=axes[0, :].tolist(), label="cosine", shrink=0.9)
    tidy = pd.DataFrame([{"text": name, "cosine": v} for name, vs in values.items() for v in vs])
    sns.histplot(data=tidy, x="cosine", hue="text", bins=30, element="step", ax=axes[1, 0])
    axes[1, 0].set_title(f"pairwise cosines ({scale} scale)")
    _legend_outside(axes[1, 0])
    if margins is not None:
        off_diagonal = ~torch.eye(len(classnames), dtype=torch.bool)
        sns.histplot(margins.detach().cpu()[off_diagonal].numpy(), bins=30, ax=axes[1, 1], color="tab:purple")
        axes[1, 1].set_title("TAM margins m(y, j), j ≠ y")
        axes[1, 1].set_xlabel("margin (cosine units)")
    else:
        axes[1, 1].remove()
    return fig


@timed("drawing")
def plot_attack_gap(table: pd.DataFrame, *, scale: str, eps: float, worst: str, single: str, ax=None):
    """How much a single attack over-states robustness: per method, mean robust accuracy under ``single`` (e.g.
    PGD-10) minus the worst case under ``worst`` (e.g. aa-10), at one ε, on the same images. Given the evaluation
    table (one row per dataset, with per-image outcomes) each bar carries its paired 95 % interval; a ``summarize``
    table gives the bars alone."""
    summary = summarize(table) if "dataset" in table.columns else table
    rows = summary[summary["eps"] == eps].set_index(["method", "attack"])["robust_accuracy"]
    methods = list(dict.fromkeys(summary["method"]))
    gap = pd.Series({m: rows[(m, single)] - rows[(m, worst)] for m in methods})
    intervals = _gap_intervals(table, methods, eps, worst, single) if "dataset" in table.columns else None
    ax = ax or plt.subplots(figsize=(min(COLUMN_INCHES, 0.8 * len(gap) + 2.5), 3.4))[1]
    ax.bar(gap.index, gap.values, color="tab:red")
    if intervals is not None:
        ax.errorbar(
            range(len(gap)),
            gap.values,
            yerr=[gap.values - intervals[:, 0], intervals[:, 1] - gap.values],
            fmt="none",
            ecolor="black",
            capsize=3,
        )
    tops = gap.values if intervals is None else np.maximum(gap.values, intervals[:, 1])
    for x, (value, top) in enumerate(zip(gap.values, tops)):
        ax.annotate(
            percent(value), (x, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=FONT_POINTS
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.margins(y=0.15)  # room for the value labels
    ax.set_ylabel("points over-stated")
    bars = "; bars: paired 95\u00a0% intervals" if intervals is not None else ""
    ax.set_title(
        _wrapped(f"{single} minus the worst case of {worst}, robust accuracy at {eps:g}/255 ({scale} scale){bars}", ax)
    )
    ax.tick_params(axis="x", rotation=30)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    return ax


def _gap_intervals(table: pd.DataFrame, methods, eps: float, worst: str, single: str) -> np.ndarray | None:
    """Per method, the paired 95 % interval of single − worst (the same images under both), or ``None`` when
    the table has no per-image outcomes."""
    if "robust_outcomes" not in table.columns:
        return None
    rows = table[(table["eps"] == eps) & (table["dataset"] != "mean")]
    bounds = []
    for method in methods:
        mine = rows[rows["method"] == method]
        result = paired_rows(mine[mine["attack"] == single], mine[mine["attack"] == worst], "robust_outcomes")
        if result is None:
            return None
        bounds.append((result.low, result.high))
    return np.array(bounds)
