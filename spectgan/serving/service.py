"""The generation service behind the MONAI Label app (``monai_app``): everything the server does, testable in-process.

A request names a model bundle (``MODELS``), a reference study (an image file) and generation params (``level``,
``pattern``, ``side``, ``seed``, ``psi``, ``output_space``). The service validates the params against the bundle
(``ServiceError`` with an HTTP status and a message naming what is allowed), registers the study to the template
(cached per file path, modification time and size), generates a canonical slice with ``spectgan.models.fastgan``, places it on
the level's plane in the study's physical space with ``spectgan.geometry.registration``, and measures it with ``spectgan.geometry.roi``
split by the REGISTERED midline. The result is a float32 image in counts plus a JSON-serialisable dict.

It also retrains a bundle for the app's train task (``retrain``: a new bundle version, published atomically by
``spectgan.models.fastgan.export_bundle``; a running service picks it up on its next request), starts a real server process
(``ServerProcess``, for benchmarks and tests) and runs ``spectgan bench server``.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import SimpleITK as sitk
import torch

from spectgan.conditions import (ALL_LEVELS, Condition, Level, Pattern, Side, describe_allowed, parse_levels,
                                 valid_conditions)
from spectgan.errors import InvalidImageError, SpectganError
from spectgan.models.fastgan import Bundle, export_bundle, load_bundle, sample
from spectgan.models.fastgan.bundle import BUNDLE_VERSION, METADATA_FILE, WEIGHTS_FILE
from spectgan.models.fastgan.sample import MAX_SEED, resolve_condition
from spectgan.models.fastgan.train import TrainSettings, train
from spectgan.geometry.registration import OUTPUT_SPACES, Registration, level_plane, place_slice, register_to_template
from spectgan.geometry.roi import hemisphere_stats, read_image
from spectgan.geometry.template import canonical_image
from spectgan.serving.settings import COHORT_ENV, models_dir_from

logger = logging.getLogger(__name__)

RUNS_FOLDER = "runs"  # <models_dir>/runs/<model>: the training run behind the latest retrained bundle

INFER_PARAMS = ("level", "pattern", "side", "seed", "psi", "output_space")
TRAIN_PARAMS = ("iterations", "batch", "levels")
MAX_TRAIN_ITERATIONS = 1_000_000
MAX_TRAIN_BATCH = 1024
DEFAULT_TRAIN_ITERATIONS = TrainSettings.iterations
DEFAULT_TRAIN_BATCH = TrainSettings.batch_size
REGISTRATION_CACHE_SIZE = 32
RESULT_SUFFIX = ".nii.gz"
SERVER_THREADS_ENV = "SPECTGAN_SERVER_TORCH_THREADS"
# Torch intra-op (and SimpleITK filter) threads while serving: requests run in parallel instead (worker processes or
# threads). Measured on the shared 2-core machine under load: one 64 px generation took 17 ms (median) with 1 thread
# and 750 ms with 2, whose OpenMP barriers wait for a thread the scheduler has parked. SimpleITK's filters on the few
# planes a placed slice fills gain nothing from a second thread; the price is a registration (once per study and
# process) of 1.7 s instead of 0.75 s.
SERVER_TORCH_THREADS = 1

BAD_REQUEST, NOT_FOUND, UNPROCESSABLE, SERVICE_UNAVAILABLE = 400, 404, 422, 503


class ServiceError(SpectganError):
    """A request the service refuses, with the HTTP status that says why and a message naming what is allowed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # keeps the status when raised in a generation worker process
        return type(self), (self.status, str(self))


@dataclass(frozen=True)
class ModelSpec:
    """A model the app serves: its bundle folder name and the levels it is trained on."""

    name: str
    levels: tuple[Level, ...]
    description: str


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("spect_fastgan_A", ALL_LEVELS, "Conditional FastGAN trained on all three levels (CER, BG, COR)"),
    ModelSpec("spect_fastgan_B", (Level.COR,), "Conditional FastGAN trained on the COR level only"),
)}


def model_spec(name: str) -> ModelSpec:
    """The spec of a served model; ServiceError 404 naming the models otherwise."""
    if name not in MODELS:
        raise ServiceError(NOT_FOUND, f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[name]


def select_models(selection: str | None) -> tuple[str, ...]:
    """The app conf ``models``: ``all`` (or empty) or a comma-separated list of model names."""
    if selection is None or selection.strip().lower() in ("", "all"):
        return tuple(MODELS)
    names = [name.strip() for name in selection.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {', '.join(unknown) or repr(selection)} in conf models; allowed: all, "
                         f"{', '.join(MODELS)}")
    return tuple(dict.fromkeys(names))


# ------------------------------------------------------------------------------------------------------- params

def parse_params_json(text: str | None) -> dict:
    """The ``params`` form field of a MONAI Label request -> dict; ServiceError 400 when it is not a JSON object."""
    if text is None or not text.strip():
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServiceError(BAD_REQUEST, f"params is not valid JSON ({error.msg} at line {error.lineno} column "
                                        f"{error.colno}); send a JSON object such as "
                                        '{"level": "BG", "pattern": "unilateral", "side": "left"}') from None
    except RecursionError:
        raise ServiceError(BAD_REQUEST, "params is nested too deeply; send a flat JSON object") from None
    if not isinstance(params, dict):
        raise ServiceError(BAD_REQUEST, f"params must be a JSON object of named params, got a JSON "
                                        f"{type(params).__name__}")
    return params


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer(value, name: str, low: int, high: int, hint: str = "") -> int:
    """An integer param (a JSON integer or a string of digits) in [low, high]; ServiceError 422 otherwise."""
    parsed = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdecimal() and len(value.strip()) <= 40:
        parsed = int(value.strip())
    if parsed is None or not low <= parsed <= high:
        raise ServiceError(UNPROCESSABLE, f"{name} must be an integer in [{low}, {high}]{hint}, got {value!r}")
    return parsed


def _fraction(value, name: str) -> float:
    """A number param (a JSON number or a numeric string) in [0, 1]; ServiceError 422 otherwise."""
    parsed = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = float(value)
        except ValueError:
            pass
    if parsed is None or not math.isfinite(parsed) or not 0.0 <= parsed <= 1.0:
        raise ServiceError(UNPROCESSABLE, f"{name} must be a number in [0, 1] (1: no truncation), got {value!r}")
    return parsed


@dataclass(frozen=True)
class GenerationRequest:
    """Validated generation params; ``seed`` None means a random seed (echoed back in the result)."""

    condition: Condition
    seed: int | None
    psi: float
    output_space: str


def parse_generation_params(params: Mapping[str, Any], metadata: dict) -> GenerationRequest:
    """Validate ``INFER_PARAMS`` against a bundle's metadata; other keys are ignored (MONAI Label adds its own).

    ServiceError 422 names the allowed values: the bundle's levels, the patterns, the sides, the valid conditions
    of the bundle (bilateral does not exist at CER), the seed and psi ranges, the output spaces.
    """
    if not isinstance(params, Mapping):
        raise ServiceError(BAD_REQUEST, f"params must be a JSON object of named params, got {type(params).__name__}")
    levels = parse_levels(metadata["levels"])
    for name, allowed in (("level", [level.value for level in levels]), ("pattern", [p.value for p in Pattern])):
        if _is_empty(params.get(name)):
            raise ServiceError(UNPROCESSABLE, f"{name} is required; allowed: {', '.join(allowed)}. Valid conditions "
                                              f"for {metadata['name']}: {describe_allowed(levels)}")
    side = params.get("side")
    try:
        condition = resolve_condition(metadata, params["level"], params["pattern"], None if _is_empty(side) else side)
    except ValueError as error:
        raise ServiceError(UNPROCESSABLE, str(error)) from None
    seed = params.get("seed")
    seed = None if _is_empty(seed) else _integer(seed, "seed", 0, MAX_SEED, " (or empty for a random seed)")
    psi = params.get("psi")
    psi = 1.0 if _is_empty(psi) else _fraction(psi, "psi")
    output_space = params.get("output_space")
    output_space = OUTPUT_SPACES[0] if _is_empty(output_space) else output_space
    if output_space not in OUTPUT_SPACES:
        raise ServiceError(UNPROCESSABLE, f"invalid output_space {output_space!r}; allowed: {', '.join(OUTPUT_SPACES)}"
                                          " (slice: the one-slice plane; reference: resampled onto the study's grid)")
    return GenerationRequest(condition, seed, psi, output_space)


def infer_param_spec(levels: Sequence[Level]) -> dict:
    """What a client may send, per param: allowed values or range, default and meaning (for ``/info/``)."""
    patterns = [pattern.value for pattern in Pattern if any(c.pattern is pattern for c in valid_conditions(levels))]
    return {
        "level": {"allowed": [level.value for level in levels], "required": True,
                  "description": "anatomical level: an axial plane of the template"},
        "pattern": {"allowed": patterns, "required": True, "description": "perfusion defect pattern"},
        "side": {"allowed": [side.value for side in Side], "default": None,
                 "description": "hemisphere of a unilateral defect (the patient's side); empty otherwise"},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "default": None,
                 "description": "random seed; empty for a random one (always echoed back)"},
        "psi": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 1.0,
                "description": "truncation of the latent toward its mean (1: none)"},
        "output_space": {"allowed": list(OUTPUT_SPACES), "default": OUTPUT_SPACES[0],
                         "description": "slice: a one-slice (possibly oblique) volume on the level's plane; "
                                        "reference: resampled onto the reference study's grid"},
    }


def infer_client_config(levels: Sequence[Level]) -> dict:
    """Defaults in MONAI Label's config convention (a list offers choices, its first item is the default)."""
    spec = infer_param_spec(levels)
    return {"level": spec["level"]["allowed"], "pattern": spec["pattern"]["allowed"],
            "side": [""] + spec["side"]["allowed"], "seed": "", "psi": spec["psi"]["default"],
            "output_space": spec["output_space"]["allowed"]}


@dataclass(frozen=True)
class TrainRequest:
    """Validated train params."""

    iterations: int
    batch_size: int
    levels: tuple[Level, ...]


def parse_train_params(name: str, params: Mapping[str, Any]) -> TrainRequest:
    """Validate ``TRAIN_PARAMS`` for a model (its levels bound ``levels``); ServiceError 422 names what is allowed."""
    spec = model_spec(name)
    if not isinstance(params, Mapping):
        raise ServiceError(BAD_REQUEST, f"train params must be a JSON object, got {type(params).__name__}")
    iterations = params.get("iterations")
    iterations = DEFAULT_TRAIN_ITERATIONS if _is_empty(iterations) else _integer(
        iterations, "iterations", 1, MAX_TRAIN_ITERATIONS)
    batch = params.get("batch")
    batch = DEFAULT_TRAIN_BATCH if _is_empty(batch) else _integer(batch, "batch", 2, MAX_TRAIN_BATCH)
    allowed = ", ".join(level.value for level in spec.levels)
    levels = params.get("levels")
    if _is_empty(levels):
        levels = spec.levels
    else:
        try:
            levels = parse_levels(levels) if isinstance(levels, (str, list, tuple)) else None
        except ValueError as error:
            raise ServiceError(UNPROCESSABLE, f"{error} (levels of {name}: {allowed})") from None
        if levels is None or not set(levels) <= set(spec.levels):
            raise ServiceError(UNPROCESSABLE, f"levels for {name} must be among {allowed} (comma-separated), got "
                                              f"{params.get('levels')!r}")
    return TrainRequest(iterations, batch, tuple(levels))


def train_client_config(name: str) -> dict:
    """Train defaults for ``/info/`` (MONAI Label's config convention)."""
    return {"iterations": DEFAULT_TRAIN_ITERATIONS, "batch": DEFAULT_TRAIN_BATCH,
            "levels": ",".join(level.value for level in model_spec(name).levels)}


# ------------------------------------------------------------------------------------------------ registrations

@dataclass(frozen=True)
class RegisteredStudy:
    """A reference study read from disk and registered to the template."""

    image: sitk.Image
    registration: Registration
    seconds: float  # time the registration took when it was made


class RegistrationCache:
    """Registered studies by (real path, modification time, size); thread-safe, least recently used dropped first.

    Concurrent requests for the same new study wait for one registration instead of each running their own.
    """

    def __init__(self, capacity: int = REGISTRATION_CACHE_SIZE):
        self.capacity = capacity
        self._entries: OrderedDict[tuple, RegisteredStudy] = OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(path: Path) -> tuple:
        stat = path.stat()
        return str(path.resolve()), stat.st_mtime_ns, stat.st_size

    def get(self, path: Path) -> tuple[RegisteredStudy, bool]:
        """(registered study, True when it came from the cache); InvalidImageError for an unusable study."""
        key = self.key(path)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key], True
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:  # registered by the request this one waited for
                    return self._entries[key], True
            try:
                study = self._register(path)
                with self._lock:
                    self._entries[key] = study
                    while len(self._entries) > self.capacity:
                        self._entries.popitem(last=False)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            return study, False

    @staticmethod
    def _register(path: Path) -> RegisteredStudy:
        start = time.perf_counter()
        image = read_image(path)
        registration = register_to_template(image).require_ok()
        return RegisteredStudy(image, registration, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------- generation

@dataclass(frozen=True)
class GenerationResult:
    """A generated slice placed in the study's space (float32 counts) and the JSON result."""

    image: sitk.Image
    result: dict


def _geometry(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "origin": list(image.GetOrigin()), "spacing": list(image.GetSpacing()),
            "direction": list(image.GetDirection())}


class GenerationService:
    """Bundles, registrations and generation for the served models (thread-safe: the server runs requests in
    parallel threads).

    Bundles are read through ``spectgan.models.fastgan.load_bundle`` on every request (cached there per file modification
    time), so a retrained bundle is used without a restart; while a bundle folder is being replaced or cannot be
    read, the last bundle that loaded keeps serving.
    """

    def __init__(self, models_dir: str | Path | None = None, model_names: Sequence[str] = tuple(MODELS)):
        self.models_dir = Path(models_dir) if models_dir else models_dir_from()
        self.model_names = tuple(model_spec(name).name for name in model_names)
        self.registrations = RegistrationCache()
        self._last_loaded: dict[str, Bundle] = {}
        self._descriptions: dict[str, tuple[Bundle | None, dict]] = {}  # by model: (bundle it describes, description)
        self._lock = threading.Lock()

    # ---- bundles
    def bundle_dir(self, name: str) -> Path:
        return self.models_dir / name

    def _served_spec(self, name: str) -> ModelSpec:
        if name not in self.model_names:
            raise ServiceError(NOT_FOUND, f"unknown model {name!r}; this server has: {', '.join(self.model_names)}")
        return MODELS[name]

    def has_bundle(self, name: str) -> bool:
        """True when the model's bundle folder holds metadata and weights (or one was loaded before)."""
        self._served_spec(name)
        folder = self.bundle_dir(name)
        on_disk = (folder / METADATA_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
        return on_disk or name in self._last_loaded

    def bundle(self, name: str) -> Bundle:
        """The model's current bundle; ServiceError 503 when it has never loaded."""
        self._served_spec(name)
        try:
            bundle = load_bundle(self.bundle_dir(name))
        except Exception as error:  # missing, mid-swap, damaged (sha256, JSON, torch): any reason means unusable
            reason = str(error) if isinstance(error, SpectganError) else f"{type(error).__name__}: {error}"
            with self._lock:
                previous = self._last_loaded.get(name)
            if previous is None:
                logger.warning("%s: no usable bundle: %s", name, reason)
                reason = without_folder(reason, self.bundle_dir(name))
                raise ServiceError(SERVICE_UNAVAILABLE, f"model {name} has no usable bundle: {reason}. Train it with "
                                                        f"POST /train/{name} or `spectgan train ... --export-bundle "
                                                        f"<models folder>/{name}` on the server") from None
            logger.warning("%s: keeping version %s while the bundle cannot be read (%s)", name,
                           previous.metadata.get("version"), reason)
            return previous
        with self._lock:
            self._last_loaded[name] = bundle
        return bundle

    def describe(self, name: str) -> dict:
        """What ``/info/`` shows for a model: its bundle (or None), the params a client may send, the conditions.

        Made once per loaded bundle (MONAI Label asks for it on every request); do not modify the answer.
        """
        try:
            bundle = self.bundle(name)
        except ServiceError as error:
            if error.status == NOT_FOUND:
                raise
            bundle = None
        with self._lock:
            made_for, description = self._descriptions.get(name, (None, None))
        if description is None or made_for is not bundle:
            description = self._description(name, bundle)
            with self._lock:
                self._descriptions[name] = (bundle, description)
        return description

    def _description(self, name: str, bundle: Bundle | None) -> dict:
        spec = self._served_spec(name)
        metadata = bundle.metadata if bundle else None
        levels = parse_levels(metadata["levels"]) if metadata else spec.levels
        bundle = None if metadata is None else {
            "name": metadata["name"], "version": metadata["version"], "sha256": metadata["weights_sha256"],
            "image_size": metadata["image_size"], "pixel_spacing_mm": metadata["pixel_spacing_mm"],
            "count_scale": metadata["count_scale"], "levels": metadata["levels"],
            "trained_iterations": metadata["training"]["iterations"], "exported": metadata["exported"]}
        return {"description": spec.description, "bundle": bundle, "params": infer_param_spec(levels),
                "conditions": [condition.label for condition in valid_conditions(levels)],
                "config": infer_client_config(levels)}

    def check_params(self, name: str, params: Mapping[str, Any]) -> GenerationRequest:
        """Validate a request's params against the model's current bundle without generating anything."""
        return parse_generation_params(params, self.bundle(name).metadata)

    # ---- generation
    def canonical_slice(self, bundle: Bundle, request: GenerationRequest) -> tuple[sitk.Image, int]:
        """The generated canonical slice (template geometry, counts) and the seed used."""
        condition = request.condition
        counts, seed = sample(bundle, condition.level, condition.pattern, condition.side, seed=request.seed, n=1,
                              psi=request.psi)
        return canonical_image(counts[0], condition.level), seed

    def reference_study(self, image_path: str | Path | None) -> tuple[RegisteredStudy, bool]:
        """The registered study behind an image path (cached); ServiceError 404 / 422 for a missing / bad one."""
        if image_path is None or not str(image_path).strip():
            raise ServiceError(NOT_FOUND, "no reference image given; pass the image id of a study in the datastore")
        path = Path(image_path)
        try:
            return self.registrations.get(path)
        except OSError:
            raise ServiceError(NOT_FOUND, f"reference image {path.name!r} does not exist") from None
        except (InvalidImageError, RuntimeError) as error:  # RuntimeError: SimpleITK could not register it
            raise ServiceError(UNPROCESSABLE, f"reference image {path.name} cannot be used: {error}") from None

    def generate(self, name: str, image_path: str | Path, params: Mapping[str, Any]) -> GenerationResult:
        """Validate, register (cached), generate, place on the level's plane in the study, measure hemispheres."""
        started = time.perf_counter()
        bundle = self.bundle(name)
        metadata = bundle.metadata
        request = parse_generation_params(params, metadata)
        study, cached = self.reference_study(image_path)
        registered = time.perf_counter()
        canonical, seed = self.canonical_slice(bundle, request)
        generated = time.perf_counter()
        placed = place_slice(canonical, study.registration, request.output_space, study.image)
        positioned = time.perf_counter()
        midline = study.registration.midline()
        try:
            stats, stats_error = hemisphere_stats(placed, midline).to_dict(), None
        except InvalidImageError as error:  # generated content without a measurable brain (an untrained model)
            stats, stats_error = None, str(error)
        finished = time.perf_counter()
        plane_point, plane_normal = level_plane(study.registration, request.condition.level)
        registration = study.registration
        result = {
            "model": name, "version": metadata["version"], "sha256": metadata["weights_sha256"],
            "condition": {**request.condition.to_dict(), "label": request.condition.label},
            "seed": seed, "psi": request.psi, "output_space": request.output_space,
            "image": Path(image_path).name,
            "stats": stats, **({"stats_error": stats_error} if stats_error else {}),
            "midline": {"point": list(midline.point), "normal": list(midline.normal)},
            "geometry": {**_geometry(placed), "pixel_type": placed.GetPixelIDTypeAsString(),
                         "level_plane": {"point": plane_point.tolist(), "normal_superior": plane_normal.tolist()}},
            "registration": {"correlation": registration.correlation, "metric": registration.metric,
                             "template_to_study": registration.to_dict()["template_to_study"], "cached": cached},
            "timings_s": {"registration": 0.0 if cached else study.seconds,
                          "validation_and_lookup": registered - started - (0.0 if cached else study.seconds),
                          "generation": generated - registered, "placement": positioned - generated,
                          "statistics": finished - positioned, "total": finished - started},
            "synthetic": True,
        }
        return GenerationResult(placed, result)

    def generate_file(self, name: str, image_path: str | Path, params: Mapping[str, Any]) -> tuple[Path, dict]:
        """``generate``, with the image written by ``write_result_image`` into ``private_results_dir()``: (its
        path, the JSON result). The caller removes the file."""
        outcome = self.generate(name, image_path, params)
        result = outcome.result
        stem = result_stem(name, result["condition"]["label"], result["seed"])
        return write_result_image(outcome.image, private_results_dir(), stem), result


def without_folder(text: str, folder: Path) -> str:
    """``text`` with ``folder`` (as given and resolved) named by its last part: answers show no server path."""
    for form in sorted({str(folder), str(Path(folder).resolve())}, key=len, reverse=True):
        text = text.replace(form, Path(folder).name)
    return text


def use_server_threads() -> int:
    """Set torch's intra-op and SimpleITK's filter threads for serving ($SPECTGAN_SERVER_TORCH_THREADS, default 1);
    returns the number."""
    threads = int(os.environ.get(SERVER_THREADS_ENV, SERVER_TORCH_THREADS))
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return threads


@functools.cache
def private_results_dir() -> Path:
    """This process's own folder for result files (mode 0700, removed when the process exits).

    Result files must not live where clients write: MONAI Label's official client saves an answer's image part as
    ``<its temporary folder>/<the part's file name>`` (/tmp by default), and the server names the part after its
    result file, which it deletes after answering. A result in /tmp itself was that very path on a shared machine.
    """
    folder = Path(tempfile.mkdtemp(prefix="spectgan-results-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def result_stem(model: str, condition_label: str, seed: int) -> str:
    """What a result is, as the start of its file name: ``spect_fastgan_A_BG-unilateral-left_seed3``."""
    return f"{model}_{condition_label}_seed{seed}"


def write_result_image(image: sitk.Image, directory: str | Path, stem: str) -> Path:
    """Write a result image as a float32 NIfTI ``<directory>/<stem>_<random>.nii.gz`` (unique: concurrent requests
    may ask for the same thing; the caller removes it); returns its path."""
    handle, path = tempfile.mkstemp(suffix=RESULT_SUFFIX, prefix=f"{stem}_", dir=directory)
    os.close(handle)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), path, True)
    return Path(path)


# ------------------------------------------------------------------------------------------------------ training

def next_version(bundle_dir: Path) -> str:
    """The bundle's version with its last number increased (``1.0.0`` -> ``1.0.1``); the first version otherwise."""
    try:
        numbers = [int(part) for part in json.loads((bundle_dir / METADATA_FILE).read_text())["version"].split(".")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return BUNDLE_VERSION
    return ".".join(str(number) for number in numbers[:-1] + [numbers[-1] + 1])


def check_cohort(cohort_dir: Path) -> None:
    """ServiceError 422 unless ``cohort_dir`` is a finished cohort with a manifest."""
    if not (cohort_dir / "cohort.json").is_file() or not (cohort_dir / "manifest.csv").is_file():
        logger.warning("no training cohort in %s", cohort_dir)
        raise ServiceError(UNPROCESSABLE, f"the server has no training cohort (its folder {cohort_dir.name!r} holds "
                                          "no finished cohort): make one on the server with `spectgan cohort --out "
                                          f"FOLDER` and point conf cohort / ${COHORT_ENV} at it")


def retrain(name: str, models_dir: Path, cohort_dir: Path, params: Mapping[str, Any],
            report: Callable[[str], None] = logger.info) -> dict:
    """Train a fresh run of a model on the cohort and publish it as the next bundle version.

    The new generator keeps the current bundle's architecture (image size, width, latent and condition sizes; the
    training defaults when there is no bundle yet). The run lives in ``<models_dir>/runs/<name>`` (replaced by the
    next retraining); ``export_bundle`` stages the bundle beside the current one and swaps it in with renames, so a
    run stopped before that leaves the previous bundle in place. Progress: ``report`` lines plus the training
    progress bar (stderr).
    """
    request = parse_train_params(name, params)
    check_cohort(cohort_dir)
    bundle_dir, run_dir = models_dir / name, models_dir / RUNS_FOLDER / name
    version = next_version(bundle_dir)
    try:
        architecture = load_bundle(bundle_dir).metadata["network"]["generator"]
    except SpectganError:
        architecture = {}
    shutil.rmtree(run_dir, ignore_errors=True)
    levels = ",".join(level.value for level in request.levels)
    report(f"{name}: training version {version} for {request.iterations} iterations at batch {request.batch_size} "
           f"on {levels} from cohort {cohort_dir.name} (run {RUNS_FOLDER}/{name} of the models folder)")
    started = time.perf_counter()
    train(run_dir, progress=True, command=f"monailabel train {name} {json.dumps(dict(params), default=str)}",
          cohort=str(cohort_dir), levels=levels, iterations=request.iterations, batch_size=request.batch_size,
          image_size=architecture.get("image_size"), generator_width=architecture.get("width"),
          latent_dim=architecture.get("latent_dim"), condition_dim=architecture.get("condition_dim"))
    report(f"{name}: trained in {time.perf_counter() - started:.1f} s; exporting the bundle")
    export_bundle(run_dir, bundle_dir, name=name, version=version)
    metadata = load_bundle(bundle_dir).metadata
    report(f"{name}: published version {metadata['version']} (sha256 {metadata['weights_sha256']})")
    return {"model": name, "version": metadata["version"], "sha256": metadata["weights_sha256"],
            "iterations": request.iterations, "batch": request.batch_size, "levels": levels,
            "run": f"{RUNS_FOLDER}/{name}"}
