"""Benchmark of the clean zero-shot paths (prints numbers; not a test).

    python -m zsr_lab.speed --scale full --device cuda     # ViT-B/32 at 224, random weights (same FLOPs)
    python -m zsr_lab.speed --scale classroom              # the classroom CLIP on CPU

Reports: building a 1000-class classifier (text tower) and loading it from the cache; clean zero-shot
classification images/s through the real evaluation loop (host→device copies included) per precision, with
achieved TFLOP/s and the fraction of the GPU's dense peak; and the projected time of a clean pass over the
16-dataset benchmark (~340k images).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import datasets
from .classifier import dataset_classifier
from .evaluate import zero_shot_accuracy
from .precision import PRECISIONS
from .models import load_clip
from .scales import get_scale

BENCHMARK_IMAGES = 340_000  # the 16 datasets' evaluation splits together, roughly
# dense (no sparsity) peak TFLOP/s per precision; fp32 runs as TF32 on tensor cores only if enabled
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
               "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}}


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["classroom", "full"], default="classroom")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--precisions", nargs="+", default=None, choices=sorted(PRECISIONS))
    args = parser.parse_args(argv)

    setup = get_scale(args.scale)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pretrained = setup.pretrained if args.scale == "classroom" else None  # random weights: same FLOPs
    model = load_clip(setup.model_name, pretrained, device=device)
    batch_size = args.batch_size or setup.batch_size
    precisions = args.precisions or (["fp32", "bf16"] if device.type == "cuda" else ["fp32"])
    size = model.image_size[0]
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"model {setup.model_name} ({pretrained or 'random weights'}), input {size}px, batch {batch_size}, "
          f"torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        weights = dataset_classifier(model, "imagenet", cache_dir=cache)
        _sync(device)
        built = time.perf_counter() - start
        start = time.perf_counter()
        dataset_classifier(model, "imagenet", cache_dir=cache)
        loaded = time.perf_counter() - start
    print(f"classifier, {len(datasets.get_spec('imagenet').classnames)} classes: built in {built:.2f} s, "
          f"loaded from cache in {1000 * loaded:.1f} ms")
    model.set_classifier(weights)

    images = torch.rand(batch_size, 3, size, size)
    labels = torch.randint(0, len(weights), (batch_size,))
    flops_per_image = forward_flops(model, images[:2].to(device)) / 2
    print(f"forward FLOPs per image: {flops_per_image / 1e9:.2f} GFLOP")
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    # Batches from the host (pinned) include the host→device copies; batches already on the device measure
    # the model alone. Decoding JPEGs is the data loader's job (num_workers) and is not timed here.
    sources = {"host batches": [(images, labels)] * args.batches,
               "device-resident batches": [(images.to(device), labels.to(device))] * args.batches}
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
            print(f"clean zero-shot, {precision}, {source}: {rate:,.0f} images/s, {achieved:.2f} TFLOP/s{fraction}; "
                  f"16-dataset clean pass (~{BENCHMARK_IMAGES:,} images) {BENCHMARK_IMAGES / rate / 60:.1f} min")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
