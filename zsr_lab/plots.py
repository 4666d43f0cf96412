"""Figures the chapters draw (seaborn/matplotlib); every figure that shows numbers names its scale."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from . import datasets
from .models import ZeroShotCLIP


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
                  title: str = "Zero-shot accuracy", ax=None):
    """Bar chart of accuracy per dataset (with the plain mean as its own bar), labelled with the scale."""
    rows = table[table["dataset"] != "mean"]
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


def plot_robustness_curve(table: pd.DataFrame, *, scale: str, ax=None):
    """Robust accuracy against ε (in units of 1/255), one line per dataset, labelled with the scale."""
    rows = table[table["dataset"] != "mean"]
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    sns.lineplot(data=rows, x="eps", y="robust_accuracy", hue="dataset", marker="o", ax=ax)
    attacks = ", ".join(rows["attack"].unique())
    ax.set_title(f"Robust accuracy under {attacks} ({scale} scale)")
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


def plot_tradeoff(summary: pd.DataFrame, *, scale: str, eps: float, ax=None):
    """Mean clean vs mean robust accuracy at one ε, one point per method (a ``summarize`` table)."""
    rows = summary[summary["eps"] == eps]
    ax = ax or plt.subplots(figsize=(5.2, 4.2))[1]
    sns.scatterplot(data=rows, x="clean_accuracy", y="robust_accuracy", hue="method", s=90, ax=ax)
    for _, row in rows.iterrows():
        ax.annotate(row["method"], (row["clean_accuracy"], row["robust_accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.margins(0.25)  # room for the labels
    ax.set_xlabel("mean clean accuracy (%)")
    ax.set_ylabel(f"mean robust accuracy at {eps:g}/255 (%)")
    ax.set_title(f"Clean vs robust, held-out zero-shot sets ({scale} scale)")
    ax.legend(fontsize=8, loc="best")
    return ax
