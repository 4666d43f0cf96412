"""The adversarial fine-tuning engine: one entry point, :func:`fit`, for every method, one process or many.

    config = recipe("tecoa", scale="classroom")        # the spec's constants at full scale
    result = fit(config)                                # trains (or resumes), then evaluates
    result.evaluation                                   # tidy table from the evaluation engine

What a training step does (:func:`train_micro_batch` per micro-batch): draw the batch's random start, attack with
the method's inner objective (PGD in [0,1] pixel space, the model's parameters frozen meanwhile), then one
forward/backward of the method's loss (under autocast; with a GradScaler in fp16); then an optimizer step and a
per-step learning-rate update (linear warm-up, then cosine to 0). The text side is frozen, so the class embeddings
of the training classes are computed once.

Nothing finished is ever lost: :class:`TrainState` is everything the next step depends on, and its checkpoints
(:mod:`zsr_lab.checkpoints`) are written atomically: ``epoch_latest.pt`` every ``checkpoint_every`` steps and at
every epoch end, ``epoch_<k>.pt`` per epoch, so ``fit`` resumes mid-epoch and ends with the same weights as an
uninterrupted run. A NaN/inf loss stops the run before the bad update is saved.

Under ``torchrun`` the same entry point runs data-parallel (DDP; rank 0 writes checkpoints and logs). Every
process sees its share of the *same* global batches, with the same random starts, so the result does not depend
on the number of processes (up to float rounding). ``python -m zsr_lab.train --help`` is the command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from . import datasets, distributed, settings
from .attack_base import seed_from
from .attacks import build_attack, pgd_linf
from .checkpoints import (
    CHECKPOINT_FORMAT,
    LATEST,
    LOG_FILE,
    RESULTS_CSV,
    WEIGHTS_FILE,
    append_log,
    load_checkpoint,
    read_log,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_only_state,
)
from .classifier import dataset_classifier
from .evaluate import evaluate_robustness, load_protocol_data, with_mean, write_results_csv, zero_shot_accuracy
from .methods import Method, build_method
from .models import ZeroShotCLIP, freeze, frozen_copy, frozen_parameters, model_image_size, train_image_tower_only
from .precision import FP16_GRAD_SCALE, autocast
from .pretrained import RANDOM_WEIGHTS, load_clip
from .progress import progress_bar
from .recipes import TrainConfig, jsonable, method_revision
from .worklog import work


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over ``warmup_steps`` optimizer steps, then cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` that can start mid-epoch (``skip`` of this process's examples).

    With one process it is a seeded shuffle; with ``world`` processes, process ``rank`` takes every world-th
    index of the same permutation, so the processes' micro-batches together are exactly the one-process batch.
    """

    def __init__(self, dataset, *, world: int, rank: int, seed: int, skip: int = 0):
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = skip

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def start_noise(seed: int, step: int, shape, device, rank: int, world: int) -> torch.Tensor:
    """Uniform noise of the random starts of one global batch, this process's rows (the same numbers whatever
    the number of processes or accumulation steps)."""
    digest = hashlib.sha256(f"{seed}/{step}".encode()).digest()
    generator = torch.Generator(device=device).manual_seed(int.from_bytes(digest[:7], "big"))
    noise = torch.rand((shape[0] * world, *shape[1:]), generator=generator, device=device)
    return noise[rank::world]


class TrainStep(nn.Module):
    """The loss of a training step as one module, so DDP sees a single forward per micro-batch."""

    def __init__(self, model: ZeroShotCLIP, method: Method, reference: ZeroShotCLIP | None):
        super().__init__()
        self.model, self.method, self.reference = model, method, reference

    def forward(self, images, adversarial, labels, context):
        return self.method(self.model, self.reference, images, adversarial, labels, context)


def train_micro_batch(
    trainer: nn.Module,
    attacked: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    precision: str,
    scaler: torch.amp.GradScaler,
    loss_weight: float = 1.0,
):
    """Attack, loss and backward of one micro-batch: the heart of a training step (the optimizer step is the caller's).

    Arguments:
        trainer: the :class:`TrainStep` module, or its DDP wrapper.
        attacked: the model the training attack runs on (the trained model, or its ``torch.compile`` version).
        noise: uniform [0, 1) noise of the random start, shaped like ``images``.
        eps, step_size: ℓ∞ budget and step of the training attack, in pixel units; ``steps``: its steps.
        loss_weight: multiplies the loss before the backward pass (1 / accumulation steps).

    Returns:
        ``(loss, terms)``, detached.
    """
    step = trainer.module if isinstance(trainer, nn.parallel.DistributedDataParallel) else trainer
    model, method, reference = step.model, step.method, step.reference
    device = model.device
    model.eval()
    with torch.no_grad(), autocast(precision, device):
        context = method.prepare(model, reference, images, labels)
    with frozen_parameters(model), autocast(precision, device):  # only δ's gradient: the weights' stay untouched
        adversarial = pgd_linf(
            lambda adv: method.attack_objective(attacked, adv, labels, context),
            images,
            eps=eps,
            step_size=step_size,
            steps=steps,
            start=noise,
            momentum=method.attack_momentum,
            grad_scale=FP16_GRAD_SCALE if precision == "fp16" else 1.0,
        )
    model.train()
    with autocast(precision, device):
        loss, terms = trainer(images, adversarial, labels, context)
    scaler.scale(loss * loss_weight).backward()
    return loss.detach(), terms


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: the fine-tuned model (its ``pretrained`` is the final checkpoint's file).
        config: the resolved config.
        run_dir: the run folder; ``checkpoint``: the final checkpoint (weights, optimizer, schedule: to resume);
            ``weights``: the fine-tuned CLIP's weights alone (``load_clip(model, weights)`` reads it, and so does
            ``open_clip.create_model(model, pretrained=weights)``).
        history: the training log (one row per logged step, ``kind`` = ``"train"`` or ``"holdout"``).
        evaluation: the final zero-shot evaluation table (empty when no evaluation sets were asked for).
    """

    model: ZeroShotCLIP
    config: TrainConfig
    run_dir: Path
    checkpoint: Path
    weights: Path
    history: pd.DataFrame
    evaluation: pd.DataFrame


@dataclass
class TrainState:
    """A run in progress: where it runs, the model and method, and everything its next step depends on (what a
    checkpoint saves and :meth:`restore` puts back).

    Attributes:
        config: the resolved config; ``run_dir``: the run's folder; ``device``, ``rank``, ``world``: where this
            process runs.
        model, method, reference: the trained model, its method and the frozen pre-trained model (or ``None``).
        optimizer, scheduler, scaler: the optimizer, its per-step learning-rate schedule, the fp16 GradScaler.
        text_parameters: text-side parameters the method trains too (TIMA's joint schedule), else empty.
        steps_per_epoch, total_steps: the schedule; ``step``: optimizer steps done.
    """

    config: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    model: ZeroShotCLIP
    method: Method
    reference: ZeroShotCLIP | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    text_parameters: list[nn.Parameter]
    steps_per_epoch: int
    total_steps: int
    step: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    def checkpoint(self) -> dict:
        """What a checkpoint file holds."""
        return {
            "state_dict": self.model.clip.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device),
            "step": self.step,
            "data_position": {"epoch": self.step // self.steps_per_epoch, "batch": self.step % self.steps_per_epoch},
            "config": jsonable(asdict(self.config)),
            "format": CHECKPOINT_FORMAT,
            "method_revision": method_revision(self.config),
        }

    def restore(self, checkpoint: dict) -> None:
        """Continue from a checkpoint (of this run: :func:`~zsr_lab.checkpoints.load_checkpoint` checked it)."""
        self.model.clip.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"], self.device)
        self.step = checkpoint["step"]
        self.method.refresh_classifier(self.model)  # a tuned text side came back with the weights

    def save(self, name: str | None = None) -> None:
        """Checkpoint the state as ``name`` (``None``: ``epoch_latest.pt`` only); rank 0 writes."""
        if self.is_main:
            save_checkpoint(
                self.checkpoint(),
                self.checkpoints,
                name,
                keep=self.config.keep_checkpoints,
                steps_per_epoch=self.steps_per_epoch,
            )


def fit(config: TrainConfig, *, hooks: Sequence = (), progress: bool = True) -> TrainResult:
    """Fine-tune with ``config.method`` (or resume the run in ``config.run_dir``), then evaluate zero-shot.

    Arguments:
        config: a :class:`TrainConfig` (``recipe(method, scale)`` gives the spec's).
        hooks: callables ``hook(step, model)`` run after every optimizer step (e.g. custom probes).
        progress: show progress bars (:func:`zsr_lab.progress.progress_bar`).

    Returns:
        A :class:`TrainResult`. A finished run found in ``run_dir`` is loaded, not retrained; finished evaluation
        rows are reused too.

    Raises:
        ValueError / TypeError / FileNotFoundError: a bad config, before any compute.
        DatasetNotFoundError: a missing dataset, with its expected layout and what to do.
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint stays).
    """
    with work("fitting", config.method) as record:
        return _fit(config, hooks, progress, record)


def _fit(config: TrainConfig, hooks: Sequence, progress: bool, record) -> TrainResult:
    config = config.resolved()
    run_dir = config.run_folder()
    _check_run_can_start(config, run_dir)
    # data first: a missing dataset fails before the model is loaded (or the classroom CLIP pre-trained)
    image_size = model_image_size(config.model)
    train_data, holdout_data = training_data(config, image_size)
    if config.eval_datasets:  # and an evaluation that cannot run (n_examples > a split) fails before training
        load_protocol_data(config.protocol, image_size, data_root=config.data_root, download=config.download)
    state = _initial_state(config, run_dir, len(train_data))
    latest = state.checkpoints / LATEST
    resumed = latest.exists()
    distributed.barrier()  # every process has looked before rank 0 may write the first checkpoint
    if resumed:
        state.restore(load_checkpoint(latest, config))
        record.cached = state.step >= state.total_steps  # a finished run, loaded
        if state.is_main and progress:
            done = "finished: loaded, not retrained" if state.step >= state.total_steps else "resuming"
            print(f"run {run_dir.name}: step {state.step} of {state.total_steps}, {done}")
    trainer = _trainer(state)
    attacked = torch.compile(state.model) if config.compile else state.model
    _open_run(state, train_data, resumed)
    bar = progress_bar(
        total=state.total_steps,
        initial=state.step,
        desc=f"{config.method} ({config.scale})",
        disable=not (progress and state.is_main) or state.step >= state.total_steps,  # a finished run: no bar
    )
    try:
        _train_steps(state, trainer, attacked, train_data, holdout_data, hooks, bar)
    except KeyboardInterrupt:
        state.save()  # between steps the state is consistent: keep it
        if state.is_main:
            print(
                f"interrupted: saved step {state.step} to {latest}; run the same command (or fit with the same "
                f"config) again to resume",
                file=sys.stderr,
            )
        raise
    finally:
        bar.close()
    distributed.barrier()
    return _finish(state, progress)


def _open_run(state: TrainState, train_data, resumed: bool) -> None:
    """The run folder with the config, a killed run's temporaries cleared; a new run's work before its first step
    (TIMA's staged text tuning), logged and checkpointed so that a resumed run does not repeat it."""
    if state.is_main:
        state.run_dir.mkdir(parents=True, exist_ok=True)
        state.config.save(state.run_dir / "config.json")
        for folder in (state.run_dir, state.checkpoints):  # left by a run killed mid-write
            settings.remove_stale_temporaries(folder)
    if resumed:
        return
    records = state.method.before_training(state.model, state.reference, train_data)
    for record in records if state.is_main else ():
        append_log(state.log_path, {"kind": "text", **record})
    if records:
        state.save()


def _check_run_can_start(config: TrainConfig, run_dir: Path) -> None:
    """What only the run folder and the process count can tell, before anything is loaded."""
    world = distributed.rank_and_world()[1]
    if (config.batch_size // config.accumulation_steps) % world:
        raise ValueError(
            f"the micro-batch ({config.batch_size} / {config.accumulation_steps} accumulation steps) "
            f"must split evenly over {world} processes"
        )
    if (run_dir / "checkpoints" / LATEST).exists() and not config.resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass resume=True to continue it, or choose a new "
            f"run_dir (nothing was overwritten)"
        )


def training_data(config: TrainConfig, image_size: int) -> tuple[Subset, Subset]:
    """(training subset, holdout subset) of the training set: a fixed split, the same in every process."""
    data = datasets.load_dataset(
        config.train_dataset, data_root=config.data_root, image_size=image_size, download=config.download, verbose=False
    )
    if len(data) <= config.holdout_examples:
        raise ValueError(
            f"{config.train_dataset} has {len(data):,} images and holdout_examples = "
            f"{config.holdout_examples:,} holds them all out of training: lower holdout_examples "
            f"(0 turns the holdout evaluation off)"
        )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed)).tolist()
    holdout = order[: config.holdout_examples]
    train = order[config.holdout_examples :]
    if config.train_examples is not None:
        train = train[: config.train_examples]
    return Subset(data, sorted(train)), Subset(data, sorted(holdout))


def _initial_state(config: TrainConfig, run_dir: Path, n_train: int) -> TrainState:
    """The model to fine-tune with its method, frozen reference, optimizer and schedule, at step 0."""
    rank, world = distributed.rank_and_world()
    device = distributed.local_device(config.device)
    torch.manual_seed(config.seed)  # random initialisation ("none") is part of the run's settings
    model = load_clip(config.model, None if config.pretrained == RANDOM_WEIGHTS else config.pretrained, device=device)
    method = build_method(config.method, **config.method_options).to(device)
    steps_per_epoch = n_train // config.batch_size
    if steps_per_epoch == 0:
        limits = (
            f"train_examples = {config.train_examples}"
            if config.train_examples is not None
            else f"{config.train_dataset} minus holdout_examples = {config.holdout_examples}"
        )
        raise ValueError(
            f"the training set has {n_train} images ({limits}), fewer than one batch of "
            f"{config.batch_size}: lower batch_size, or raise train_examples or lower holdout_examples"
        )
    total_steps = config.steps or steps_per_epoch * config.epochs

    # the text side: the training classes' embeddings, computed once (and refreshed when a method tunes the text)
    spec = datasets.get_spec(config.train_dataset)
    model.set_classifier(dataset_classifier(model, config.train_dataset))
    method.setup(model, spec.classnames, list(spec.templates))
    reference = frozen_copy(model) if method.needs_reference else None
    if method.pixel_stats is not None:
        for net in filter(None, (model, reference)):
            net.pixel_mean.copy_(torch.tensor(method.pixel_stats[0]).view(1, 3, 1, 1))
            net.pixel_std.copy_(torch.tensor(method.pixel_stats[1]).view(1, 3, 1, 1))
    parameters = train_image_tower_only(model)
    text_parameters = method.text_parameters(model)  # TIMA's joint schedule also trains the text side
    for parameter in text_parameters:
        parameter.requires_grad_(True)
    parameters += text_parameters
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, total_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    return TrainState(
        config,
        run_dir,
        device,
        rank,
        world,
        model,
        method,
        reference,
        optimizer,
        scheduler,
        scaler,
        text_parameters,
        steps_per_epoch,
        total_steps,
    )


def _batches(state: TrainState, data):
    """This process's batches from the state's step on, epoch after epoch: each epoch's sampler starts where the
    run stands in it, so a resumed run sees the batches an uninterrupted one would."""
    config, step = state.config, state.step
    local_batch = config.batch_size // state.world
    while True:
        epoch, position = divmod(step, state.steps_per_epoch)
        sampler = ResumableSampler(
            data, world=state.world, rank=state.rank, seed=config.seed, skip=position * local_batch
        )
        sampler.set_epoch(epoch)
        loader = DataLoader(
            data,
            batch_size=local_batch,
            sampler=sampler,
            drop_last=True,
            num_workers=settings.loader_workers(state.device, config.num_workers),
            pin_memory=state.device.type == "cuda",
        )
        yield from itertools.islice(loader, state.steps_per_epoch - position)
        step += state.steps_per_epoch - position


def _trainer(state: TrainState) -> nn.Module:
    """The step's loss as one module, wrapped in DDP when several processes train."""
    trainer = TrainStep(state.model, state.method, state.reference)
    if state.world == 1:
        return trainer
    return nn.parallel.DistributedDataParallel(
        trainer, device_ids=[state.device.index] if state.device.type == "cuda" else None, broadcast_buffers=False
    )


def _train_steps(
    state: TrainState, trainer: nn.Module, attacked: nn.Module, train_data, holdout_data, hooks: Sequence, bar
) -> None:
    """Optimizer steps until the schedule's end, with the log, the holdout evaluation and the checkpoints."""
    config, per_epoch = state.config, state.steps_per_epoch
    eval_every = per_epoch if config.eval_every is None else config.eval_every
    batches = _batches(state, train_data)
    sums: dict[str, torch.Tensor] = {}
    logged_steps, train_seconds = 0, 0.0
    while state.step < state.total_steps:
        started = time.perf_counter()
        step_loss = _optimizer_step(state, trainer, attacked, *next(batches), sums)
        logged_steps += 1
        train_seconds += time.perf_counter() - started
        sums["loss"] = sums.get("loss", 0) + step_loss
        bar.update(1)
        for hook in hooks:
            hook(state.step, state.model)
        step, done = state.step, state.step == state.total_steps
        if state.is_main and (step % config.log_every == 0 or done):
            record = {
                "kind": "train",
                "step": step,
                "epoch": step / per_epoch,
                "lr": state.optimizer.param_groups[0]["lr"],
                **{k: float(v) / logged_steps for k, v in sums.items()},
                "images_per_s": logged_steps * config.batch_size / train_seconds,
            }
            append_log(state.log_path, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            sums, logged_steps, train_seconds = {}, 0, 0.0
        if eval_every and (step % eval_every == 0 or done) and len(holdout_data) and state.is_main:
            append_log(
                state.log_path,
                {
                    "kind": "holdout",
                    "step": step,
                    "epoch": step / per_epoch,
                    **holdout_accuracy(state.model, holdout_data, config, state.device),
                },
            )
        if step % per_epoch == 0:
            state.save(f"epoch_{step // per_epoch}.pt")
        elif done:
            state.save(f"step_{step}.pt")
        elif config.checkpoint_every and step % config.checkpoint_every == 0:
            state.save()


def _optimizer_step(
    state: TrainState, trainer: nn.Module, attacked: nn.Module, images: torch.Tensor, labels: torch.Tensor, sums: dict
) -> torch.Tensor:
    """One optimizer step over the global batch (its micro-batches accumulated), the loss terms added to
    ``sums``; returns the step's loss. Raises :class:`TrainingDivergedError` before a non-finite update."""
    config, device, micro_batches = state.config, state.device, state.config.accumulation_steps
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    step_loss = torch.zeros((), device=device)
    noises = start_noise(config.seed, state.step, images.shape, device, state.rank, state.world).chunk(micro_batches)
    for micro, (x, y, noise) in enumerate(zip(images.chunk(micro_batches), labels.chunk(micro_batches), noises)):
        last = micro == micro_batches - 1
        with contextlib.nullcontext() if last or state.world == 1 else trainer.no_sync():
            loss, terms = train_micro_batch(
                trainer,
                attacked,
                x,
                y,
                noise,
                eps=config.eps / 255,
                step_size=config.attack_step_size / 255,
                steps=config.attack_steps,
                precision=config.precision,
                scaler=state.scaler,
                loss_weight=1 / micro_batches,
            )
        step_loss += loss.float() / micro_batches
        for name, value in terms.items():
            sums[name] = sums.get(name, 0) + value.float() / micro_batches
    finite = distributed.all_reduce(torch.isfinite(step_loss).float(), op=torch.distributed.ReduceOp.MIN)
    if not finite.item():
        raise TrainingDivergedError(
            f"the {config.method} loss became {step_loss.item()} at step {state.step + 1} (epoch "
            f"{state.step // state.steps_per_epoch + 1}); the update was not applied and the last good checkpoint in "
            f"{state.checkpoints} is kept. What to do: lower lr (now {config.lr}), use precision='bf16' or 'fp32' "
            f"instead of fp16, or check the data"
        )
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.text_parameters:
        state.method.refresh_classifier(state.model)
    state.step += 1
    return step_loss


def _finish(state: TrainState, progress: bool) -> TrainResult:
    """The fine-tuned weights alone (``weights.pt``) and the final evaluation, as the run's result."""
    config, run_dir, per_epoch = state.config, state.run_dir, state.steps_per_epoch
    final = state.checkpoints / (
        f"epoch_{state.total_steps // per_epoch}.pt"
        if state.total_steps % per_epoch == 0
        else f"step_{state.total_steps}.pt"
    )
    # a model is evaluated with the input statistics it was trained with (PMG-AFT's repository form: ImageNet's)
    model = freeze(state.model)
    weights = run_dir / WEIGHTS_FILE
    if state.is_main and not weights.exists():
        settings.atomic_save(weights_only_state(model), weights)
    model.pretrained = str(weights)
    evaluation = pd.DataFrame()
    if config.eval_datasets:
        evaluation = _evaluate(model, config, run_dir / "evaluation", progress=progress and state.is_main)
        evaluation.insert(0, "method", config.method)
        if state.is_main:  # what load_run_results and the comparison chapter read, whichever entry point trained it
            write_results_csv(with_mean(evaluation), run_dir / RESULTS_CSV)
    return TrainResult(
        model=model,
        config=config,
        run_dir=run_dir,
        checkpoint=final,
        weights=weights,
        history=read_log(run_dir),
        evaluation=evaluation,
    )


def holdout_accuracy(model: ZeroShotCLIP, holdout, config: TrainConfig, device) -> dict:
    """Clean and PGD-10 accuracy (at the training ε) on the held-out training images: monitoring only."""
    loader = DataLoader(holdout, batch_size=config.eval_batch_size)
    was_training = model.training
    correct, total = zero_shot_accuracy(model, loader, precision=config.eval_precision, progress=False)
    robust = 0
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), frozen_parameters(model):
        attack = build_attack(
            model, "pgd-10", config.eps, n_classes=model.class_embeddings.shape[0], precision=config.eval_precision
        )
        seen = 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            # each held-out image keeps its own random start at every evaluation of the run
            seeds = torch.tensor([seed_from(config.seed, "holdout", seen + i) for i in range(len(images))])
            seen += len(images)
            adversarial = attack(images, labels, seeds)
            with torch.no_grad(), autocast(config.eval_precision, device):
                robust += int((model(adversarial).argmax(1) == labels).sum())
    model.train(was_training)
    return {
        "clean_accuracy": 100.0 * correct / total,
        "robust_accuracy": 100.0 * robust / total,
        "attack": f"PGD-10 at {config.eps:g}/255",
        "n": total,
    }


def evaluate_pretrained(config: TrainConfig, *, progress: bool = True) -> pd.DataFrame:
    """The model a run starts from, under the run's final evaluation protocol: the "CLIP (zero-shot)" baseline.

    Results are kept under the zsr_lab cache (keyed by model, tag and protocol), so chapters share them.
    """
    config = config.resolved()
    device = torch.device(config.device) if config.device else settings.default_device()
    model = load_clip(config.model, config.pretrained, device=device)
    out_dir = settings.cache_dir() / "runs" / f"pretrained-{config.scale}"
    table = _evaluate(model, config, out_dir, progress=progress, compile=False)
    table.insert(0, "method", "CLIP (zero-shot)")
    return table


def _evaluate(model: ZeroShotCLIP, config: TrainConfig, out_dir: Path, *, progress: bool, compile: bool | None = None):
    """``model`` under the config's final evaluation protocol, with its data and batch settings, into ``out_dir``
    (``compile``: the config's unless given)."""
    return evaluate_robustness(
        model,
        config.protocol,
        data_root=config.data_root,
        batch_size=config.eval_batch_size,
        compile=config.compile if compile is None else compile,
        num_workers=config.num_workers,
        download=config.download,
        out_dir=out_dir,
        progress=progress,
    )
