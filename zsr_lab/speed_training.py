"""Speed benchmark of the training engine (prints numbers; not a test).

    python -m zsr_lab.speed_training --scale full --device cuda     # ViT-B/32 at 224, random weights (same FLOPs)
    python -m zsr_lab.speed_training --scale classroom              # the classroom CLIP on CPU

Times one optimizer step of each method (TeCoA and PMG-AFT by default) exactly as ``fit`` runs it: class
embeddings of ``--n-classes`` training classes computed once, the 2-step ℓ∞ PGD training attack (ε = step = 1/255,
random start) on the frozen model under autocast, then the method's loss under autocast, backward (GradScaler in
fp16) and an SGD step, per precision (optionally with ``torch.compile`` of the attacked model, as ``fit`` does).
Beside it, a naive reference step as the official code runs it: fp32, the class prompts re-encoded by the text tower
at every attack step and at the loss step, and every backward (the attack's too) filling all weights' gradients.

Reports per variant: training images/s, the speed-up over the naive step, peak memory (CUDA: peak allocated;
CPU: the process's peak RSS, which only grows) and, on CUDA, the achieved TFLOP/s and fraction of the dense peak.
"""

from __future__ import annotations

import argparse
import itertools
import resource

import torch
import torch.nn.functional as F

from .engine import TrainStep, start_noise, train_micro_batch
from .methods import METHODS, build_method
from .models import frozen_copy, train_image_tower_only
from .precision import PRECISIONS
from .pretrained import load_clip
from .scales import get_scale
from .speed import forward_flops, peak_tflops, seconds_per_call

ATTACK_STEPS = 2
EPS = 1 / 255  # also the attack's step size
LR = 1e-5  # the learning rate does not change the speed
NAIVE_METHODS = ("tecoa", "pmg_aft")  # the official code re-encodes class prompts; FARE uses no text


def forwards_per_image(name: str) -> int:
    """A training step's FLOPs in units of one forward pass of one image.

    An attack step is a forward and a backward to the input only (≈ 2 forwards); the loss step is a forward and a
    full backward (≈ 3 forwards) per image pass through the trained model. PMG-AFT passes clean and adversarial
    images through the trained model and the adversarial ones through the frozen model (forward only); TGA-ZSR and
    Comp-TGA the same, with the frozen model on the clean images; FARE's targets are one frozen forward of the
    clean images.
    """
    loss = {"tecoa": 3, "pmg_aft": 2 * 3 + 1, "fare": 1 + 3, "tga_zsr": 2 * 3 + 1, "comp_tga": 2 * 3 + 1}[name]
    return ATTACK_STEPS * 2 + loss


def engine_step(trainer, attacked, optimizer, scaler, images, labels, noise, precision):
    """One optimizer step as ``fit`` runs it (one process, no accumulation), without logging and checkpoints."""
    loss, _ = train_micro_batch(
        trainer,
        attacked,
        images,
        labels,
        noise,
        eps=EPS,
        step_size=EPS,
        steps=ATTACK_STEPS,
        precision=precision,
        scaler=scaler,
    )
    if not torch.isfinite(loss).item():  # fit checks every step too (a host sync)
        raise RuntimeError(f"the loss became {loss.item()}")
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def naive_step(model, reference, name, optimizer, tokens, images, labels):
    """A TeCoA / PMG-AFT step as the official code runs it: fp32, the class prompts re-encoded by the text tower at
    every attack step and at the loss step, and every parameter requiring gradients (only the image tower is
    optimised), so each backward fills them all."""

    def logits(net, x, text):
        return net.logit_scale * F.normalize(net.encode_image(x), dim=-1) @ text.T

    def kl(student, teacher):
        return F.kl_div(F.log_softmax(student, dim=1), F.softmax(teacher, dim=1), reduction="batchmean")

    delta = (images + torch.empty_like(images).uniform_(-EPS, EPS)).clamp(0, 1) - images
    for _ in range(ATTACK_STEPS):
        delta.requires_grad_(True)
        text = F.normalize(model.clip.encode_text(tokens), dim=-1)
        F.cross_entropy(logits(model, images + delta, text), labels).backward()
        delta = (delta.detach() + EPS * delta.grad.sign()).clamp(-EPS, EPS)
        delta = (images + delta).clamp(0, 1) - images
        model.zero_grad(set_to_none=True)
    adversarial = (images + delta).detach()
    text = F.normalize(model.clip.encode_text(tokens), dim=-1)
    adv_logits = logits(model, adversarial, text)
    loss = F.cross_entropy(adv_logits, labels)
    if name == "pmg_aft":
        with torch.no_grad():
            reference_logits = logits(reference, adversarial, text)
        loss = loss + kl(adv_logits, reference_logits) + kl(adv_logits, logits(model, images, text))
    loss.backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)


def _measure(fn, device, steps):
    """(seconds per step, peak-memory text) of ``fn`` after one warm-up call."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    seconds = seconds_per_call(fn, device, steps)
    if device.type == "cuda":
        return seconds, f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return seconds, f"process peak RSS {rss / 2**20:.2f} GiB (+{(rss - rss_before) / 2**20:.2f} GiB here)"


def time_engine(model, method, images, labels, precision, compiled, device, steps):
    """(seconds per step, memory) of ``engine_step`` with a fresh optimizer (and frozen reference, if needed)."""
    reference = frozen_copy(model) if method.needs_reference else None
    optimizer = torch.optim.SGD(train_image_tower_only(model), lr=LR, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    trainer = TrainStep(model, method, reference)
    attacked = torch.compile(model) if compiled else model  # fit compiles the attacked model only
    counter = itertools.count()
    return _measure(
        lambda: engine_step(
            trainer,
            attacked,
            optimizer,
            scaler,
            images,
            labels,
            start_noise(0, next(counter), images.shape, device, 0, 1),
            precision,
        ),
        device,
        steps,
    )


def time_naive(model, method, images, labels, tokens, device, steps):
    reference = frozen_copy(model) if method.needs_reference else None
    optimizer = torch.optim.SGD(train_image_tower_only(model), lr=LR, momentum=0.9)
    model.requires_grad_(True).train()  # the official code leaves every weight trainable
    try:
        return _measure(
            lambda: naive_step(model, reference, method.name, optimizer, tokens, images, labels), device, steps
        )
    finally:
        train_image_tower_only(model)


def benchmark_method(name, model, images, labels, tokens, args, device, precisions, flops_per_image):
    method = build_method(name).to(device)
    method.setup(model, [f"class {i}" for i in range(args.n_classes)], ["This is a photo of a {}"])
    results = []  # (label, precision or None for the naive step, images/s, memory)
    variants = [(p, False) for p in precisions] + ([(p, True) for p in precisions] if args.compile else [])
    for precision, compiled in variants:
        seconds, memory = time_engine(model, method, images, labels, precision, compiled, device, args.steps)
        results.append(
            (f"zsr_lab {precision}{' + compile' if compiled else ''}", precision, len(images) / seconds, memory)
        )
    naive = None
    if not args.skip_naive and name in NAIVE_METHODS:
        seconds, memory = time_naive(model, method, images, labels, tokens, device, args.steps)
        naive = len(images) / seconds
        results.append(("naive reference fp32 (text re-encoded every step, all weight gradients)", None, naive, memory))
    step_flops = forwards_per_image(name) * flops_per_image
    for label, precision, rate, memory in results:
        speedup = f", {rate / naive:.1f}× the naive step" if naive and precision else ""
        line = f"{name}, {label}: {rate:,.{1 if rate >= 10 else 3}f} training images/s{speedup}, {memory}"
        peak = peak_tflops(device, precision) if precision else None
        if peak:
            achieved = rate * step_flops / 1e12
            line += f", {achieved:.1f} TFLOP/s = {100 * achieved / peak:.1f} % of the {peak:.0f} TFLOP/s dense peak"
        print(line, flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["classroom", "scenes", "full"], default="classroom")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5 full, 10 classroom)")
    parser.add_argument("--methods", nargs="+", default=["tecoa", "pmg_aft"], choices=sorted(METHODS))
    parser.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS))
    parser.add_argument("--n-classes", type=int, default=200, help="training classes (Tiny-ImageNet: 200)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the attacked model")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args(argv)
    args.steps = args.steps or (5 if args.scale == "full" else 10)

    setup = get_scale(args.scale)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pretrained = setup.pretrained if args.scale != "full" else None  # random weights: same FLOPs
    model = load_clip(setup.model_name, pretrained, device=device)
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    size = model.image_size[0]
    print(
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} "
        f"({torch.get_num_threads()} CPU threads), model {setup.model_name} ({pretrained or 'random weights'}), "
        f"input {size}px, batch {args.batch_size}, {args.n_classes} classes, {args.steps} timed steps after one "
        f"warm-up, {ATTACK_STEPS}-step PGD at ε = 1/255, torch {torch.__version__}"
    )

    prompts = [f"This is a photo of a class {i}" for i in range(args.n_classes)]
    with torch.no_grad():
        model.set_classifier(model.encode_text(prompts))  # normalised; computed once, as fit does
    tokens = model.tokenizer(prompts).to(device)
    images = torch.rand(args.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, args.n_classes, (args.batch_size,), device=device)
    flops_per_image = forward_flops(model, images[:2]) / 2
    print(f"forward FLOPs per image: {flops_per_image / 1e9:.3f} GFLOP")
    for name in args.methods:
        benchmark_method(name, model, images, labels, tokens, args, device, precisions, flops_per_image)


if __name__ == "__main__":
    main()
