"""Speed benchmark of the evaluation paths (prints numbers; not a test).

    python -m zsr_lab.speed --scale full --device cuda     # ViT-B/32 at 224, random weights (same FLOPs)
    python -m zsr_lab.speed --scale classroom              # the classroom CLIP on CPU

Reports: building a 1000-class classifier (text tower) and loading it from the cache; clean zero-shot
images/s through the real evaluation loop per precision; PGD-10 / PGD-100 images/s through ``build_attack``
per precision (optionally with ``torch.compile``), beside a naive reference loop that re-encodes the class
prompts at every step in fp32 and back-propagates into the weights too (what the official code does); achieved
TFLOP/s and the fraction of the GPU's dense peak; and the projected time of the 16-dataset protocol (~340k
images).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import datasets
from .attacks import AttackConfig, build_attack
from .classifier import dataset_classifier
from .evaluate import zero_shot_accuracy
from .precision import PRECISIONS
from .pretrained import load_clip
from .scales import get_scale

BENCHMARK_IMAGES = 340_000  # the 16 datasets' evaluation splits together, roughly
CLEAN_CORRECT = 0.64  # share of images zero-shot CLIP gets right: only those are attacked
# dense (no sparsity) peak TFLOP/s per precision; fp32 runs as TF32 on tensor cores only if enabled
PEAK_TFLOPS = {
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(model, batch: torch.Tensor) -> int:
    """FLOPs of one zero-shot forward pass over ``batch`` (counted by PyTorch's FlopCounterMode).

    Counted in train mode with gradients on: in eval mode under no_grad, nn.MultiheadAttention takes a fused
    fast path whose FLOPs the counter does not see (a third of a ViT layer).
    """
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.eval()
    return counter.get_total_flops()


def peak_tflops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peaks[precision] for gpu, peaks in PEAK_TFLOPS.items() if gpu in name), None)


def naive_pgd(model, images, labels, text_tokens, eps, alpha, steps):
    """The reference loop of the official code: fp32, class prompts re-encoded by the text tower at every step,
    and ``loss.backward()`` that also fills every weight's gradient. For comparison only."""
    clip = model.clip
    model.requires_grad_(True)
    delta = torch.empty_like(images).uniform_(-eps, eps)
    delta = (images + delta).clamp(0, 1) - images  # start inside the image box, as the official code does
    for _ in range(steps):
        delta.requires_grad_(True)
        text = torch.nn.functional.normalize(clip.encode_text(text_tokens), dim=-1)
        # delta is kept inside the box; a clamp here would zero the gradient of boundary pixels
        image = torch.nn.functional.normalize(model.encode_image(images + delta), dim=-1)
        loss = torch.nn.functional.cross_entropy(clip.logit_scale.exp() * image @ text.T, labels)
        loss.backward()
        delta = (delta.detach() + alpha * delta.grad.sign()).clamp(-eps, eps)
        delta = (images + delta).clamp(0, 1) - images
        clip.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return (images + delta).detach()


def seconds_per_call(fn, device, repeats: int) -> float:
    """Mean wall-clock seconds of ``fn()`` over ``repeats`` calls after one warm-up call, the device synchronised."""
    fn()  # warm-up (kernels, allocator, compilation)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["classroom", "scenes", "full"], default="classroom")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS))
    parser.add_argument("--attack-steps", nargs="+", type=int, default=[10, 100])
    parser.add_argument("--n-classes", type=int, default=100, help="classes of the attacked classifier")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the image tower")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args(argv)

    setup = get_scale(args.scale)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pretrained = setup.pretrained if args.scale != "full" else None  # random weights: same FLOPs
    model = load_clip(setup.model_name, pretrained, device=device)
    batch_size = args.batch_size or setup.batch_size
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    size = model.image_size[0]
    print(
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"model {setup.model_name} ({pretrained or 'random weights'}), input {size}px, batch {batch_size}, "
        f"torch {torch.__version__}"
    )

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        weights = dataset_classifier(model, "imagenet", cache_dir=cache)
        _sync(device)
        built = time.perf_counter() - start
        start = time.perf_counter()
        dataset_classifier(model, "imagenet", cache_dir=cache)
        loaded = time.perf_counter() - start
    print(
        f"classifier, {len(datasets.get_spec('imagenet').classnames)} classes: built in {built:.2f} s, "
        f"loaded from cache in {1000 * loaded:.1f} ms"
    )
    model.set_classifier(weights)

    images = torch.rand(batch_size, 3, size, size)
    labels = torch.randint(0, len(weights), (batch_size,))
    flops_per_image = forward_flops(model, images[:2].to(device)) / 2
    print(f"forward FLOPs per image: {flops_per_image / 1e9:.2f} GFLOP")
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    # Batches from the host (pinned) include the host→device copies; batches already on the device measure
    # the model alone. Decoding JPEGs is the data loader's job (num_workers) and is not timed here.
    sources = {
        "host batches": [(images, labels)] * args.batches,
        "device-resident batches": [(images.to(device), labels.to(device))] * args.batches,
    }
    for precision in precisions:
        for source, batches in sources.items():
            zero_shot_accuracy(model, batches[:2], precision=precision, progress=False)  # warm-up
            _sync(device)
            start = time.perf_counter()
            zero_shot_accuracy(model, batches, precision=precision, progress=False)
            _sync(device)
            rate = batch_size * args.batches / (time.perf_counter() - start)
            achieved = rate * flops_per_image / 1e12
            peak = peak_tflops(device, precision)
            fraction = f", {100 * achieved / peak:.1f} % of the {peak:.0f} TFLOP/s dense peak" if peak else ""
            print(
                f"clean zero-shot, {precision}, {source}: {rate:,.0f} images/s, {achieved:.2f} TFLOP/s{fraction}; "
                f"16-dataset clean pass (~{BENCHMARK_IMAGES:,} images) {BENCHMARK_IMAGES / rate / 60:.1f} min"
            )
    _attack_speed(model, images[:batch_size].to(device), args, device, precisions, flops_per_image)
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def _attack_speed(model, images, args, device, precisions, flops_per_image):
    """PGD images/s through build_attack (and the naive loop), on one device-resident batch."""
    classnames = [f"class {i}" for i in range(args.n_classes)]
    model.set_classifier(torch.nn.functional.normalize(model.encode_text(classnames).detach(), dim=-1))
    labels = torch.randint(0, args.n_classes, (len(images),), device=device)
    model.requires_grad_(False)  # as in evaluate_robustness: only the input gradient is needed
    # a PGD step is one forward and one backward to the input only (no weight gradients): about two forwards
    step_flops = 2 * flops_per_image
    variants = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if args.compile else [])
    rates = {}
    for precision, compiled in variants:
        target = model
        if compiled:
            target = torch.compile(model)
        for steps in args.attack_steps:
            # every image takes every step (random labels would otherwise stop most images at once)
            attack = build_attack(
                target, AttackConfig("pgd", steps), 1, n_classes=args.n_classes, precision=precision, early_stop=False
            )
            seconds = seconds_per_call(lambda run=attack: run(images, labels), device, repeats=1 if steps >= 100 else 3)
            rate = len(images) / seconds
            rates[(precision, compiled, steps)] = rate
            achieved = rate * steps * step_flops / 1e12
            peak = peak_tflops(device, precision)
            fraction = f", ~{100 * achieved / peak:.0f} % of peak" if peak else ""
            projected = BENCHMARK_IMAGES * (CLEAN_CORRECT / rate) / 60
            print(
                f"PGD-{steps}, {precision}{' + compile' if compiled else ''}: {rate:,.1f} images/s, "
                f"~{achieved:.1f} TFLOP/s{fraction}; 16-dataset protocol (attacking the ~64 % clean-correct "
                f"images) ≈ {projected:.1f} min"
            )
    if args.skip_naive:
        return
    tokens = model.tokenizer(classnames).to(device)
    steps = min(args.attack_steps)
    seconds = seconds_per_call(
        lambda: naive_pgd(model, images, labels, tokens, 1 / 255, 1 / 255, steps), device, repeats=1
    )
    naive = len(images) / seconds
    best = max(rate for (p, c, s), rate in rates.items() if s == steps)
    fp32 = rates[("fp32", False, steps)] if ("fp32", False, steps) in rates else float("nan")
    print(
        f"naive reference PGD-{steps} (fp32, text re-encoded every step, weight gradients): {naive:,.1f} "
        f"images/s → zsr_lab is {fp32 / naive:.1f}× faster in fp32, {best / naive:.1f}× with the best option"
    )


if __name__ == "__main__":
    main()
