"""A model's versions in the models folder: the served bundle, every published version, and the candidates the
quality gate kept back (any family: only folders and ``configs/metadata.json`` are touched).

    <models_dir>/<name>/                      the served bundle: what every request loads (replaced atomically)
    <models_dir>/versions/<name>/<version>/   published versions (the latest ``keep``; the served one stays)
    <models_dir>/candidates/<name>/<version>/ trained but not published, with the gate's report (the latest ``keep``)

Each version lists its evaluation (``EvaluationSummary``): the quality gate's verdict when it was gated
(``docs/gate/``), else its bundle's fidelity report (``spectgan evaluate --out <bundle>/docs/evaluation``), whose
full report the server serves by model and version (``ModelStore.report``).

Publishing and rolling back copy a version over the served folder by renames, so a running server loads the new
version on its next request (bundles are cached per file modification time) and never sees half a bundle. Both hold
a lock file, as the train task runs in a process of its own.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from spectgan.errors import NotFoundError, SpectganError
from spectgan.models.synthesizer import METADATA_FILE, bundle_metadata, is_bundle

VERSIONS_FOLDER = "versions"
CANDIDATES_FOLDER = "candidates"
DEFAULT_KEEP = 5
FIRST_VERSION = "1.0.0"
GATE_KEY = "quality_gate"  # metadata: the gate's verdict on this version (``spectgan.evaluation.gate``)
SERVED, PUBLISHED, CANDIDATE = "served", "published", "candidate"
GATE_REPORT_DIR = "docs/gate"  # the quality gate's evaluation of a retrained bundle (report, figures)
EVALUATION_DIR = "docs/evaluation"  # a bundle's fidelity report (``spectgan evaluate``), replaced by a new export
REPORT_FILE, EVALUATION_FILE, FIGURES_FOLDER = "report.md", "evaluation.json", "figures"
GATE_SOURCE, EVALUATION_SOURCE = "quality gate", "fidelity report"  # where an EvaluationSummary comes from


@dataclass(frozen=True)
class EvaluationSummary:
    """A version's evaluation in one line and its key numbers, as the server lists it and its clients show it."""

    source: str  # GATE_SOURCE (the verdict of the gate that judged it) or EVALUATION_SOURCE (its fidelity report)
    passed: bool | None  # the gate's verdict; None for a fidelity report (its targets are counted in ``summary``)
    summary: str
    measures: dict[str, float]  # c2st (accuracy; 0.5: indistinguishable), tstr, trtr, accuracies, memorization, ...
    report: bool  # the bundle holds the full report (``ModelStore.report``)


def report_dir(bundle_dir: Path, metadata: dict) -> Path:
    """Where a bundle's evaluation lies: the gate's folder when the gate judged it, else its fidelity report's."""
    return Path(bundle_dir) / (GATE_REPORT_DIR if metadata.get(GATE_KEY) else EVALUATION_DIR)


def _gate_summary(gate: dict, has_report: bool) -> EvaluationSummary:
    summary = str(gate.get("summary", "")) + ("; published by force" if gate.get("forced") else "")
    measures = {measure["name"]: measure["candidate"] for measure in gate.get("measures", [])}
    return EvaluationSummary(GATE_SOURCE, bool(gate.get("passed")), summary, measures, has_report)


def _evaluation_summary(evaluation: dict, name: str, has_report: bool) -> EvaluationSummary | None:
    """The key numbers of bundle ``name`` in a fidelity report's ``evaluation.json`` (None when it has none)."""
    numbers = evaluation.get("bundles", {}).get(name)
    if numbers is None:
        return None
    accuracy = numbers.get("conditional_accuracy", {})
    measures = {"c2st": numbers.get("c2st_accuracy"), "tstr": numbers.get("tstr"), "trtr": numbers.get("trtr"),
                "level_accuracy": accuracy.get("level"), "side_accuracy": accuracy.get("side"),
                "memorization": numbers.get("memorization_fraction")}
    measures = {key: value for key, value in measures.items() if value is not None}
    targets = numbers.get("targets", [])
    low, high = numbers.get("c2st", {}).get("ci95", (None, None))
    parts = [f"{sum(bool(target.get('passed')) for target in targets)} of {len(targets)} fidelity targets met"]
    if "c2st" in measures:
        parts.append(f"C2ST {measures['c2st']:.3f}" + (f" (95 % CI {low:.3f}-{high:.3f})" if high is not None else ""))
    if "tstr" in measures and "trtr" in measures:
        parts.append(f"TSTR {measures['tstr']:.3f} against TRTR {measures['trtr']:.3f}")
    if "memorization" in measures:
        parts.append(f"memorization {100 * measures['memorization']:.1f} %")
    cohort = Path(str(evaluation.get("cohort", {}).get("path", "?"))).name
    summary = (f"{evaluation.get('mode', '?')} evaluation on {numbers.get('n_real', '?')} held-out slices of cohort "
               f"{cohort}: " + "; ".join(parts))
    return EvaluationSummary(EVALUATION_SOURCE, None, summary, measures, has_report)


def evaluation_summary(bundle_dir: Path, metadata: dict) -> EvaluationSummary | None:
    """The bundle's evaluation: the gate's verdict, else the numbers of its fidelity report; None when it has
    neither."""
    folder = report_dir(bundle_dir, metadata)
    has_report = (folder / REPORT_FILE).is_file()
    if metadata.get(GATE_KEY):
        return _gate_summary(metadata[GATE_KEY], has_report)
    if not (folder / EVALUATION_FILE).is_file():
        return None
    return _evaluation_summary(json.loads((folder / EVALUATION_FILE).read_text()), str(metadata.get("name")),
                               has_report)


@dataclass(frozen=True)
class VersionEntry:
    """One version of a model as the server lists it and the client reads it."""

    model: str
    version: str
    sha256: str
    state: str  # SERVED, PUBLISHED (kept for a rollback) or CANDIDATE (not published)
    exported: str | None
    cohort: str | None  # the training cohort's name
    iterations: int | None
    note: str  # its changelog entry
    gate: dict | None  # the quality gate's verdict (passed, failed, summary, report, forced); None: not gated
    evaluation: EvaluationSummary | None  # the gate's verdict or the fidelity report's numbers; None: neither

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> "VersionEntry":
        values = {name: entry.get(name) for name in cls.__dataclass_fields__}
        if values["evaluation"] is not None:
            values["evaluation"] = EvaluationSummary(**values["evaluation"])
        return cls(**values)

    @classmethod
    def of_bundle(cls, model: str, bundle_dir: Path, state: str) -> "VersionEntry":
        metadata = bundle_metadata(bundle_dir)
        training = metadata.get("training", {})
        version = str(metadata.get("version"))
        return cls(model, version, str(metadata.get("weights_sha256")), state, metadata.get("exported"),
                   training.get("cohort_name") or training.get("cohort", {}).get("source"), training.get("iterations"),
                   str(metadata.get("changelog", {}).get(version, "")), metadata.get(GATE_KEY),
                   evaluation_summary(bundle_dir, metadata))


def version_key(version: str) -> tuple:
    """A version's sort key (numbers compared as numbers; anything else sorts first)."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def replace_folder(staging: Path, target: Path) -> None:
    """Move a finished staging folder onto ``target`` (renames only; an old folder is removed afterwards)."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, retired / target.name)
        os.replace(staging, target)
        shutil.rmtree(retired)
    else:
        os.replace(staging, target)


def copy_folder(source: Path, target: Path) -> None:
    """Copy ``source`` onto ``target`` atomically (staged beside it; fresh modification times)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging."))
    try:
        shutil.copytree(source, staging / "copy", copy_function=shutil.copy)
        os.replace(staging / "copy", staging / "bundle")
        replace_folder(staging / "bundle", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def update_metadata(bundle_dir: Path, changes: dict, note: str) -> None:
    """Add ``changes`` to a bundle's metadata and ``note`` to its changelog entry (atomic write)."""
    metadata = bundle_metadata(bundle_dir)
    version = str(metadata.get("version"))
    changelog = metadata.setdefault("changelog", {})
    changelog[version] = f"{changelog[version]}; {note}" if changelog.get(version) else note
    metadata.update(changes)
    path = Path(bundle_dir) / METADATA_FILE
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".metadata.")
    with os.fdopen(handle, "w") as stream:
        stream.write(json.dumps(metadata, indent=2) + "\n")
    os.chmod(staging, 0o644)
    os.replace(staging, path)


class ModelStore:
    """The versions of model ``name`` in ``models_dir``, keeping the latest ``keep`` published versions and
    candidates."""

    def __init__(self, models_dir: Path, name: str, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise SpectganError(f"keep_versions must be at least 1, got {keep}")
        self.name, self.keep = name, keep
        self.served_dir = Path(models_dir) / name
        self.versions_dir = Path(models_dir) / VERSIONS_FOLDER / name
        self.candidates_dir = Path(models_dir) / CANDIDATES_FOLDER / name

    def candidate_dir(self, version: str) -> Path:
        return self.candidates_dir / version

    def served_version(self) -> str | None:
        return str(bundle_metadata(self.served_dir).get("version")) if is_bundle(self.served_dir) else None

    def _folders(self, parent: Path) -> dict[str, Path]:
        if not parent.is_dir():
            return {}
        return {folder.name: folder for folder in parent.iterdir()
                if not folder.name.startswith(".") and is_bundle(folder)}

    def next_version(self) -> str:
        """The highest version served, published or trained, with its last number increased (``FIRST_VERSION``
        when there is none)."""
        known = [*self._folders(self.versions_dir), *self._folders(self.candidates_dir), self.served_version()]
        numbered = sorted((version_key(v) for v in known if v and version_key(v)), reverse=True)
        if not numbered:
            return FIRST_VERSION
        return ".".join(str(number) for number in numbered[0][:-1] + (numbered[0][-1] + 1,))

    @contextlib.contextmanager
    def _locked(self):
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with open(self.versions_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _archive_served(self) -> None:
        """Keep the served bundle among the versions (a bundle shipped or published before versions were kept)."""
        version = self.served_version()
        if version is not None and version not in self._folders(self.versions_dir):
            copy_folder(self.served_dir, self.versions_dir / version)

    def publish(self, version: str) -> VersionEntry:
        """Serve candidate ``version`` (kept among the versions) and drop the oldest versions beyond ``keep``."""
        with self._locked():
            self._archive_served()
            candidate = self.candidate_dir(version)
            os.replace(candidate, self.versions_dir / version)
            copy_folder(self.versions_dir / version, self.served_dir)
            self._prune()
        return VersionEntry.of_bundle(self.name, self.served_dir, SERVED)

    def rollback(self, version: str) -> VersionEntry:
        """Serve the published ``version`` again; NotFoundError naming the versions there are."""
        with self._locked():
            self._archive_served()
            published = self._folders(self.versions_dir)
            if version not in published:
                raise NotFoundError(f"model {self.name} has no published version {version!r}; published: "
                                    f"{', '.join(sorted(published, key=version_key)) or 'none'}")
            copy_folder(published[version], self.served_dir)
        return VersionEntry.of_bundle(self.name, self.served_dir, SERVED)

    def _prune(self) -> None:
        served = self.served_version()
        for parent in (self.versions_dir, self.candidates_dir):
            folders = sorted(self._folders(parent).items(), key=lambda item: version_key(item[0]), reverse=True)
            for version, folder in folders[self.keep:]:
                if version != served:
                    shutil.rmtree(folder)

    def prune_candidates(self) -> None:
        """Drop the oldest candidates beyond ``keep``."""
        with self._locked():
            self._prune()

    def _listed(self) -> list[tuple[str, Path]]:
        """(state, folder) of the served version, then the published ones and the candidates; a published copy of the
        served version (the same version and weights) is left out."""
        served = bundle_metadata(self.served_dir) if is_bundle(self.served_dir) else None
        listed = [(SERVED, self.served_dir)] if served else []
        for state, parent in ((PUBLISHED, self.versions_dir), (CANDIDATE, self.candidates_dir)):
            for version, folder in self._folders(parent).items():
                if not (served and state == PUBLISHED and version == str(served.get("version"))
                        and bundle_metadata(folder).get("weights_sha256") == served.get("weights_sha256")):
                    listed.append((state, folder))
        return listed

    def list(self) -> list[VersionEntry]:
        """The served version, the published ones and the candidates, newest first."""
        entries = [VersionEntry.of_bundle(self.name, folder, state) for state, folder in self._listed()]
        return sorted(entries, key=lambda entry: version_key(entry.version), reverse=True)

    def _folder(self, version: str) -> Path:
        """The bundle folder of a listed version (the served one first); NotFoundError naming the listed versions."""
        folders = {}
        for _, folder in reversed(self._listed()):
            folders[str(bundle_metadata(folder).get("version"))] = folder
        if version not in folders:
            raise NotFoundError(f"model {self.name} has no version {version!r}; it has: "
                                f"{', '.join(sorted(folders, key=version_key)) or 'none'}")
        return folders[version]

    def report(self, version: str) -> Path:
        """The full evaluation report (Markdown, figures in ``FIGURES_FOLDER`` beside it) of a listed version: the
        quality gate's, else its fidelity report; NotFoundError when the version or its report does not exist."""
        folder = self._folder(version)
        report = report_dir(folder, bundle_metadata(folder)) / REPORT_FILE
        if not report.is_file():
            raise NotFoundError(f"version {version} of model {self.name} has no evaluation report (neither the "
                                f"quality gate's nor a fidelity report of `spectgan evaluate`)")
        return report

    def report_figure(self, version: str, name: str) -> Path:
        """A figure of a version's report, by its file name among the report's figures (never a path);
        NotFoundError otherwise."""
        figures = self.report(version).parent / FIGURES_FOLDER
        available = {figure.name: figure for figure in figures.glob("*.png")} if figures.is_dir() else {}
        if name not in available:
            raise NotFoundError(f"the report of version {version} of model {self.name} has no figure {name!r}")
        return available[name]
