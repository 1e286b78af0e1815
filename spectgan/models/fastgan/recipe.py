"""The recipe of a bundle: the ``TrainSettings`` that trained it, read back so that retraining keeps them.

A bundle exported since the recipe travels with it records every setting under ``training.settings``
(``bundle.recorded_settings``). Older bundles (models A and B 4.0.0) record only the generator's ``network`` and the
``training.commands`` that ran the run: their recipe is the last ``spectgan train`` command that is not a
``--resume``, read with the train command's own parser, over the training defaults. Either way the exported
``network`` has the last word on what the generator is (image size, widths, output and noise stages, defect axes).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from dataclasses import fields, replace
from pathlib import Path

from spectgan.models.fastgan.train import FWHM_PER_SIGMA, LEGACY_SETTINGS, TrainSettings, add_train_command

TUPLE_FIELDS = ("levels", "betas")  # JSON gives lists


def _parsed_command(command: str) -> dict:
    """The ``TrainSettings`` fields a recorded ``spectgan train`` command line sets (empty when it is another
    command or does not parse)."""
    words = shlex.split(command)
    starts = [index for index, word in enumerate(words[:-1])
              if word in ("spectgan", "spectgan.cli") and words[index + 1] == "train"]
    if not starts:
        return {}
    parser = argparse.ArgumentParser(prog="spectgan")
    add_train_command(parser.add_subparsers(dest="command"))
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = parser.parse_args(words[starts[0] + 1:])
    except SystemExit:  # a command line of another version of spectgan
        return {}
    return {field.name: getattr(args, field.name) for field in fields(TrainSettings)
            if getattr(args, field.name, None) is not None}


def _from_network(metadata: dict) -> dict:
    """The settings the exported generator fixes: size, widths, output and noise stages, defect axes, levels."""
    generator = metadata["network"]["generator"]
    sigma = generator.get("output_filter_sigma", LEGACY_SETTINGS["output_filter_fwhm_mm"])
    return {"levels": tuple(metadata["levels"]), "image_size": generator["image_size"],
            "latent_dim": generator["latent_dim"], "generator_width": generator["width"],
            "condition_dim": generator["condition_dim"],
            "output_filter_fwhm_mm": round(sigma * FWHM_PER_SIGMA * metadata["pixel_spacing_mm"], 3),
            "output_floor": generator.get("output_floor", LEGACY_SETTINGS["output_floor"]),
            "output_noise": generator.get("output_noise"), "defect_axes": bool(generator.get("territories"))}


def bundle_recipe(metadata: dict) -> TrainSettings:
    """The settings that trained the bundle of ``metadata`` (``cohort`` is the training cohort's folder name;
    ``output_noise`` the noise stage's parameters, or None)."""
    training = metadata.get("training", {})
    recorded = training.get("settings")
    if recorded is None:
        recorded = {}
        for command in reversed(training.get("commands", [])):
            if "--resume" in shlex.split(command):  # a resume changes the schedule only: the run's first command
                continue  # defines it
            recorded = _parsed_command(command)
            if recorded:
                break
    options = {**recorded, **_from_network(metadata)}
    options["cohort"] = training.get("cohort_name") or Path(str(options.get("cohort") or "unknown")).name
    options = {name: tuple(value) if name in TUPLE_FIELDS and value is not None else value
               for name, value in options.items() if name in {field.name for field in fields(TrainSettings)}}
    return TrainSettings(**options)


def retraining_settings(recipe: TrainSettings, cohort: Path, levels: tuple[str, ...], iterations: int,
                        batch_size: int, init_from: Path | None) -> TrainSettings:
    """The recipe for a new run on ``cohort``: its stages and weights kept, the noise stage (when the recipe has
    one) estimated again from the new cohort, starting from ``init_from`` (a bundle or run; None: fresh weights)."""
    return replace(recipe, cohort=str(cohort), levels=tuple(levels), iterations=iterations, batch_size=batch_size,
                   init_from=str(init_from) if init_from else None,
                   output_noise=True if recipe.output_noise else None)
