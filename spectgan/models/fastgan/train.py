"""``spectgan train``: the conditional FastGAN training loop, resumable, in one process or under torchrun (DDP).

One code path: CUDA with mixed precision (bfloat16, or float16 with a gradient scaler) when available, the CPU in
full precision otherwise. Under ``torchrun --nproc_per_node N`` every process draws its own share of the batch
(``--batch`` is the global batch) and DistributedDataParallel averages gradients (NCCL on CUDA, gloo on the CPU);
process 0 writes everything.

Run folder: ``checkpoint.pt`` (see ``gan.checkpoint``; every ``--checkpoint-every`` steps and at the end),
``tensorboard/`` (loss scalars), ``samples/step_XXXXXX.png`` (a row per valid condition, every ``--sample-every``
steps). A run killed at any moment resumes from its last checkpoint with ``--resume`` and then follows exactly the
trajectory of an uninterrupted run (RNG states of every process are part of the checkpoint).
"""
from __future__ import annotations

import copy
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from spectgan.cohorts.format import load_split, read_cohort_info
from spectgan.cohorts.noise import estimate_noise_model
from spectgan.conditions import parse_levels, valid_conditions
from spectgan.errors import SpectganError
from spectgan.lesions import LesionDistribution
from spectgan.models.fastgan.asymmetry import asymmetry_shortfall, normal_asymmetry
from spectgan.models.fastgan.augment import COLOUR_PROBABILITY, diff_augment
from spectgan.models.fastgan.bundle import BUNDLE_VERSION, METADATA_FILE, WEIGHTS_FILE, export_bundle, load_bundle
from spectgan.models.fastgan.checkpoint import CHECKPOINT_FORMAT, checkpoint_path, load_checkpoint, save_checkpoint
from spectgan.models.fastgan.count_level import COUNT_LEVEL_MATCHES, count_level_shortfall, count_levels
from spectgan.models.fastgan.inference import sampling_copy, save_condition_grid
from spectgan.models.fastgan.locality import DefectFootprints, has_defect, locality_loss, normal_twin, profile_loss
from spectgan.models.fastgan.moments import StatisticTarget
from spectgan.models.fastgan.networks import (IMAGE_SIZES, QUADRANTS, Discriminator, Generator, amp_dtype, autocast,
                                   SeverityCalibration, condition_classification_loss, crop_quadrant, defect_loss,
                                   encode_conditions, minibatch_group, to_counts, to_network_range)

DEFECT_EMBEDDINGS = ("defect_embedding.", "defect_projection.")  # the condition embeddings of the defect axes
DEFECT_MODULES = DEFECT_EMBEDDINGS + ("defect_head.",)  # the modules a run with defect axes adds


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a run. Only the schedule fields and the cohort's location may change on resume."""

    cohort: str
    levels: tuple[str, ...] = ("CER", "BG", "COR")
    iterations: int = 20000
    batch_size: int = 16  # global: split evenly over DDP processes
    image_size: int | None = None  # None: the cohort's matrix (smaller sizes are area-averaged from it)
    latent_dim: int = 128
    condition_dim: int = 32
    generator_width: int = 16
    discriminator_width: int = 16
    reconstruction_size: int | None = None  # None: image_size / 2
    learning_rate: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.999
    diversity_weight: float = 1.0  # weight of the diversity hinge in the generator loss (0: adversarial loss only)
    classification_weight: float = 1.0  # weight of the auxiliary condition classifier in both losses (0: off)
    # its weight in the generator's loss alone (None: classification_weight); an auxiliary-classifier reward pushes
    # samples away from the class boundary, where the mild defects lie
    generator_classification_weight: float | None = None
    defect_axes: bool = False  # condition on each hemisphere's territory and severity as the cohort records them
    defect_weight: float = 1.0  # with defect_axes: weight of the discriminator's defect head in both losses
    # with defect_axes: its weight in the generator's loss alone (None: defect_weight; 0: the generator is not
    # rewarded by the head, as the bundles' realism.md tried for 4.3.0)
    generator_defect_weight: float | None = None
    defect_lr_factor: float = 10.0  # with defect_axes: the defect embeddings' learning rate over the others'
    # with defect_axes: reward the generator for the head's reading of REAL defects of the requested territory and
    # severity (``SeverityCalibration``) instead of for SEVERITY_SCALE x the severity
    calibrated_severity: bool = False
    # with defect_axes: weight of the locality loss (``spectgan.models.fastgan.locality``): a defect slice and its normal twin from the
    # same latent must agree outside the defect's footprint, so a condition changes its territory and nothing else
    defect_locality_weight: float = 0.0
    # with defect_axes: weight of the profile loss (``spectgan.models.fastgan.locality``): inside the footprint, a
    # defect slice must be its normal twin times the simulation's factor for its territory and severity
    defect_profile_weight: float = 0.0
    # weight of the asymmetry hinge (``spectgan.models.fastgan.asymmetry``): the spread of the generated normals'
    # hemisphere asymmetry may not fall short of the train split's normals', nor its mean lie off theirs (0: off)
    normal_asymmetry_weight: float = 0.0
    # weight of the count-level hinge (``spectgan.models.fastgan.count_level``): the spread of the generated images'
    # mean count in the brain may not fall short of the train split's per level and pattern, nor its mean lie off
    # theirs (0: off)
    count_level_weight: float = 0.0
    # what the count-level hinge matches: "moments" (mean and SD) or "energy" (the energy distance to the whole
    # distribution)
    count_level_match: str = "moments"
    # real and generated images through the discriminator as one batch (its batch norms then normalise both with the
    # same statistics, so a shift that every generated image shares stays visible to it), in both losses; False:
    # separate batches, as FastGAN does, where each batch's own statistics hide such a shift
    joint_discriminator_batch: bool = False
    # share of the discriminator's inputs whose brightness and contrast DiffAugment changes (0: none, so the
    # discriminator sees every image's true count level)
    colour_augment_probability: float = COLOUR_PROBABILITY
    output_filter_fwhm_mm: float | None = None  # the generator's fixed post-filter; None: the cohort's, 0: none
    output_floor: float = 0.001  # share of the range the generator's output stage sets to zero (0: none)
    # the generator's noise stage (ReconstructionNoise: gain, exponent, sigma_px) estimated from the train split when
    # a run starts with True; None: no noise stage (the generator draws the noisy image itself)
    output_noise: dict | bool | None = None
    # a run, or a model bundle (its generator; a fresh discriminator), whose weights start this one (fine-tuning);
    # None: random weights
    init_from: str | None = None
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 20

    def network(self, pixel_spacing_mm: float, territories: Sequence[str] = ()) -> dict:
        """Keyword arguments of the generator and the discriminator, for images of ``pixel_spacing_mm`` (and, with
        ``defect_axes``, the cohort's ``territories``)."""
        sigma = (self.output_filter_fwhm_mm or 0.0) / FWHM_PER_SIGMA / pixel_spacing_mm
        defects = {"territories": list(territories)} if self.defect_axes else {}
        return {"generator": {"image_size": self.image_size, "latent_dim": self.latent_dim,
                              "width": self.generator_width, "condition_dim": self.condition_dim,
                              "output_filter_sigma": round(sigma, 4), "output_floor": self.output_floor,
                              **({"output_noise": self.output_noise} if isinstance(self.output_noise, dict) else {}),
                              **defects},
                "discriminator": {"image_size": self.image_size, "width": self.discriminator_width,
                                  "reconstruction_size": self.reconstruction_size, **defects}}


FWHM_PER_SIGMA = 2.3548
# Runs saved before the generator had an output stage: their networks end in a bare tanh.
LEGACY_SETTINGS = {"output_filter_fwhm_mm": 0.0, "output_floor": 0.0}

SCHEDULE_FIELDS = frozenset({"iterations", "checkpoint_every", "sample_every", "log_every"})
# May differ when resuming: the schedule, and where the cohort lies (a run resumed in another checkout); the data
# itself is checked against the checkpoint.
CHANGEABLE_ON_RESUME = SCHEDULE_FIELDS | {"cohort"}


@dataclass
class TrainingData:
    """The train split in memory: images [N, 1, S, S] in the network range, conditions [N, 3] and the index of each
    image's condition [N] (for batches grouped by condition)."""

    images: torch.Tensor
    conditions: torch.Tensor
    condition_ids: torch.Tensor
    summary: dict  # count_scale, pixel_spacing_mm, image_size, slices_per_condition, cohort (its cohort.json),
    # pair_spread (mean L1 between two train images of one condition, network range), territories (sorted, those
    # the train split's lesions name) and lesions (``LesionDistribution.to_dict``)

    @property
    def territories(self) -> tuple[str, ...]:
        return tuple(self.summary["territories"])

    @property
    def lesions(self) -> LesionDistribution:
        return LesionDistribution.from_dict(self.summary["lesions"])


def load_training_data(cohort: str, levels: tuple[str, ...], image_size: int | None, defect_axes: bool = False
                       ) -> TrainingData:
    """Read the train split at ``levels``, area-average to ``image_size`` and divide by the cohort's count scale;
    with ``defect_axes`` the conditions carry each slice's lesions (``encode_conditions``)."""
    info = read_cohort_info(cohort)
    missing = [key for key in ("count_scale", "pixel_spacing_mm", "matrix") if key not in info]
    if missing:
        raise SpectganError(f"{cohort}/cohort.json lacks {', '.join(missing)}")
    parsed_levels = parse_levels(levels)
    matrix = int(info["matrix"])
    image_size = image_size or matrix
    if image_size not in IMAGE_SIZES or image_size > matrix or matrix % image_size:
        raise SpectganError(f"image size {image_size} is not possible from a {matrix} x {matrix} cohort; "
                            f"allowed: {', '.join(str(s) for s in IMAGE_SIZES if s <= matrix and matrix % s == 0)}")
    counts, records = load_split(Path(cohort), "train", parsed_levels, image_size)
    images = torch.from_numpy(counts)[:, None]
    slices = {condition.label: 0 for condition in valid_conditions(parsed_levels)}
    for record in records:
        slices[record.condition.label] += 1
    summary = {"count_scale": float(info["count_scale"]), "image_size": image_size,
               "pixel_spacing_mm": float(info["pixel_spacing_mm"]) * matrix / image_size,
               "slices_per_condition": slices, "cohort": info}
    images = to_network_range(images, summary["count_scale"])
    labelled = [record.labelled_condition for record in records]
    lesions = LesionDistribution.from_conditions(labelled)
    summary["territories"] = sorted({lesion.territory for condition in labelled for lesion in condition.lesions
                                     if lesion.territory is not None})
    summary["lesions"] = lesions.to_dict()
    conditions = encode_conditions(labelled, summary["territories"] if defect_axes else ())
    condition_ids = torch.unique(encode_conditions([record.condition for record in records]), dim=0,
                                 return_inverse=True)[1]
    summary["pair_spread"] = pair_spread(images, condition_ids)
    return TrainingData(images, conditions, condition_ids, summary)


def pair_spread(images: torch.Tensor, condition_ids: torch.Tensor, pairs: int = 256) -> float:
    """Mean L1 distance between two images [N, 1, S, S] of one condition (``pairs`` seeded random pairs of every
    condition with two or more images): how different two real slices of a condition are."""
    generator = torch.Generator().manual_seed(0)
    distances = []
    for condition in condition_ids.unique():
        members = torch.nonzero(condition_ids == condition).flatten()
        if len(members) > 1:
            first, second = (members[torch.randint(len(members), (pairs,), generator=generator)] for _ in range(2))
            keep = first != second
            distances.append((images[first[keep]] - images[second[keep]]).abs().mean(dim=(1, 2, 3)))
    return float(torch.cat(distances).mean()) if distances else 0.0


def draw_batch(condition_ids: torch.Tensor, size: int) -> torch.Tensor:
    """Indices [size] of a training batch: consecutive groups of ``minibatch_group(size)`` images share a condition
    (that of a uniformly drawn image, so conditions keep the cohort's frequencies)."""
    group = minibatch_group(size)
    picks = []
    for anchor in torch.randint(len(condition_ids), (size // group,)).tolist():
        members = torch.nonzero(condition_ids == condition_ids[anchor]).flatten()
        picks.append(members[torch.randint(len(members), (group,))])
    return torch.cat(picks)


@dataclass(frozen=True)
class Processes:
    """This process's place in a (possibly one-process) training job."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls) -> "Processes":
        """Join torchrun's process group when there is one (NCCL on CUDA, gloo on the CPU)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        return cls(dist.get_rank() if world_size > 1 else 0, world_size, device)

    def stop(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def gather(self, value) -> list:
        """``value`` from every process, in rank order."""
        if self.world_size == 1:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def hardware(self) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        else:
            name = f"{_cpu_model()}, {torch.get_num_threads()} threads per process"
        return f"{self.world_size} x {self.device.type}: {name}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


class Trainer:
    """Networks, optimisers and EMA generator of one process; ``step`` is one FastGAN iteration."""

    def __init__(self, settings: TrainSettings, processes: Processes, network: dict):
        self.settings, self.device = settings, processes.device
        torch.manual_seed(settings.seed)  # identical initial weights in every process
        self.generator = Generator(**network["generator"]).to(self.device)
        self.discriminator = Discriminator(**network["discriminator"]).to(self.device)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.optimizer_generator = self._adam(self.generator)
        self.optimizer_discriminator = self._adam(self.discriminator)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype(self.device) == torch.float16)
        territories = network["discriminator"].get("territories") or ()
        self.severity_calibration = (SeverityCalibration(len(territories) + 2).to(self.device)
                                     if settings.calibrated_severity and territories else None)
        self.footprints = (DefectFootprints(tuple(territories), network["generator"]["image_size"])
                           if (settings.defect_locality_weight > 0 or settings.defect_profile_weight > 0)
                           and territories else None)
        if processes.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator_step = DistributedDataParallel(self.generator, device_ids=device_ids)
            self.discriminator_step = DistributedDataParallel(self.discriminator, device_ids=device_ids)
        else:
            self.generator_step, self.discriminator_step = self.generator, self.discriminator

    STATE = ("generator", "discriminator", "ema", "optimizer_generator", "optimizer_discriminator", "grad_scaler")

    def _adam(self, network: torch.nn.Module) -> torch.optim.Adam:
        """Adam over a network's parameters; the defect embeddings (``DEFECT_EMBEDDINGS``) learn ``defect_lr_factor``
        times faster: Adam moves a parameter by about the learning rate per step whatever its gradient, and a
        zero-started embedding that must catch up with condition embeddings trained for thousands of steps would
        otherwise stay too small to change the image (measured: norms 0.5 against 5 after 1250 steps)."""
        named = list(network.named_parameters())
        fast = [parameter for name, parameter in named if name.startswith(DEFECT_EMBEDDINGS)]
        rest = [parameter for name, parameter in named if not name.startswith(DEFECT_EMBEDDINGS)]
        rate = self.settings.learning_rate
        groups = [{"params": rest}] + ([{"params": fast, "lr": rate * self.settings.defect_lr_factor}] if fast else [])
        return torch.optim.Adam(groups, lr=rate, betas=tuple(self.settings.betas))

    def state_dict(self) -> dict:
        state = {name: getattr(self, name).state_dict() for name in self.STATE}
        if self.severity_calibration is not None:
            state["severity_calibration"] = self.severity_calibration.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).load_state_dict(state[name])
        if self.severity_calibration is not None and "severity_calibration" in state:
            self.severity_calibration.load_state_dict(state["severity_calibration"])

    def load_weights(self, state: dict) -> None:
        """Start from another run's network weights (those of ``generator``, ``discriminator`` and ``ema`` that
        ``state`` holds; a bundle holds no discriminator), with fresh optimisers. A run without defect axes may start
        one with them: the defect embeddings keep their zero start, so the first step makes what the other run made;
        defect modules of another shape start anew too, and those this run lacks (a cohort without territories) are
        left out."""
        for name in ("generator", "discriminator", "ema"):
            if name not in state:
                continue
            network = getattr(self, name)
            shapes = {key: value.shape for key, value in network.state_dict().items()}
            weights = {key: value for key, value in state[name].items()  # defect modules of another shape start anew
                       if not (key.startswith(DEFECT_MODULES) and shapes.get(key, value.shape[:0]) != value.shape)}
            try:
                result = network.load_state_dict(weights, strict=False)
            except RuntimeError:  # tensors of other shapes
                raise SpectganError(f"--init-from: the {name} of that run does not fit this one (other widths, "
                                    "sizes or condition dimensions)") from None
            missing = [key for key in result.missing_keys if not key.startswith(DEFECT_MODULES)]
            if missing or result.unexpected_keys:
                raise SpectganError(f"--init-from: the {name} of that run does not fit this one (missing "
                                    f"{', '.join(missing) or 'nothing'}; unexpected "
                                    f"{', '.join(result.unexpected_keys) or 'nothing'})")

    def step(self, real: torch.Tensor, condition: torch.Tensor, step: int, pair_spread: float = 0.0,
             asymmetry: StatisticTarget | None = None, levels: StatisticTarget | None = None
             ) -> dict[str, torch.Tensor]:
        """Iteration ``step`` (from 1) on real images [B, 1, S, S] (network range) of ``condition`` [B, 3], grouped
        by condition (``draw_batch``); returns the losses. Real and generated images go through the discriminator
        as separate batches (its batch norm and minibatch standard deviation then describe one kind of image
        each), or with ``joint_discriminator_batch`` as one batch whose minibatch groups (those of each half) still
        hold one kind each. ``pair_spread`` is the real images' (``gan.train.pair_spread``), the target of the
        diversity hinge; ``asymmetry`` the train split's normal asymmetry, the target of the asymmetry hinge;
        ``levels`` the train split's count levels, the target of the count-level hinge (None: off)."""
        latent = torch.randn(real.shape[0], self.settings.latent_dim, device=self.device)
        quadrant = int(torch.randint(QUADRANTS, ()))
        fake, twin, defects = self._generate(latent, condition)
        # Discriminator: hinge loss on real and generated images plus reconstruction of the real ones.
        self.discriminator.requires_grad_(True)
        with autocast(self.device):
            real = diff_augment(real, self.settings.colour_augment_probability)
            augmented_fake = diff_augment(fake.detach(), self.settings.colour_augment_probability)
            if self.settings.joint_discriminator_batch:
                logits, classes, (whole, part) = self.discriminator_step(
                    torch.cat([real, augmented_fake]), torch.cat([condition, condition]), quadrant,
                    minibatch_group(real.shape[0]))
                count = real.shape[0]
                real_logits, fake_logits, real_classes = logits[:count], logits[count:], classes[:count]
                reconstructions = (whole[:count], part[:count])
            else:
                real_logits, real_classes, reconstructions = self.discriminator_step(real, condition, quadrant)
                fake_logits, _ = self.discriminator_step(augmented_fake, condition)
        losses = {"d_real": F.relu(1.0 - real_logits.float()).mean(),
                  "d_fake": F.relu(1.0 + fake_logits.float()).mean(),
                  "reconstruction": reconstruction_loss(reconstructions, real, quadrant),
                  "d_classes": condition_classification_loss(real_classes, condition)}
        weight, axes = self.settings.classification_weight, self.discriminator.defect_head is not None
        if axes:
            losses["d_defects"] = defect_loss(real_classes, condition)
            if self.severity_calibration is not None:
                self.severity_calibration.update(real_classes.detach(), condition)
        self.optimizer_discriminator.zero_grad(set_to_none=True)
        self.grad_scaler.scale(losses["d_real"] + losses["d_fake"] + losses["reconstruction"]
                               + weight * losses["d_classes"]
                               + (self.settings.defect_weight * losses["d_defects"] if axes else 0.0)).backward()
        self.grad_scaler.step(self.optimizer_discriminator)
        # Generator: through the bare discriminator, whose gradients this step does not need.
        self.discriminator.requires_grad_(False)
        with autocast(self.device):
            augmented_fake = diff_augment(fake, self.settings.colour_augment_probability)
            if self.settings.joint_discriminator_batch:  # the same real images, batch statistics as in its step
                logits, classes = self.discriminator(torch.cat([real, augmented_fake]),
                                                     torch.cat([condition, condition]),
                                                     group=minibatch_group(real.shape[0]))
                fake_logits, fake_classes = logits[real.shape[0]:], classes[real.shape[0]:]
            else:
                fake_logits, fake_classes = self.discriminator(augmented_fake, condition)
        losses["g"] = -fake_logits.float().mean()
        losses["g_classes"] = condition_classification_loss(fake_classes, condition)
        if axes:
            losses["g_defects"] = defect_loss(fake_classes, condition, self.severity_calibration)
        losses["diversity"] = diversity_shortfall(fake, pair_spread)
        if asymmetry is not None:
            losses["asymmetry"] = asymmetry_shortfall(fake, condition, asymmetry)
        if levels is not None:
            losses["count_level"] = count_level_shortfall(fake, condition, levels, self.settings.count_level_match)
        if self.footprints is not None:  # logged at every step, 0 for a batch without defects
            losses.update(self._twin_losses(fake[defects], twin, condition[defects]))
        generator_weight = weight if self.settings.generator_classification_weight is None \
            else self.settings.generator_classification_weight
        generator_defect_weight = self.settings.defect_weight if self.settings.generator_defect_weight is None \
            else self.settings.generator_defect_weight
        self.optimizer_generator.zero_grad(set_to_none=True)
        self.grad_scaler.scale(losses["g"] + generator_weight * losses["g_classes"]
                               + (generator_defect_weight * losses["g_defects"] if axes else 0.0)
                               + self.settings.diversity_weight * losses["diversity"]
                               + self.settings.defect_locality_weight * losses.get("locality", 0.0)
                               + self.settings.defect_profile_weight * losses.get("profile", 0.0)
                               + self.settings.normal_asymmetry_weight * losses.get("asymmetry", 0.0)
                               + self.settings.count_level_weight * losses.get("count_level", 0.0)).backward()
        self.grad_scaler.step(self.optimizer_generator)
        self.grad_scaler.update()
        self.update_ema(step)
        return {name: loss.detach() for name, loss in losses.items()}

    def _twin_losses(self, fake: torch.Tensor, twin: torch.Tensor | None, condition: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """The locality loss and, when weighted, the profile loss of the defect slices [D, 1, S, S] of ``condition``
        [D, 7] and their normal twins (None: a batch without defects, where both are 0)."""
        names = ["locality"] + (["profile"] if self.settings.defect_profile_weight > 0 else [])
        if twin is None:
            return {name: fake.new_zeros((), dtype=torch.float32) for name in names}
        allowed = self.footprints.allowed(condition)
        losses = {"locality": locality_loss(fake, twin, allowed)}
        if "profile" in names:
            factor, known = self.footprints.expected_factor(condition)
            losses["profile"] = profile_loss(fake, twin, factor, allowed, known)
        return losses

    def _generate(self, latent: torch.Tensor, condition: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Generated images [B, 1, S, S] of ``condition``; with the locality loss on, also the normal twins
        [D, 1, S, S] of the D defect conditions (``defects``, bool [B]) from the same latents and noise maps, in the
        same forward pass (one set of batch statistics)."""
        defects = has_defect(condition)
        if self.footprints is None or not defects.any():
            with autocast(self.device):
                return self.generator_step(latent, condition), None, defects
        batch = latent.shape[0]
        noise = [torch.randn(shape, device=self.device) for shape in self.generator.noise_shapes(batch)]
        with autocast(self.device):
            images = self.generator_step(torch.cat([latent, latent[defects]]),
                                         torch.cat([condition, normal_twin(condition[defects])]),
                                         [torch.cat([maps, maps[defects]]) for maps in noise])
        return images[:batch], images[batch:], defects

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """EMA of the generator's weights, with a warm-up so that early averages are not dominated by the random
        initial weights (decay min(ema_decay, (1 + step) / (10 + step))); buffers (batch and spectral norm) are
        copied."""
        decay = min(self.settings.ema_decay, (1 + step) / (10 + step))
        for average, current in zip(self.ema.parameters(), self.generator.parameters()):
            average.lerp_(current, 1.0 - decay)
        for average, current in zip(self.ema.buffers(), self.generator.buffers()):
            average.copy_(current)


def diversity_shortfall(fake: torch.Tensor, pair_spread: float) -> torch.Tensor:
    """How far generated pairs of one condition fall short of the real pair spread, as a fraction of it:
    relu(1 - mean L1(fake[2i], fake[2i+1]) / pair_spread); images [B, 1, S, S] grouped by condition in groups of
    an even size (zero otherwise, and when ``pair_spread`` is 0)."""
    if pair_spread <= 0 or minibatch_group(fake.shape[0]) % 2:
        return fake.new_zeros((), dtype=torch.float32)
    spread = (fake[0::2].float() - fake[1::2].float()).abs().mean()
    return F.relu(1.0 - spread / pair_spread)


def reconstruction_loss(reconstructions: tuple[torch.Tensor, torch.Tensor], real: torch.Tensor,
                        quadrant: int) -> torch.Tensor:
    """L1 between the discriminator's decodings and the (augmented) real images / quadrant, area-resized."""
    whole, part = (image.float() for image in reconstructions)
    size = whole.shape[-1]
    real = real.float()
    return (F.l1_loss(whole, F.interpolate(real, size=size, mode="area"))
            + F.l1_loss(part, F.interpolate(crop_quadrant(real, quadrant), size=size, mode="area")))


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_streams(seed: int, step: int, processes: Processes) -> None:
    """Each process's own random stream (batches, latents, augmentation) from the run seed, the step and the rank."""
    torch.manual_seed((seed * 1_000_003 + step) * 1_009 + processes.rank + 1)


def resolve_settings(checkpoint: dict | None, options: dict) -> TrainSettings:
    """New run: settings from ``options``. Resumed run: the checkpoint's, with only the changeable fields replaced."""
    options = {name: value for name, value in options.items() if value is not None}
    if "levels" in options:
        options["levels"] = tuple(level.value for level in parse_levels(options["levels"]))
    if "cohort" in options:
        options["cohort"] = str(Path(options["cohort"]).resolve())
    if checkpoint is None:
        if "cohort" not in options:
            raise SpectganError("--cohort is required to start a run")
        return TrainSettings(**options)
    stored = TrainSettings(**{**LEGACY_SETTINGS, **checkpoint["settings"]})
    conflicts = [f"{name} {value!r} (the run has {getattr(stored, name)!r})" for name, value in options.items()
                 if name not in CHANGEABLE_ON_RESUME and value != getattr(stored, name)]
    if conflicts:
        raise SpectganError("a resumed run keeps the settings it started with; these differ: " + "; ".join(conflicts))
    return replace(stored, **{name: value for name, value in options.items() if name in CHANGEABLE_ON_RESUME})


def _output_filter(settings: TrainSettings, cohort_info: dict) -> float:
    """The generator's post-filter FWHM in mm: the setting, else the cohort's reconstruction post-filter (a simulated
    cohort records it; an imported one does not, and then there is none)."""
    if settings.output_filter_fwhm_mm is not None:
        return float(settings.output_filter_fwhm_mm)
    return float(cohort_info.get("acquisition", {}).get("post_filter_fwhm_mm", 0.0))


def _output_noise(settings: TrainSettings, data: TrainingData) -> dict | None:
    """The noise stage's parameters: the run's, or (``True``) estimated from the train split's images."""
    if settings.output_noise is not True:
        return settings.output_noise or None
    counts = to_counts(data.images[:, 0], data.summary["count_scale"]).numpy()
    return estimate_noise_model(counts, unit=data.summary["count_scale"]).network_arguments()


def initial_weights(source: Path) -> dict:
    """The weights ``init_from`` names: a run's checkpoint, or a model bundle's generator (as ``generator`` and
    ``ema``; the discriminator then starts afresh)."""
    if (source / METADATA_FILE).is_file():
        load_bundle(source)  # checks the weights against the bundle's sha256
        weights = torch.load(source / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        return {"generator": weights, "ema": weights}
    return load_checkpoint(source)


def _check_settings(settings: TrainSettings, world_size: int) -> None:
    if settings.batch_size < 2 * world_size or settings.batch_size % world_size:
        raise SpectganError(f"--batch {settings.batch_size} must be a multiple of the {world_size} process(es) "
                            "with at least 2 images per process (batch norm)")
    if settings.count_level_match not in COUNT_LEVEL_MATCHES:
        raise SpectganError(f"--count-level-match must be one of {', '.join(COUNT_LEVEL_MATCHES)}, got "
                            f"{settings.count_level_match!r}")
    for name in ("defect_locality_weight", "defect_profile_weight"):
        if getattr(settings, name) and not settings.defect_axes:
            raise SpectganError(f"{_flag(name)} needs --defect-axes (the footprint comes from each hemisphere's "
                                "territory)")
    for name in SCHEDULE_FIELDS:
        if getattr(settings, name) < 1:
            raise SpectganError(f"{_flag(name)} must be positive, got {getattr(settings, name)}")


def train(out: str | Path, resume: bool = False, progress: bool = True, export_bundle_dir: str | Path | None = None,
          bundle_name: str | None = None, bundle_version: str = BUNDLE_VERSION, command: str | None = None,
          **options) -> Path:
    """Train (or resume) the run in ``out``; ``options`` are ``TrainSettings`` fields. Returns the checkpoint path.

    Under torchrun every process calls this; process 0 writes. With ``export_bundle_dir`` the finished run is
    exported as a MONAI bundle (``gan.bundle.export_bundle``).
    """
    run_dir = Path(out)
    processes = Processes.start()
    try:
        checkpoint = None
        if checkpoint_path(run_dir).exists():
            if not resume:
                raise SpectganError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                                    "--out")
            checkpoint = load_checkpoint(run_dir)
        settings = resolve_settings(checkpoint, options)
        data = load_training_data(settings.cohort, settings.levels, settings.image_size, settings.defect_axes)
        image_size = data.summary["image_size"]
        settings = replace(settings, image_size=image_size,
                           reconstruction_size=settings.reconstruction_size or image_size // 2,
                           output_filter_fwhm_mm=_output_filter(settings, data.summary["cohort"]),
                           output_noise=_output_noise(settings, data))
        _check_settings(settings, processes.world_size)
        if checkpoint is not None and any(checkpoint["data"][key] != data.summary[key]
                                          for key in ("slices_per_condition", "count_scale")):
            raise SpectganError(f"the cohort {settings.cohort} is not the one the run started with (slices per "
                                "condition or count scale differ); a resumed run must see the same data")
        command = command or f"spectgan.models.fastgan.train.train({str(run_dir)!r}, resume={resume}, **{options!r})"
        _run(run_dir, settings, data, checkpoint, processes, progress, command)
        if export_bundle_dir is not None and processes.main:
            export_bundle(run_dir, export_bundle_dir, name=bundle_name, version=bundle_version)
        return checkpoint_path(run_dir)
    finally:
        processes.stop()


def _run(run_dir: Path, settings: TrainSettings, data: TrainingData, checkpoint: dict | None, processes: Processes,
         progress: bool, command: str) -> None:
    device, main = processes.device, processes.main
    network = settings.network(data.summary["pixel_spacing_mm"], data.territories)
    trainer = Trainer(settings, processes, network)
    step, history, elapsed, commands = 0, [], 0.0, []
    if checkpoint is None and settings.init_from is not None:
        trainer.load_weights(initial_weights(Path(settings.init_from)))
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        step, history, elapsed, commands = (checkpoint["step"], checkpoint["history"], checkpoint["elapsed_s"],
                                            checkpoint["commands"])
        if len(checkpoint["rng"]) == processes.world_size:
            _set_rng_state(checkpoint["rng"][processes.rank], device)
        else:
            _seed_streams(settings.seed, step, processes)
            if main:
                print(f"note: the run was saved by {len(checkpoint['rng'])} process(es), resumed by "
                      f"{processes.world_size}: new random streams from step {step}", file=sys.stderr)
    else:
        _seed_streams(settings.seed, 0, processes)
    commands = commands + [command]
    empty = [label for label, count in data.summary["slices_per_condition"].items() if count == 0]
    if empty and main:
        print(f"warning: no training slices for {', '.join(empty)}", file=sys.stderr)

    images, conditions = data.images.to(device), data.conditions.to(device)
    asymmetry = (normal_asymmetry(data.images, data.conditions).to(device) if settings.normal_asymmetry_weight > 0
                 else None)
    levels = count_levels(data.images, data.conditions).to(device) if settings.count_level_weight > 0 else None
    per_process = settings.batch_size // processes.world_size
    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)
    bar = tqdm(total=settings.iterations, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and main))
    session_start, interval_start, sums, count = time.perf_counter(), time.perf_counter(), {}, 0

    def save(at_step: int) -> None:
        rng = processes.gather(_rng_state(device))
        if main:
            save_checkpoint(run_dir, {
                "format": CHECKPOINT_FORMAT, "step": at_step, "settings": asdict(settings),
                "network": network, **trainer.state_dict(), "rng": rng, "history": history,
                "elapsed_s": elapsed + time.perf_counter() - session_start, "commands": commands,
                "data": data.summary, "hardware": processes.hardware()})

    while step < settings.iterations:
        step += 1
        picks = draw_batch(data.condition_ids, per_process).to(device)
        losses = trainer.step(images[picks], conditions[picks], step, data.summary["pair_spread"], asymmetry, levels)
        sums = {**sums, **{name: sums.get(name, 0.0) + loss for name, loss in losses.items()}}
        count += 1
        bar.update(1)
        last = step == settings.iterations
        if step % settings.log_every == 0 or last:
            means = {name: float(total) / count for name, total in sums.items()}
            seconds_per_step = (time.perf_counter() - interval_start) / count
            history.append({"step": step, **means})
            bar.set_postfix({name: f"{value:.3f}" for name, value in means.items()})
            if writer is not None:
                for name, value in means.items():
                    writer.add_scalar(f"loss/{name}", value, step)
                writer.add_scalar("time/seconds_per_step", seconds_per_step, step)
            sums, count, interval_start = {}, 0, time.perf_counter()
        if main and (step % settings.sample_every == 0 or last):
            save_condition_grid(sampling_copy(trainer.ema, data.summary["slices_per_condition"], data.lesions),
                                valid_conditions(parse_levels(settings.levels)), data.summary["count_scale"],
                                run_dir / "samples" / f"step_{step:06d}.png", data.lesions, title=f"step {step} (EMA)")
        if step % settings.checkpoint_every == 0 or last:
            save(step)
    bar.close()
    if writer is not None:
        writer.close()


def add_train_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the conditional FastGAN on a cohort (resumable; torchrun --nproc_per_node N for DDP)")
    parser.add_argument("--cohort", help="cohort folder (spectgan cohort / spectgan import); not needed with --resume")
    parser.add_argument("--levels", help="comma-separated levels, e.g. CER,BG,COR (default: all)")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, tensorboard, sample grids)")
    parser.add_argument("--iters", type=int, dest="iterations", help="total training steps (default 20000)")
    parser.add_argument("--batch", type=int, dest="batch_size", help="global batch size (default 16)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--image-size", type=int, choices=IMAGE_SIZES, help="train at this size (default: cohort)")
    parser.add_argument("--generator-width", type=int, help="generator width (default 16)")
    parser.add_argument("--discriminator-width", type=int, help="discriminator width (default 16)")
    parser.add_argument("--diversity-weight", type=float,
                        help="weight of the diversity hinge: generated pairs of a condition pushed to differ as much "
                             "as real pairs (default 1.0; 0 turns it off)")
    parser.add_argument("--classification-weight", type=float,
                        help="weight of the discriminator's auxiliary level/pattern/side classifier (default 1.0; "
                             "0 turns it off)")
    parser.add_argument("--generator-classification-weight", type=float,
                        help="weight of that classifier in the generator's loss alone (default: "
                             "--classification-weight; 0: the generator is not rewarded by it)")
    parser.add_argument("--defect-axes", action="store_const", const=True,
                        help="condition on each hemisphere's territory and severity as the cohort records them "
                             "(requests may then name them; default: off)")
    parser.add_argument("--defect-weight", type=float,
                        help="with --defect-axes: weight of the discriminator's territory and severity head in both "
                             "losses (default 1.0)")
    parser.add_argument("--generator-defect-weight", type=float,
                        help="with --defect-axes: weight of that head in the generator's loss alone (default: "
                             "--defect-weight; 0: the generator is not rewarded by it)")
    parser.add_argument("--defect-lr-factor", type=float,
                        help="with --defect-axes: the defect embeddings' learning rate as a multiple of the others' "
                             "(default 10)")
    parser.add_argument("--calibrated-severity", action="store_const", const=True,
                        help="with --defect-axes: reward the generator for the defect head's reading of real defects "
                             "of the requested territory and severity, not for the severity itself (the head reads "
                             "mild defects as milder than they are; default: off)")
    parser.add_argument("--defect-locality-weight", type=float,
                        help="with --defect-axes: weight of the locality loss, the difference between a defect slice "
                             "and its normal twin from the same latent outside the defect territory's footprint (a "
                             "condition may change its territory and nothing else; default 0: off)")
    parser.add_argument("--defect-profile-weight", type=float,
                        help="with --defect-axes: weight of the profile loss, the difference inside the footprint "
                             "between a defect slice and its normal twin times the simulation's factor for the "
                             "defect's territory and severity (default 0: off)")
    parser.add_argument("--normal-asymmetry-weight", type=float,
                        help="weight of the asymmetry hinge: how far the spread of the generated normals' hemisphere "
                             "asymmetry falls short of the train split's normals', and its mean lies off theirs, per "
                             "level (default 0: off)")
    parser.add_argument("--count-level-weight", type=float,
                        help="weight of the count-level hinge: how far the spread of the generated images' mean count "
                             "in the brain falls short of the train split's, and its mean lies off theirs, per level "
                             "and pattern (default 0: off)")
    parser.add_argument("--count-level-match", choices=COUNT_LEVEL_MATCHES,
                        help="what the count-level hinge matches: moments (mean and SD; the default) or energy "
                             "(the energy distance to the whole distribution, tails included)")
    parser.add_argument("--joint-discriminator-batch", action="store_const", const=True,
                        help="pass real and generated images through the discriminator as one batch, so that its "
                             "batch norms do not hide a shift every generated image shares (default: off, separate "
                             "batches as FastGAN)")
    parser.add_argument("--colour-augment-probability", type=float,
                        help="share of the discriminator's inputs whose brightness and contrast DiffAugment changes "
                             f"(default {COLOUR_PROBABILITY}; 0: the discriminator sees every true count level)")
    parser.add_argument("--output-filter-fwhm-mm", type=float,
                        help="the generator's fixed post-filter, FWHM in mm (default: the cohort's reconstruction "
                             "post-filter; 0: none)")
    parser.add_argument("--output-floor", type=float,
                        help="share of the intensity range the generator's output stage sets to zero, as OSEM leaves "
                             "the background (default 0.001; 0: none)")
    parser.add_argument("--output-noise", action="store_const", const=True,
                        help="end the generator in a noise stage estimated from the train split (count-dependent SD, "
                             "Gaussian-correlated), so that it draws the expected image (default: off)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start from the network weights of another run, or the generator of a model bundle "
                             "(fine-tuning; fresh optimisers)")
    parser.add_argument("--seed", type=int, help="run seed (default 0)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    parser.add_argument("--sample-every", type=int, help="steps between sample grids (default 1000)")
    parser.add_argument("--log-every", type=int, help="steps between logged losses (default 20)")
    parser.add_argument("--export-bundle", dest="export_bundle_dir", metavar="DIR",
                        help="export the finished run as a MONAI bundle folder")
    parser.add_argument("--bundle-name", help="bundle name (default: the bundle folder's name)")
    parser.add_argument("--bundle-version", default=BUNDLE_VERSION,
                        help=f"version written into the exported bundle (default {BUNDLE_VERSION})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_train)


FLAGS = {"iterations": "--iters", "batch_size": "--batch"}  # settings whose flag is not the field name


def _flag(name: str) -> str:
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _run_train(args) -> int:
    options = {field.name: getattr(args, field.name) for field in fields(TrainSettings) if hasattr(args, field.name)}
    words = ["spectgan", "train", "--out", args.out] + [word for name, value in options.items() if value is not None
                                                        for word in ((_flag(name),) if value is True
                                                                     else (_flag(name), str(value)))]
    words += (["--resume"] if args.resume else []) + (["--export-bundle", args.export_bundle_dir]
                                                      if args.export_bundle_dir else [])
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --nproc_per_node {world_size} -m spectgan.cli " if world_size > 1 else ""
    train(args.out, resume=args.resume, progress=not args.no_progress, export_bundle_dir=args.export_bundle_dir,
          bundle_name=args.bundle_name, bundle_version=args.bundle_version, command=launcher + shlex.join(words if not launcher else words[1:]), **options)
    return 0
