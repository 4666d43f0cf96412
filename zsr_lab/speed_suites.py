"""What the cascade and the early exits save, and what a worst-case evaluation costs (prints numbers; not a test).

    python -m zsr_lab.speed_suites                         # classroom counts, CPU throughput and projections
    python -m zsr_lab.speed_suites --device cuda --precision bf16 --compile    # on a GPU

Part 1 counts, on the pre-trained classroom CLIP under the classroom protocol's images, the forward-backward
passes each suite member actually spends per clean-correct image, three ways: zsr_lab's default (cascade between
members, early exit inside them), the reference AutoAttack's (cascade between members, every image kept until
its run ends) and neither (every member attacks every clean-correct image to the end). Iterations do not depend
on the hardware, so the saving is visible on any machine. Part 2 measures the passes per second of ViT-B/32 at
224 (random weights: the same FLOPs) on this device and projects, from the counts, the time of ``aa`` on 16 ×
1,000 images and of PGD-100 on the whole 16-dataset protocol, for a robust and a non-robust model.
"""

from __future__ import annotations

import argparse
import time

import torch

from .attacks import build_attack
from .classifier import dataset_classifier
from .datasets import load_dataset
from .evaluate import subset
from .models import DEFAULT_MODEL, frozen_parameters
from .precision import PRECISIONS
from .pretrained import load_clip
from .scales import get_scale
from .speed import BENCHMARK_IMAGES, forward_flops, peak_tflops
from .suites import parse_suite, run_suite

BENCHMARK_DATASETS = 16
# (clean, robust) accuracy at 1/255 of the two kinds of model the projection is made for: CLIP's ~64 % / ~5 %
# under PGD (the intro's numbers) and a robust fine-tune of about 40 % robust (the papers' range)
MODELS = {"non-robust (CLIP)": (0.64, 0.05), "robust (~40 %)": (0.55, 0.40)}


def count_passes(
    suite_text: str, eps: float, *, cascade: bool, early_exit: bool, stopping: str = "any", progress: bool = True
) -> dict:
    """Passes per clean-correct image of each member (summed over the datasets it runs on, divided by every
    clean-correct image) on the classroom protocol's images (pre-trained CLIP), the worst-case robust accuracy
    (% of clean-correct images) and the passes that the first member spent on the images it broke."""
    setup = get_scale("classroom")
    model = load_clip(setup.model_name, setup.pretrained, device="cpu")
    suite = parse_suite(suite_text)
    passes: dict[str, float] = {}
    robust = broken = spent_broken = images = 0
    for name in setup.protocol.datasets:
        model.set_classifier(dataset_classifier(model, name))
        data = subset(
            load_dataset(name, image_size=setup.image_size, verbose=False),
            setup.protocol.examples_for(name),
            setup.protocol.seed,
        )
        x, y = map(torch.stack, zip(*[(data[i][0], torch.tensor(data[i][1])) for i in range(len(data))]))
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        x, y = x[keep], y[keep]
        images += len(y)
        members = suite.members_for(len(model.class_embeddings))
        with frozen_parameters(model):
            outcome = run_suite(
                model,
                members,
                x,
                y,
                eps,
                n_classes=len(model.class_embeddings),
                cascade=cascade,
                early_exit=early_exit,
                stopping=stopping,
            )
        for member, spent in zip(outcome.members, outcome.iterations):
            passes[member.label] = passes.get(member.label, 0.0) + float(spent.sum())
        robust += int(outcome.robust.sum())
        first_broke = ~outcome.robust_after[0]
        broken += int(first_broke.sum())
        spent_broken += int(outcome.iterations[0][first_broke].sum())
        if progress:
            print(f"  {name}: {len(y)} clean-correct images", flush=True)
    return {
        "passes": {label: total / images for label, total in passes.items()},
        "robust": 100 * robust / images,
        "passes_to_break": spent_broken / max(broken, 1),
        "images": images,
    }


def passes_per_second(
    precision: str, compile: bool, batch_size: int, device: torch.device, repeats: int = 3
) -> tuple[float, float]:
    """Forward-backward passes (to the input) per second of ViT-B/32 at 224, random weights; and FLOPs per pass."""
    model = load_clip(DEFAULT_MODEL, None, device=device)
    model.set_classifier(
        torch.nn.functional.normalize(model.encode_text([f"class {i}" for i in range(100)]).detach(), dim=-1)
    )
    images = torch.rand(batch_size, 3, 224, 224, device=device)
    labels = torch.randint(0, 100, (batch_size,), device=device)
    flops = 2 * forward_flops(model, images[:2]) / 2  # a pass: one forward and a backward to the input
    model.requires_grad_(False)
    target = torch.compile(model) if compile else model
    attack = build_attack(target, "pgd-5", 1, n_classes=100, precision=precision, early_stop=False)
    attack(images, labels)  # warm-up (kernels, compilation)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        attack(images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * 5 * batch_size / (time.perf_counter() - start), flops


def projected_passes(counts: dict, clean: float, robust: float, budget: int) -> float:
    """Passes per dataset image: the clean-correct share ``clean`` is attacked; the share ``robust`` survives the
    whole suite and takes its whole ``budget``; the others break in the first member, after the passes that broken
    images took there on the classroom CLIP (``counts["passes_to_break"]``)."""
    return robust * budget + (clean - robust) * counts["passes_to_break"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eps", type=float, default=4.0, help="classroom budget in units of 1/255 (default 4)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--precision", default=None, choices=sorted(PRECISIONS), help="default: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile ViT-B/32 for the throughput")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 8 on CPU")
    parser.add_argument(
        "--passes-per-s",
        type=float,
        help="also project for this measured throughput (passes/s of ViT-B/32, e.g. from a GPU run)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")

    print(
        f"== 1. passes per clean-correct image, pre-trained classroom CLIP, ε = {args.eps:g}/255, "
        f"classroom protocol images ==",
        flush=True,
    )
    ways = {
        "zsr_lab (cascade + early exit)": dict(cascade=True, early_exit=True),
        "reference AutoAttack (cascade, no early exit)": dict(cascade=True, early_exit=False),
        "neither (every member on every image, to the end)": dict(cascade=False, early_exit=False),
    }
    counts = {}
    for suite, stopping_ways in (
        ("aa", ways),
        (
            "pgd-100",
            {
                "zsr_lab (any-step, early exit)": dict(cascade=True, early_exit=True, stopping="any"),
                "last iterate (the papers' PGD)": dict(cascade=True, early_exit=False, stopping="last"),
            },
        ),
    ):
        for way, options in stopping_ways.items():
            start = time.perf_counter()
            result = counts[(suite, way)] = count_passes(suite, args.eps, progress=False, **options)
            detail = ", ".join(f"{label}: {value:.1f}" for label, value in result["passes"].items())
            print(
                f"{suite}, {way}: {sum(result['passes'].values()):.1f} passes per image [{detail}]; worst-case "
                f"robust {result['robust']:.1f} % of {result['images']} clean-correct images; "
                f"{time.perf_counter() - start:.0f} s on this machine",
                flush=True,
            )
        base = sum(counts[(suite, next(iter(stopping_ways)))]["passes"].values())
        for way in list(stopping_ways)[1:]:
            other = sum(counts[(suite, way)]["passes"].values())
            print(f"{suite}: {way} spends {other / base:.1f}× the passes of zsr_lab's default")
        nominal = 101 + 9 * 101 if suite == "aa" else 100  # every member, image, target and iteration
        print(
            f"{suite}: the nominal budget (every member on every image, every target, every iteration) is "
            f"{nominal} passes per image, {nominal / base:.1f}× zsr_lab's default"
        )

    print(f"\n== 2. ViT-B/32 at 224 on {device}, {precision}{' + compile' if args.compile else ''} ==", flush=True)
    batch = args.batch_size or (256 if device.type == "cuda" else 8)
    rate, flops = passes_per_second(precision, args.compile, batch, device)
    peak = peak_tflops(device, precision)
    fraction = f", {100 * rate * flops / 1e12 / peak:.1f} % of the {peak:.0f} TFLOP/s dense peak" if peak else ""
    print(
        f"{rate:,.1f} passes/s (batch {batch}), {flops / 1e9:.1f} GFLOP per pass, "
        f"{rate * flops / 1e12:.2f} TFLOP/s{fraction}"
    )
    aa_counts = counts[("aa", "zsr_lab (cascade + early exit)")]
    pgd_counts = counts[("pgd-100", "zsr_lab (any-step, early exit)")]
    budgets = {"aa": 101 + 9 * 101, "pgd-100": 100}
    rates = {f"this device ({device})": rate}
    if args.passes_per_s:
        rates["the given throughput"] = args.passes_per_s
    for where, passes_rate in rates.items():
        for model, (clean, robust) in MODELS.items():
            aa = BENCHMARK_DATASETS * 1000 * projected_passes(aa_counts, clean, robust, budgets["aa"])
            pgd = BENCHMARK_IMAGES * projected_passes(pgd_counts, clean, robust, budgets["pgd-100"])
            print(
                f"projected on {where}, {model} model (clean {100 * clean:.0f} %, robust {100 * robust:.0f} %): "
                f"aa on 16 × 1,000 images {aa / passes_rate / 60:,.1f} min ({aa / 1e6:.2f} M passes); "
                f"PGD-100 on the whole protocol (~{BENCHMARK_IMAGES:,} images) {pgd / passes_rate / 60:,.1f} min "
                f"({pgd / 1e6:.2f} M passes)"
            )


if __name__ == "__main__":
    main()
