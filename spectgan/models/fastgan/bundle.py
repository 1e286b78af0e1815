"""MONAI bundles of trained generators: ``export_bundle`` (from a run, atomic) and ``load_bundle`` (checked, cached).

A bundle folder:

- ``configs/metadata.json``: MONAI bundle metadata plus what sampling needs (``count_scale``, ``levels``,
  ``pixel_spacing_mm``, ``network``; for a model with defect axes ``defect_axes``, the territories per level and the
  severity range it takes, and ``lesion_distribution``, its train split's lesions per condition, from which a
  request that leaves them out is drawn), ``weights_sha256`` and, under ``training``, the recipe to train it again
  (``settings``: every ``TrainSettings`` field with the output and noise stages as trained; ``cohort_name``,
  ``count_scale``; ``commands``; read back by ``spectgan.models.fastgan.recipe``);
- ``configs/inference.json``: ``network_def`` for ``monai.bundle.ConfigParser``;
- ``models/model.pt``: the EMA generator's state dict (batch norm recalibrated), loaded with ``weights_only=True``;
- ``docs/README.md`` with ``loss_curves.png`` and ``samples.png``.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import shutil
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import NamedTuple

import torch

from spectgan.conditions import (LEVEL_Z_MM, Level, Pattern, check_vocabulary, describe_allowed, parse_levels,
                                 valid_conditions, vocabulary)
from spectgan.errors import SpectganError
from spectgan.lesions import DefectAxes, LesionDistribution
from spectgan.models.fastgan.checkpoint import ema_generator, load_checkpoint
from spectgan.models.fastgan.figures import save_loss_curves
from spectgan.models.fastgan.inference import prepare_for_sampling, sampling_copy, save_condition_grid
from spectgan.models.fastgan.networks import SIDE_INDEX, Generator
from spectgan.models.versions import replace_folder

METADATA_FILE = "configs/metadata.json"
INFERENCE_FILE = "configs/inference.json"
WEIGHTS_FILE = "models/model.pt"
README_FILE = "docs/README.md"
BUNDLE_VERSION = "1.0.0"
MAX_WEIGHTS_BYTES = 50 * 1024 * 1024
MONAI_METADATA_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                         "meta_schema_20240725.json")
FAMILY = "conditional_fastgan"  # the model family (spectgan.models.synthesizer) that loads these bundles
VOCABULARY_KEY = "condition_vocabulary"  # metadata: spectgan.conditions.vocabulary() at export
INTENDED_USE = ("Research only. Every image is synthetic (made by a GAN); not for diagnosis, treatment or any "
                "clinical decision.")


LESIONS_KEY = "lesion_distribution"  # metadata: the train split's lesions per condition (LesionDistribution)
AXES_KEY = "defect_axes"  # metadata: the territory and severity axes (DefectAxes), for a model that takes them


class Bundle(NamedTuple):
    """A loaded bundle: the generator prepared for sampling (``prepare_for_sampling``, CPU) and the metadata."""

    generator: Generator
    metadata: dict

    @property
    def lesions(self) -> LesionDistribution:
        return LesionDistribution.from_dict(self.metadata.get(LESIONS_KEY, {}))

    @property
    def defect_axes(self) -> DefectAxes | None:
        """The territory and severity axes, or None for a model without them."""
        return DefectAxes.from_dict(self.metadata[AXES_KEY]) if self.metadata.get(AXES_KEY) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(bundle_dir: str | Path) -> Bundle:
    """Load a bundle (cached per path and file modification times); a sha256 mismatch is a SpectganError."""
    path = Path(bundle_dir).resolve()
    metadata_path, weights_path = path / METADATA_FILE, path / WEIGHTS_FILE
    for required in (metadata_path, weights_path):
        if not required.is_file():
            raise SpectganError(f"{bundle_dir} is not a spectgan model bundle: {required.relative_to(path)} is missing")
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (metadata_path, weights_path))
    return _load_bundle(str(path), stamp)


@functools.lru_cache(maxsize=8)
def _load_bundle(path: str, stamp: tuple) -> Bundle:
    metadata = json.loads((Path(path) / METADATA_FILE).read_text())
    try:
        check_vocabulary(metadata.get(VOCABULARY_KEY), f"model bundle {metadata.get('name', Path(path).name)}")
    except ValueError as error:
        raise SpectganError(str(error)) from None
    weights_path = Path(path) / WEIGHTS_FILE
    actual = sha256_file(weights_path)
    if actual != metadata.get("weights_sha256"):
        raise SpectganError(f"{weights_path}: sha256 mismatch (metadata says {metadata.get('weights_sha256')}, the "
                            f"file has {actual}); the weights were changed or damaged, re-export or re-download "
                            "the bundle")
    generator = Generator(**metadata["network"]["generator"])
    generator.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return Bundle(prepare_for_sampling(generator), metadata)


def _network_data_format(generator: dict, count_scale: float) -> dict:
    size = generator["image_size"]
    channels = {"0": "level: " + ", ".join(f"{i} {v.value}" for i, v in enumerate(Level)),
                "1": "pattern: " + ", ".join(f"{i} {v.value}" for i, v in enumerate(Pattern)),
                "2": "side: " + ", ".join(f"{i} {s.value if s else 'none'}" for s, i in SIDE_INDEX.items())}
    territories = generator.get("territories") or []
    if territories:
        names = "0 none, 1 unknown, " + ", ".join(f"{2 + i} {name}" for i, name in enumerate(territories))
        for offset, side in ((3, "left"), (5, "right")):
            channels[str(offset)] = f"territory of the {side} hemisphere's lesion: {names}"
            channels[str(offset + 1)] = f"severity of the {side} hemisphere's lesion (fraction; 0 none, -1 unknown)"
    return {
        "inputs": {
            "latent": {"type": "tensor", "format": "latent", "num_channels": generator["latent_dim"],
                       "spatial_shape": [], "dtype": "float32", "value_range": [], "is_patch_data": False,
                       "channel_def": {"0": "standard normal (times psi for truncation)"}},
            "condition": {"type": "tensor", "format": "class indices" + (", severities" if territories else ""),
                          "num_channels": len(channels), "spatial_shape": [],
                          "dtype": "float32" if territories else "int64",
                          "value_range": [-1 if territories else 0,
                                          max(len(Level), len(Pattern), len(SIDE_INDEX), len(territories) + 2) - 1],
                          "is_patch_data": False, "channel_def": channels}},
        "outputs": {
            "pred": {"type": "image", "format": "magnitude", "modality": "NM", "num_channels": 1,
                     "spatial_shape": [size, size], "dtype": "float32", "value_range": [-1, 1],
                     "is_patch_data": False,
                     "channel_def": {"0": f"counts = (pred + 1) / 2 * {count_scale:g}; array [row, col], col toward "
                                          "the patient's left, row toward posterior (canonical slice)"}}}}


ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s'\",)/]+/)*([^\s'\",)/]+)")


def without_absolute_paths(text: str) -> str:
    """``text`` with every absolute path cut to ``.../<its last part>``: a bundle names no folder of the machine
    that trained it."""
    return ABSOLUTE_PATH.sub(r".../\1", text)


def recorded_settings(settings: dict) -> dict:
    """A run's settings (``TrainSettings`` as a dict, stages resolved) as a bundle records them: the whole recipe,
    with the cohort and the run or bundle it started from named by their folder names only."""
    return {**settings, "cohort": Path(settings["cohort"]).name,
            "init_from": Path(settings["init_from"]).name if settings.get("init_from") else None}


def _metadata(checkpoint: dict, name: str, version: str, weights_sha256: str) -> dict:
    data, settings = checkpoint["data"], checkpoint["settings"]
    levels = parse_levels(settings["levels"])
    generator = checkpoint["network"]["generator"]
    lesions = LesionDistribution.from_dict(data.get("lesions", {}))
    defects = ({AXES_KEY: lesions.axes().to_dict(), LESIONS_KEY: lesions.to_dict()} if generator.get("territories")
               else {})
    return {
        "schema": MONAI_METADATA_SCHEMA, "name": name, "version": version, "family": FAMILY,
        "changelog": {version: "exported from a spectgan training run"},
        "monai_version": package_version("monai"), "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": package_version("numpy"), "required_packages_version": {"spectgan": package_version("spectgan")},
        "task": "Conditional synthesis of 2D 123I-IMP brain perfusion SPECT slices (level, defect pattern, side)",
        "description": f"Conditional FastGAN generator (EMA weights) for levels {', '.join(lv.value for lv in levels)}",
        "authors": "spectgan", "copyright": "Apache-2.0", "data_type": "nifti",
        "data_source": f"{data['cohort'].get('source', 'simulated')} cohort ({Path(settings['cohort']).name})",
        "intended_use": INTENDED_USE, "synthetic": True,
        "network_data_format": _network_data_format(generator, data["count_scale"]),
        "count_scale": data["count_scale"], "pixel_spacing_mm": data["pixel_spacing_mm"],
        "image_size": data["image_size"], "levels": [lv.value for lv in levels], VOCABULARY_KEY: vocabulary(),
        "level_planes_mm": {lv.value: LEVEL_Z_MM[lv] for lv in levels},
        "valid_conditions": [condition.to_dict() for condition in valid_conditions(levels)],
        **defects, "network": {"generator": generator},
        "training": {"settings": recorded_settings(settings), "cohort_name": Path(settings["cohort"]).name,
                     "count_scale": data["count_scale"], "cohort_seed": data["cohort"].get("seed"),
                     "cohort": data["cohort"],
                     "slices_per_condition": data["slices_per_condition"], "iterations": checkpoint["step"],
                     "batch_size": settings["batch_size"], "seed": settings["seed"],
                     "processes": len(checkpoint["rng"]), "hardware": checkpoint["hardware"],
                     "time_s": round(checkpoint["elapsed_s"], 1),
                     "commands": [without_absolute_paths(command) for command in checkpoint["commands"]]},
        "weights_file": WEIGHTS_FILE, "weights_sha256": weights_sha256,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _readme(metadata: dict) -> str:
    training = metadata["training"]
    level, pattern, side = _example_condition(metadata)
    side_arg = f", side={side!r}" if side else ""
    side_flag = f" --side {side}" if side else ""
    slices = "\n".join(f"| {label} | {count} |" for label, count in training["slices_per_condition"].items())
    commands = "\n".join(training["commands"])
    return f"""# {metadata['name']}

{metadata['description']}, exported {metadata['exported']}.

**{INTENDED_USE}**

## What it makes
Canonical {metadata['image_size']} x {metadata['image_size']} axial slices in counts
({metadata['pixel_spacing_mm']:g} mm pixels; column toward the patient's left, row toward posterior), for these
conditions: {describe_allowed(parse_levels(metadata['levels']))}.
The generator's output x in [-1, 1] maps to counts as (x + 1) / 2 x {metadata['count_scale']:g} (one cohort-wide
count scale, so mean counts compare across images).

```python
from spectgan.models.fastgan import sample
counts, seed = sample("models/{metadata['name']}", {level!r}, {pattern!r}{side_arg}, seed=3, n=4)  # float32 [4, H, W]
```
```
spectgan sample --bundle models/{metadata['name']} --level {level} --pattern {pattern}{side_flag} --seed 3 --n 4 --out out/
```

{_defect_axes(metadata)}
{_output_stage(metadata)}
## Training
```
{commands}
```
{training['iterations']} iterations at batch {training['batch_size']} in {training['time_s'] / 3600:.1f} h
({training['time_s']:.0f} s) on {training['hardware']}. Cohort seed {training['cohort_seed']}; training slices per condition:

| condition | slices |
|---|---|
{slices}

![loss curves](loss_curves.png)

## Samples (EMA generator, the same six inputs in every row)
![samples](samples.png)

## Evaluation
`evaluation/report.md` beside this file, when present: the fidelity report against the cohort's held-out test
split, written by `spectgan evaluate --bundle models/{metadata['name']} --cohort COHORT --out
models/{metadata['name']}/docs/evaluation` (exporting new weights over this bundle keeps the report until that
command rewrites it).

## Files
`{WEIGHTS_FILE}` (sha256 `{metadata['weights_sha256']}`), `{METADATA_FILE}`, `{INFERENCE_FILE}`.
"""


def _defect_axes(metadata: dict) -> str:
    """The README's section on the territory and severity axes (``spectgan.lesions``), if the model takes them."""
    if not metadata.get(AXES_KEY):
        return ("## Defect axes\nNone: the model takes level, pattern and side only; territory and severity are "
                "whatever it learned to draw.\n")
    axes = DefectAxes.from_dict(metadata[AXES_KEY])
    territories = "; ".join(f"{level} {', '.join(names)}" for level, names in axes.territories.items())
    low, high = axes.severity_range
    level = _example_condition(metadata)[0]
    territory = axes.territories[level][0]
    return f"""## Defect axes
Each affected hemisphere's defect has a vascular territory ({territories}) and a severity, the fractional CBF
reduction in that territory ({low:g} to {high:g}). A request may name either or both (a bilateral defect one per
side: `left=MCA;right=ACA`); what it leaves out is drawn from the training cohort's defects of that level, pattern
and side (`{LESIONS_KEY}` in `{METADATA_FILE}`), so an unqualified request gives a slice like the cohort's.
```
spectgan sample --bundle models/{metadata['name']} --level {level} --pattern unilateral --side left --territory {territory} --severity {low:g} --n 4 --out out/
```
"""


def _output_stage(metadata: dict) -> str:
    """The README's paragraph on the generator's last stage (``networks.ReconstructionOutput``), from its settings."""
    generator = metadata["network"]["generator"]
    sigma, floor = generator.get("output_filter_sigma", 0.0), generator.get("output_floor", 0.0)
    if not sigma and not floor:
        return "## Output stage\nThe generator ends in tanh (no reconstruction output stage).\n"
    fwhm_mm = sigma * 2.3548 * metadata["pixel_spacing_mm"]
    return f"""## Output stage
The generator ends in the last stage of a SPECT reconstruction, as a fixed layer: the bottom {floor:.1%} of the
intensity range is set to zero (OSEM leaves the background outside the head at almost nothing), then the post-filter
of the training cohort is applied (Gaussian, FWHM {fwhm_mm:.1f} mm = sigma {sigma:.2f} px). The generator draws the
unfiltered image; the filter's physics is exact, so the slices hold no detail the reconstruction cannot make.
{_noise_stage(generator.get("output_noise"))}When present, `realism.md` beside this file compares this with the
earlier approaches on the same evaluation.
"""


def _noise_stage(noise: dict | None) -> str:
    """The README's sentences on the generator's noise stage (``networks.ReconstructionNoise``), if it has one."""
    if not noise:
        return ""
    return (f"Then a noise stage estimated from the training cohort's images (`spectgan.cohorts.noise`) adds the "
            f"reconstruction's noise: SD {noise['gain']:.4f} x m^{noise['exponent']:.2f} at expected value m (a share "
            f"of the count scale), white noise blurred by a Gaussian of sigma {noise['sigma_px']:.2f} px. So the "
            f"generator draws the expected image, and the texture follows the counts as Poisson data through OSEM "
            f"do.\n")


def _example_condition(metadata: dict) -> tuple[str, str, str | None]:
    conditions = metadata["valid_conditions"]
    sided = [c for c in conditions if c.get("side")]
    chosen = (sided or conditions)[0]
    return chosen["level"], chosen["pattern"], chosen["side"]


def _keep_reports(old_docs: Path, new_docs: Path) -> None:
    """Copy what an earlier bundle's ``docs`` holds beside what an export writes (its evaluation, realism report and
    history) into the new ``docs``: exporting a new version over a shipped bundle keeps its reports until
    ``spectgan evaluate`` rewrites them."""
    if not old_docs.is_dir():
        return
    for entry in old_docs.iterdir():
        if (new_docs / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, new_docs / entry.name, copy_function=shutil.copy)
        else:
            shutil.copy(entry, new_docs / entry.name)


def export_bundle(run_dir: str | Path, bundle_dir: str | Path, name: str | None = None,
                  version: str = BUNDLE_VERSION) -> Path:
    """Write the run's EMA generator as a MONAI bundle folder, atomically (staged beside it, then renamed); the
    reports of a bundle it replaces are kept (``_keep_reports``)."""
    checkpoint = load_checkpoint(Path(run_dir))
    bundle_dir = Path(bundle_dir)
    name = name or bundle_dir.name
    data = checkpoint["data"]
    lesions = LesionDistribution.from_dict(data.get("lesions", {}))
    generator = sampling_copy(ema_generator(checkpoint), data["slices_per_condition"], lesions)
    buffer = io.BytesIO()
    torch.save(generator.state_dict(), buffer)
    if buffer.tell() > MAX_WEIGHTS_BYTES:
        raise SpectganError(f"the generator's weights take {buffer.tell() / 2**20:.1f} MB, over the "
                            f"{MAX_WEIGHTS_BYTES / 2**20:.0f} MB a bundle may hold; train a narrower model")
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=bundle_dir.parent, prefix=f".{bundle_dir.name}.staging."))
    try:
        staging.chmod(0o755)
        for folder in ("configs", "models", "docs"):
            (staging / folder).mkdir()
        (staging / WEIGHTS_FILE).write_bytes(buffer.getvalue())
        metadata = _metadata(checkpoint, name, version, sha256_file(staging / WEIGHTS_FILE))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        inference = {"network_def": {"_target_": f"{Generator.__module__}.Generator",
                                     **metadata["network"]["generator"]}}
        (staging / INFERENCE_FILE).write_text(json.dumps(inference, indent=2) + "\n")
        save_loss_curves(checkpoint["history"], staging / "docs" / "loss_curves.png")
        save_condition_grid(generator, valid_conditions(parse_levels(metadata["levels"])), data["count_scale"],
                            staging / "docs" / "samples.png", lesions,
                            title=f"{name}: step {checkpoint['step']} (EMA)")
        (staging / README_FILE).write_text(_readme(metadata))
        _keep_reports(bundle_dir / "docs", staging / "docs")
        replace_folder(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return bundle_dir
