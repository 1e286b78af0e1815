"""The conditional FastGAN as a ``spectgan.models.synthesizer`` family: its bundles loaded as Synthesizers, its
retraining, and its one option (``psi``, truncation of the latent toward its mean)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spectgan.conditions import Condition, ConditionAxes, Level, Pattern, Side, parse_levels, valid_conditions
from spectgan.counterfactual.paired import Method
from spectgan.lesions import DefectAxes, resolve_conditions
from spectgan.models.fastgan.bundle import FAMILY as FAMILY_NAME
from spectgan.models.fastgan.bundle import Bundle, export_bundle, load_bundle
from spectgan.models.fastgan.inference import generate
from spectgan.models.fastgan.networks import to_counts
from spectgan.models.fastgan.recipe import bundle_recipe, retraining_settings
from spectgan.models.fastgan.train import TrainSettings, train
from spectgan.models.synthesizer import INIT_SERVED, Option, TrainPlan, bundle_metadata, is_bundle

PSI = Option("psi", 0.0, 1.0, 1.0, "truncation of the latent toward its mean; 1: none")


@dataclass(frozen=True)
class FastGANSynthesizer:
    """A loaded FastGAN bundle (``spectgan.models.fastgan.bundle.Bundle``) behind the Synthesizer contract."""

    bundle: Bundle

    @property
    def name(self) -> str:
        return self.bundle.metadata["name"]

    @property
    def levels(self) -> tuple[Level, ...]:
        return parse_levels(self.bundle.metadata["levels"])

    def conditions(self) -> list[Condition]:
        """The bundle's valid conditions (recorded at export; a bundle without them: those of its levels)."""
        recorded = self.bundle.metadata.get("valid_conditions")
        if not recorded:
            return valid_conditions(self.levels)
        return [Condition(Level(item["level"]), Pattern(item["pattern"]),
                          Side(item["side"]) if item.get("side") else None) for item in recorded]

    def condition_axes(self) -> ConditionAxes:
        axes = self.bundle.defect_axes
        return ConditionAxes.declare(self.conditions(), axes.condition_axes() if axes else ())

    def options(self) -> tuple[Option, ...]:
        return (PSI,)

    def defect_axes(self) -> DefectAxes | None:
        return self.bundle.defect_axes

    def resolve(self, conditions: Sequence[Condition], seed: int) -> list[Condition]:
        """Lesions left out drawn from the bundle's training cohort (a model without defect axes: unchanged)."""
        if self.bundle.defect_axes is None:
            return list(conditions)
        return resolve_conditions(conditions, self.bundle.lesions, seed)

    def describe(self) -> dict:
        metadata = self.bundle.metadata
        return {"name": metadata["name"], "family": FAMILY_NAME, "version": metadata["version"],
                "sha256": metadata["weights_sha256"], "description": metadata["description"],
                "image_size": metadata["image_size"], "pixel_spacing_mm": metadata["pixel_spacing_mm"],
                "count_scale": metadata["count_scale"], "levels": metadata["levels"],
                "trained_iterations": metadata["training"]["iterations"], "exported": metadata["exported"]}

    def learned_counterfactual(self, seed: int) -> Method:
        """The learned method (``spectgan.counterfactual.learned``) with this bundle, for a seed."""
        from spectgan.counterfactual.learned import LearnedCounterfactual  # it imports this package's modules

        return LearnedCounterfactual(self.bundle, seed).method()

    def sample(self, conditions: Sequence[Condition], seed: int, options: Mapping[str, float]) -> np.ndarray:
        """Float32 counts [n, H, W]: the EMA generator's output mapped through the bundle's one count scale; lesions
        left out are drawn as ``resolve`` draws them."""
        images = generate(self.bundle.generator, self.resolve(conditions, seed), seed,
                          options.get(PSI.name, PSI.default))
        return to_counts(images[:, 0], self.bundle.metadata["count_scale"]).numpy()


class FastGANFamily:
    """Loads ``conditional_fastgan`` bundles and retrains them with ``spectgan.models.fastgan.train``."""

    name = FAMILY_NAME
    default_iterations = TrainSettings.iterations
    default_batch_size = TrainSettings.batch_size

    def __init__(self):
        self._loaded: dict[str, FastGANSynthesizer] = {}  # by bundle folder: the same object while unchanged

    def load(self, bundle_dir: Path) -> FastGANSynthesizer:
        bundle = load_bundle(bundle_dir)  # cached per path and file modification times
        key = str(Path(bundle_dir).resolve())
        synthesizer = self._loaded.get(key)
        if synthesizer is None or synthesizer.bundle is not bundle:
            synthesizer = self._loaded[key] = FastGANSynthesizer(bundle)
        return synthesizer

    def retrain(self, plan: TrainPlan, progress: bool) -> None:
        """Train ``plan.run_dir`` with the recipe of the bundle it would replace (``recipe.bundle_recipe``: every
        training setting, the output stage, the noise stage estimated again from the new cohort; the training
        defaults when there is no bundle), from its weights when ``plan.init`` is ``served``, then export it to
        ``plan.candidate_dir``."""
        served = is_bundle(plan.bundle_dir)
        recipe = bundle_recipe(bundle_metadata(plan.bundle_dir)) if served else TrainSettings(cohort=plan.name)
        settings = retraining_settings(recipe, plan.cohort_dir, tuple(level.value for level in plan.levels),
                                       plan.iterations, plan.batch_size,
                                       plan.bundle_dir if served and plan.init == INIT_SERVED else None)
        train(plan.run_dir, progress=progress, command=plan.command, **asdict(settings))
        export_bundle(plan.run_dir, plan.candidate_dir, name=plan.name, version=plan.version)


FAMILY = FastGANFamily()
