"""Small CNN slice classifiers, trained here on the cohort (nothing downloaded): the condition classifier (level,
pattern and side heads), whose features are the domain features of FID, KID, precision and recall, and the critic of
the classifier two-sample test.

Inputs are counts divided by the cohort's count scale (the one cohort-wide constant), so mean counts stay visible.
No augmentation: nothing is flipped (side is a label) and intensities are never rescaled (MC is a measure). The
encoder keeps a coarse 4 x 4 layout before its feature layer, so the features know left from right.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spectgan.evaluation.data import CLASS_NAMES

CHANNELS = (8, 16, 32, 64)  # one stride-2 convolution per width: 128 -> 8 (64 -> 4) pixels
LAYOUT_SIZE = 4  # the encoder's last map is pooled to LAYOUT_SIZE x LAYOUT_SIZE, then flattened
FEATURE_DIM = 64
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
INFERENCE_BATCH = 256
CONDITION_HEADS: dict[str, int] = {name: len(names) for name, names in CLASS_NAMES.items()}


def to_inputs(counts: np.ndarray, count_scale: float) -> torch.Tensor:
    """Slices in counts [N, H, W] -> network inputs [N, 1, H, W] (counts / count scale)."""
    return torch.from_numpy(np.asarray(counts, dtype=np.float32) / np.float32(count_scale))[:, None]


class SliceClassifier(nn.Module):
    """Convolutional encoder to FEATURE_DIM features, then one linear head per task."""

    def __init__(self, heads: Mapping[str, int]):
        super().__init__()
        layers, channels = [], 1
        for width in CHANNELS:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(LAYOUT_SIZE), nn.Flatten(),
                                     nn.Linear(channels * LAYOUT_SIZE ** 2, FEATURE_DIM), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(FEATURE_DIM, classes) for name, classes in heads.items()})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features [B, FEATURE_DIM] and the logits of each head."""
        features = self.encoder(images)
        return features, {name: head(features) for name, head in self.heads.items()}


@contextmanager
def single_thread():
    """Run torch on one intra-op thread, then restore the thread count. These small convolutions gain nothing from
    a second thread, and on a busy machine a descheduled thread leaves the other spinning: measured on 2 cores
    shared with training runs, a training step (32 slices of 128 x 128) took 25 ms on one thread and 47-250 ms on
    two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def recalibrate_batch_norm(model: SliceClassifier, inputs: torch.Tensor) -> None:
    """Replace every batch norm's running statistics by exact averages over ``inputs`` [N, 1, H, W] (the final
    weights, train-mode batches of ``BATCH_SIZE``).

    The running averages that training leaves (momentum 0.1) describe the last few batches under weights that kept
    changing. A critic whose decision rests on stale statistics can shift every held-out logit one way, and a
    two-sample test then lands far below chance (0.19 was reported on pixel-shuffled slices; the calibration tests
    in tests/test_evaluation.py guard against it)."""
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in inputs.split(BATCH_SIZE):
            if len(batch) > 1:
                model(batch)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def train_classifier(inputs: torch.Tensor, targets: Mapping[str, np.ndarray], heads: Mapping[str, int],
                     steps: int, seed: int) -> SliceClassifier:
    """Train a classifier for ``steps`` mini-batches (epochs of shuffled inputs; cross-entropy summed over the
    heads, AdamW), then recalibrate its batch norms on ``inputs``; eval mode on return. The cost depends on
    ``steps``, not on the number of inputs.

    Initialisation and batch order come from ``seed`` alone (the global random state is left as it was).
    """
    labels = {name: torch.as_tensor(np.asarray(targets[name]), dtype=torch.long) for name in heads}
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        model = SliceClassifier(heads)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        batches: list[torch.Tensor] = []
        while len(batches) < steps:
            batches += torch.randperm(len(inputs)).split(BATCH_SIZE)
        model.train()
        for batch in batches[:steps]:
            _, logits = model(inputs[batch])
            loss = sum(F.cross_entropy(logits[name], labels[name][batch]) for name in heads)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        recalibrate_batch_norm(model, inputs[torch.randperm(len(inputs))])
    return model.eval()


def saliency(model: SliceClassifier, inputs: torch.Tensor, head: str) -> torch.Tensor:
    """Mean absolute gradient of the margin of class 1 over class 0 of ``head`` with respect to each input pixel:
    [H, W], where the classifier looks (Simonyan et al. 2014)."""
    total = torch.zeros(inputs.shape[-2:])
    with single_thread():
        for batch in inputs.split(INFERENCE_BATCH):
            batch = batch.clone().requires_grad_(True)
            logits = model(batch)[1][head]
            (logits[:, 1] - logits[:, 0]).sum().backward()
            total += batch.grad.abs().sum(dim=(0, 1))
    model.zero_grad(set_to_none=True)
    return total / len(inputs)


def classify(model: SliceClassifier, inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Features and logits of every input, in batches."""
    features, logits = [], []
    with torch.inference_mode(), single_thread():
        for batch in inputs.split(INFERENCE_BATCH):
            batch_features, batch_logits = model(batch)
            features.append(batch_features)
            logits.append(batch_logits)
    return torch.cat(features), {name: torch.cat([batch[name] for batch in logits]) for name in model.heads}
