"""zsr_lab: zero-shot adversarial robustness of CLIP — the companion package of the book.

One import gives the flat API the chapters build up::

    import zsr_lab as zl
    scale = zl.get_scale("classroom")            # or "full"
    clip = zl.load_clip(scale.model_name, scale.pretrained)
    table = zl.evaluate_zero_shot(clip, scale.eval_datasets)
"""
from . import (apgd, attacks, attention, evaluate, methods, plots, protocol, reported, sanity, settings, suites, tima,
               train)
from .classifier import dataset_classifier, zero_shot_classifier
from .datasets import (BENCHMARK_DATASETS, CLASSROOM_DATASETS, DatasetNotFoundError, get_spec,
                       list_datasets, load_dataset)
from .evaluate import (evaluate_robustness, evaluate_zero_shot, member_table, summarize, with_mean,
                       zero_shot_accuracy)
from .explorer import AttentionExplorer
from .models import (ImageFeatures, WeightsUnavailableError, ZeroShotCLIP, freeze, frozen_copy, load_clip,
                     train_image_tower_only)
from .protocol import Protocol
from .scales import Scale, get_scale
from .train import TrainConfig, fit, recipe

__version__ = "0.1.0"
