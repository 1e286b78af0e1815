"""The generation service behind the MONAI Label app (``monai_app``): everything the server does, testable in-process.

The served models are bundles in the models folder, each loaded through its family
(``spectgan.models.synthesizer``): serving knows a model only as a ``Synthesizer``. A request arrives validated, as a
``spectgan.serving.request.GenerationRequest``; the service registers the reference study to the template (cached
per file path, modification time and size), has the synthesizer complete the condition (the territory and severity
a request left out, drawn from the model's training cohort: ``Synthesizer.resolve``) and make the canonical slice,
places it on the level's plane in the study's physical space (``spectgan.geometry.registration``) and measures it
with ``spectgan.geometry.roi``, split by the REGISTERED midline. The result is a ``spectgan.results.GenerationResult``
(a float32 image in counts, the completed condition, statistics and masks, ...); for MONAI Label its image is
written into this process's private results folder and the result answered as its JSON (``to_json``).

It also retrains a model for the app's train task (``retrain``: a candidate trained with the served bundle's recipe
on a cohort named by id, published only if it passes the quality gate, ``spectgan.evaluation.gate``; versions in
``spectgan.models.versions``; a running service picks a new version up on its next request). Errors are
``spectgan.errors`` domain errors; HTTP is ``monai_app``'s business.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import SimpleITK as sitk
import torch

from spectgan.conditions import ALL_LEVELS, Condition, ConditionAxes, Level, Pattern, valid_conditions
from spectgan.errors import InvalidImageError, InvalidRequestError, NotFoundError, SpectganError, UnavailableError
from spectgan.geometry.registration import Registration, level_plane, place_slice, register_to_template
from spectgan.geometry.roi import read_image
from spectgan.geometry.template import canonical_image
from spectgan.models.synthesizer import (INIT_SERVED, Synthesizer, TrainPlan, family_of, find_bundles, is_bundle,
                                         load_synthesizer)
from spectgan.models.versions import (CANDIDATES_FOLDER, DEFAULT_KEEP, GATE_KEY, GATE_REPORT_DIR, ModelStore,
                                      update_metadata)
from spectgan.counterfactual import LEARNED, physics
from spectgan.results import Derivation, GenerationResult, LevelPlane, ModelVersion, RegistrationSummary
from spectgan.serving.dicom_source import source_of
from spectgan.serving.request import (BASE_REFERENCE, FILE_WITH_SOURCE, GenerationRequest, TrainRequest,
                                      check_param_names, infer_client_config, infer_param_spec,
                                      parse_generation_request, parse_train_request)
from spectgan.serving.settings import COHORT_ENV, models_dir_from

if TYPE_CHECKING:
    from spectgan.evaluation.gate import GateVerdict

logger = logging.getLogger(__name__)

RUNS_FOLDER = "runs"  # <models_dir>/runs/<model>: the training run behind the latest retrained bundle
REGISTRATION_CACHE_SIZE = 32
RESULT_SUFFIX = ".nii.gz"
SERVER_THREADS_ENV = "SPECTGAN_SERVER_TORCH_THREADS"
# Torch intra-op (and SimpleITK filter) threads while serving: requests run in parallel instead (worker processes or
# threads). Measured on the shared 2-core machine under load: one 64 px generation took 17 ms (median) with 1 thread
# and 750 ms with 2, whose OpenMP barriers wait for a thread the scheduler has parked. SimpleITK's filters on the few
# planes a placed slice fills gain nothing from a second thread; the price is a registration (once per study and
# process) of 1.7 s instead of 0.75 s.
SERVER_TORCH_THREADS = 1


def select_models(selection: str | None, models_dir: Path) -> tuple[str, ...]:
    """The app conf ``models``: ``all`` (or empty) serves every bundle found in ``models_dir``; a comma-separated
    list names the models to serve (one without a bundle yet gets a train task that makes it)."""
    if selection is None or selection.strip().lower() in ("", "all"):
        return find_bundles(models_dir)
    names = [name.strip() for name in selection.split(",") if name.strip()]
    if not names:
        raise ValueError(f"conf models names no model: {selection!r}; use all or comma-separated bundle names "
                         f"(found in the models folder: {', '.join(find_bundles(models_dir)) or 'none'})")
    return tuple(dict.fromkeys(names))


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
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InvalidImageError(f"a reference study is one 3D volume of counts; this file has "
                                    f"{image.GetDimension()} dimensions and {image.GetNumberOfComponentsPerPixel()} "
                                    "value(s) per voxel")
        registration = register_to_template(image).require_ok()
        return RegisteredStudy(image, registration, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------- generation

class GenerationService:
    """Models, registrations and generation for the served models (thread-safe: the server runs requests in
    parallel threads).

    ``model_names``: the models served (default: every bundle found in ``models_dir``). A model's bundle is loaded
    through its family on every request (cached there per file modification time), so a retrained bundle is used
    without a restart; while a bundle folder is being replaced or cannot be read, the last one that loaded keeps
    serving.
    """

    def __init__(self, models_dir: str | Path | None = None, model_names: Sequence[str] | None = None):
        self.models_dir = Path(models_dir) if models_dir else models_dir_from()
        self.model_names = tuple(model_names) if model_names is not None else find_bundles(self.models_dir)
        self.registrations = RegistrationCache()
        self._last_loaded: dict[str, Synthesizer] = {}
        self._descriptions: dict[str, tuple[Synthesizer | None, dict]] = {}  # by model: (what it describes, it)
        self._lock = threading.Lock()

    # ---- models
    def bundle_dir(self, name: str) -> Path:
        return self.models_dir / name

    def _served(self, name: str) -> None:
        if name not in self.model_names:
            raise NotFoundError(f"unknown model {name!r}; this server has: {', '.join(self.model_names) or 'none'}")

    def has_bundle(self, name: str) -> bool:
        """True when the model's folder holds a bundle (or one was loaded before)."""
        self._served(name)
        return is_bundle(self.bundle_dir(name)) or name in self._last_loaded

    def synthesizer(self, name: str) -> Synthesizer:
        """The model's current bundle, loaded; UnavailableError when it has never loaded."""
        self._served(name)
        try:
            synthesizer = load_synthesizer(self.bundle_dir(name))
        except Exception as error:  # missing, mid-swap, damaged (sha256, JSON, torch): any reason means unusable
            reason = str(error) if isinstance(error, SpectganError) else f"{type(error).__name__}: {error}"
            with self._lock:
                previous = self._last_loaded.get(name)
            if previous is None:
                logger.warning("%s: no usable bundle: %s", name, reason)
                reason = without_folder(reason, self.bundle_dir(name))
                raise UnavailableError(f"model {name} has no usable bundle: {reason}. Train it with POST /train/"
                                       f"{name} or `spectgan train ... --export-bundle <models folder>/{name}` on "
                                       "the server") from None
            logger.warning("%s: keeping version %s while the bundle cannot be read (%s)", name,
                           previous.describe().get("version"), reason)
            return previous
        with self._lock:
            self._last_loaded[name] = synthesizer
        return synthesizer

    def levels(self, name: str) -> tuple[Level, ...]:
        """The levels of the model's bundle; every level for a model that has none yet."""
        return self.synthesizer(name).levels if self.has_bundle(name) else ALL_LEVELS

    def describe(self, name: str) -> dict:
        """What ``/info/`` shows for a model: its bundle (or None), its condition axes (the declaration front ends
        build their controls from), the params a client may send, the conditions (labels, for display).

        Made once per loaded bundle (MONAI Label asks for it on every request); do not modify the answer.
        """
        try:
            synthesizer = self.synthesizer(name)
        except UnavailableError:
            synthesizer = None
        with self._lock:
            made_for, description = self._descriptions.get(name, (None, None))
        if description is None or made_for is not synthesizer:
            description = self._description(name, synthesizer)
            with self._lock:
                self._descriptions[name] = (synthesizer, description)
        return description

    @staticmethod
    def _description(name: str, synthesizer: Synthesizer | None) -> dict:
        axes = synthesizer.condition_axes() if synthesizer else ConditionAxes.declare(valid_conditions(ALL_LEVELS))
        bundle = synthesizer.describe() if synthesizer else None
        params = infer_param_spec(axes, synthesizer.options() if synthesizer else ())
        return {"description": bundle["description"] if bundle else f"{name}: no trained bundle yet",
                "bundle": bundle, "axes": axes.to_list(), "params": params,
                "conditions": [condition.label for condition in axes.conditions()],
                "config": infer_client_config(params)}

    def request(self, name: str, params: Mapping[str, Any], strict: bool = False) -> GenerationRequest:
        """Validate an infer request's params against the model's current bundle (``parse_generation_request``);
        ``strict`` (the params a client sent, not MONAI Label's whole request): an unknown param is an error too
        (``check_param_names``)."""
        synthesizer = self.synthesizer(name)
        if strict:
            check_param_names(params, synthesizer)
        return parse_generation_request(name, params, synthesizer)

    def train_request(self, name: str, params: Mapping[str, Any]) -> TrainRequest:
        """Validate train params against the model (its levels; its family's defaults)."""
        self._served(name)
        family = family_of(self.bundle_dir(name))
        return parse_train_request(name, params, self.levels(name), family.default_iterations,
                                   family.default_batch_size)

    # ---- generation
    def canonical_slice(self, synthesizer: Synthesizer, request: GenerationRequest
                        ) -> tuple[sitk.Image, int, Condition]:
        """The generated canonical slice (template geometry, counts), the seed used and the condition it was made
        of: the request's, with the lesions it left out drawn for that seed (``Synthesizer.resolve``)."""
        seed = request.resolved_seed()
        condition = synthesizer.resolve([request.condition], seed)[0]
        counts = synthesizer.sample([condition], seed, request.options)
        return canonical_image(counts[0], condition.level), seed, condition

    @staticmethod
    def reference_slice(synthesizer: Synthesizer, request: GenerationRequest, study: RegisteredStudy
                        ) -> tuple[sitk.Image, int, Condition]:
        """``base=reference``: the reference patient's own canonical slice at the level, on the model's grid, changed
        to the request's condition by the request's method (``spectgan.counterfactual``: physics, or learned with
        this model inverted for the seed); the seed (the request's, else 0) and the condition."""
        matrix = int(synthesizer.describe()["image_size"])
        level, seed = request.condition.level, request.seed or 0
        counts = physics.patient_slice(study.image, study.registration, level, matrix)
        method = synthesizer.learned_counterfactual(seed) if request.method == LEARNED else physics.PHYSICS_METHOD
        if request.condition.pattern is Pattern.NORMAL:
            changed = method.remove(counts, request.removed, level)
        else:
            changed = method.add(counts, request.condition.lesions, level)
        return canonical_image(changed, level), seed, request.condition

    def reference_study(self, image_path: str | Path | None) -> tuple[RegisteredStudy, bool]:
        """The registered study behind an image path (cached); NotFoundError / InvalidRequestError for a missing /
        unusable one (named by its file name only)."""
        if image_path is None or not str(image_path).strip():
            raise NotFoundError("no reference image given; pass the image id of a study in the datastore")
        path = Path(image_path)
        try:
            return self.registrations.get(path)
        except OSError:
            raise NotFoundError(f"reference image {path.name!r} does not exist") from None
        except (InvalidImageError, RuntimeError) as error:  # RuntimeError: SimpleITK could not register it
            raise InvalidRequestError(f"reference image {path.name} cannot be used: "
                                      f"{without_folder(str(error), path.parent)}") from None

    def generate(self, request: GenerationRequest, image_path: str | Path) -> GenerationResult:
        """Register (cached), generate, place on the level's plane in the study, measure hemispheres."""
        started, started_unix = time.perf_counter(), time.time()
        synthesizer = self.synthesizer(request.model)
        bundle = synthesizer.describe()
        study, cached = self.reference_study(image_path)
        registered = time.perf_counter()
        derivation = None
        if request.base == BASE_REFERENCE:
            derivation = reference_derivation(request, image_path)
            canonical, seed, condition = self.reference_slice(synthesizer, request, study)
        else:
            canonical, seed, condition = self.canonical_slice(synthesizer, request)
        generated = time.perf_counter()
        placed = place_slice(canonical, study.registration, request.output_space, study.image)
        positioned = time.perf_counter()
        registration = study.registration
        plane_point, plane_normal = level_plane(registration, request.condition.level)
        result = GenerationResult.measured(
            placed, registration.midline(), condition=condition, seed=seed,
            model=ModelVersion(request.model, bundle["version"], bundle["sha256"], bundle["family"]),
            reference=Path(image_path).name, output_space=request.output_space, options=dict(request.options),
            level_plane=LevelPlane(tuple(plane_point.tolist()), tuple(plane_normal.tolist())),
            registration=RegistrationSummary(registration.correlation, registration.metric,
                                             registration.to_dict()["template_to_study"], cached),
            derivation=derivation)
        finished = time.perf_counter()
        return replace(result, timings_s={
            "registration": 0.0 if cached else study.seconds,
            "validation_and_lookup": registered - started - (0.0 if cached else study.seconds),
            "generation": generated - registered, "placement": positioned - generated,
            "statistics": finished - positioned, "total": finished - started,
            "interval_unix_s": [started_unix, started_unix + finished - started]})

    def generate_file(self, request: GenerationRequest, image_path: str | Path) -> tuple[Path, dict]:
        """``generate``, with the image written by ``write_result_image`` into ``private_results_dir()``: (its
        path, the result's JSON). The caller removes the file."""
        result = self.generate(request, image_path)
        return write_result_image(result.image, private_results_dir(), f"{request.model}_{result.name}"), \
            result.to_json()


def reference_derivation(request: GenerationRequest, image_path: str | Path) -> Derivation:
    """The derivation of a ``base=reference`` result: the method, the removed defect, the reference's DICOM identity
    (``spectgan.serving.dicom_source``; None for a NIfTI) and, for ``file_with=source``, its patient and study;
    InvalidRequestError when filing with the source is asked of a reference without DICOM identity."""
    source = source_of(image_path)
    if request.file_with == FILE_WITH_SOURCE and source is None:
        raise InvalidRequestError("file_with source needs a reference study that came as DICOM (a PACS series or a "
                                  "DICOM file) to file the result with; this reference is a NIfTI without a DICOM "
                                  "study: leave file_with empty or send synthetic")
    return Derivation(request.method, request.removed, source.series if source else None,
                      source.patient if source and request.file_with == FILE_WITH_SOURCE else None)


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


def write_result_image(image: sitk.Image, directory: str | Path, stem: str) -> Path:
    """Write a result image as a float32 NIfTI ``<directory>/<stem>_<random>.nii.gz`` (unique: concurrent requests
    may ask for the same thing; the caller removes it); returns its path."""
    handle, path = tempfile.mkstemp(suffix=RESULT_SUFFIX, prefix=f"{stem}_", dir=directory)
    os.close(handle)
    sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), path, True)
    return Path(path)


# ------------------------------------------------------------------------------------------------------ training

def check_cohort(cohort_dir: Path) -> None:
    """InvalidRequestError unless ``cohort_dir`` is a finished cohort with a manifest (named by its folder name)."""
    if not (cohort_dir / "cohort.json").is_file() or not (cohort_dir / "manifest.csv").is_file():
        logger.warning("no training cohort in %s", cohort_dir)
        raise InvalidRequestError(f"the server has no training cohort (its folder {cohort_dir.name!r} holds no "
                                  "finished cohort): make one on the server with `spectgan cohort --out FOLDER` and "
                                  f"point conf cohort / ${COHORT_ENV} at it")


def available_cohorts(default_dir: Path, cohorts_dir: Path) -> dict[str, Path]:
    """The cohorts a train request may name, by id: the default cohort (by its folder name) and every finished
    cohort in ``cohorts_dir`` (by its folder name)."""
    found = {folder.name: folder for folder in sorted(cohorts_dir.iterdir()) if folder.is_dir()
             and (folder / "cohort.json").is_file() and (folder / "manifest.csv").is_file()} \
        if cohorts_dir.is_dir() else {}
    return {default_dir.name: default_dir, **found}


def resolve_cohort(cohort_id: str | None, default_dir: Path, cohorts_dir: Path) -> Path:
    """The cohort a train request names by id (None: the default cohort), checked to be finished;
    InvalidRequestError listing the ids otherwise (an id is never a path)."""
    if cohort_id is None:
        check_cohort(default_dir)
        return default_dir
    cohorts = available_cohorts(default_dir, cohorts_dir)
    if cohort_id not in cohorts:
        raise InvalidRequestError(f"unknown cohort {cohort_id!r}: a cohort is named by the id of one the server "
                                  f"has (the folder names in its conf cohorts_dir), never by a path; available: "
                                  f"{', '.join(cohorts)}")
    check_cohort(cohorts[cohort_id])
    return cohorts[cohort_id]


def _changelog_note(request: TrainRequest, cohort_dir: Path, served: str | None, verdict: GateVerdict | None,
                    published: bool) -> str:
    start = f"from the served version {served}" if served and request.init == INIT_SERVED else "from fresh weights"
    note = f"retrained on cohort {cohort_dir.name} for {request.iterations} iterations {start}"
    if verdict is None:
        return note + "; no quality gate (no served version)"
    note += f"; quality gate {verdict.summary()}"
    if published and not verdict.passed:
        note += "; PUBLISHED BY FORCE (train param force) although the quality gate failed"
    return note


def retrain(name: str, models_dir: Path, cohort_dir: Path, request: TrainRequest, command: str,
            report: Callable[[str], None] = logger.info, keep_versions: int = DEFAULT_KEEP) -> dict:
    """Train a model on the cohort with the served bundle's recipe (through its family: ``SynthesizerFamily.retrain``)
    into a candidate, evaluate it beside the served version (``spectgan.evaluation.gate``) and publish it only if it
    passed or ``request.force`` says so; otherwise it stays a candidate with its report.

    The run lives in ``<models_dir>/runs/<name>`` (replaced by the next retraining); versions and candidates in
    ``spectgan.models.versions``' folders. A run stopped before publishing leaves the served bundle in place.
    Progress: ``report`` lines plus the training progress bar (stderr).
    """
    from spectgan.evaluation.gate import quality_gate  # the evaluation stack loads in the train task only

    store = ModelStore(models_dir, name, keep_versions)
    bundle_dir, run_dir = store.served_dir, models_dir / RUNS_FOLDER / name
    served = store.served_version()
    version = store.next_version()
    candidate_dir = store.candidate_dir(version)
    shutil.rmtree(run_dir, ignore_errors=True)
    levels = ",".join(level.value for level in request.levels)
    report(f"{name}: training version {version} for {request.iterations} iterations at batch {request.batch_size} "
           f"on {levels} from cohort {cohort_dir.name} (init {request.init}; run {RUNS_FOLDER}/{name} of the models "
           "folder)")
    started = time.perf_counter()
    family_of(bundle_dir).retrain(TrainPlan(cohort_dir, run_dir, bundle_dir, candidate_dir, name, version,
                                            request.levels, request.iterations, request.batch_size, command,
                                            request.init), progress=True)
    report(f"{name}: trained in {time.perf_counter() - started:.1f} s")
    verdict = None
    if served is not None:
        report(f"{name}: quality gate: evaluating version {version} beside the served version {served} on the "
               f"test split of cohort {cohort_dir.name}")
        started = time.perf_counter()
        verdict = quality_gate(candidate_dir, bundle_dir, cohort_dir, candidate_dir / GATE_REPORT_DIR)
        report(f"{name}: quality gate {verdict.summary()} ({time.perf_counter() - started:.1f} s)")
    published = verdict is None or verdict.passed or request.force
    gate = {**verdict.to_dict(), "forced": published and not verdict.passed} if verdict else None
    update_metadata(candidate_dir, {GATE_KEY: gate},
                    _changelog_note(request, cohort_dir, served, verdict, published))
    candidate = load_synthesizer(candidate_dir).describe()
    if published:
        store.publish(version)
        report(f"{name}: published version {version} (sha256 {candidate['sha256']})"
               + (" BY FORCE although the quality gate failed" if gate and gate["forced"] else ""))
    else:
        store.prune_candidates()
        report(f"{name}: version {version} not published: the quality gate failed on {', '.join(verdict.failed)}; "
               f"the served version {served} stays; the candidate and its report are kept in "
               f"{CANDIDATES_FOLDER}/{name}/{version} of the models folder (train again with force to publish)")
    serving = load_synthesizer(bundle_dir).describe()
    return {"model": name, "version": version, "sha256": candidate["sha256"], "published": published,
            "served": {"version": serving["version"], "sha256": serving["sha256"]}, "gate": gate,
            "iterations": request.iterations, "batch": request.batch_size, "levels": levels,
            "cohort": cohort_dir.name, "init": request.init, "run": f"{RUNS_FOLDER}/{name}"}
