"""Simulated 123I-IMP cohorts at the paper's case counts (train + held-out test) and 3D reference studies.

Every slice is one simulated patient: ``spectgan.simulation.phantom`` draws the anatomy, perfusion and defects, and
``spectgan.simulation.acquisition`` acquires and reconstructs it. Work is split in fixed chunks of slices: a chunk whose files
all exist is done, so an interrupted run continues where it stopped and a finished cohort is reused.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from spectgan.files import atomic_write_bytes, atomic_write_image
from spectgan.simulation.acquisition import acquire
from spectgan.simulation.protocol import PLANE_HALF_DEPTH_MM, PLANE_STEP_MM, axial_profile, system_fwhm_mm
from spectgan.simulation.protocol import DEFAULT_MATRIX, protocol_for
from spectgan.cohorts.format import (CohortRecord, compute_count_scale, finished_cohort, load_split, read_cohort_info,
                                     write_cohort_info, write_manifest)
from spectgan.conditions import PAPER_COUNTS, Condition, Lesion, Level, Pattern, Side, takes_side
from spectgan.figures import pyplot, save_figure
from spectgan.geometry.registration import BRAIN_CENTRE_MM, pose_to_dict, similarity_pose
from spectgan.simulation.phantom import Defect, Subject, perfusion_phantom, random_subject
from spectgan.geometry.roi import TEMPLATE_MIDLINE, hemisphere_stats
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_grid, canonical_image, pixel_spacing

SIMULATOR_VERSION = "2"  # 2: the manifest records a bilateral defect's territory and severity per side
CHUNK_SIZE = 32  # slices reconstructed together (one pytomography stack)
SPLIT_KEYS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SliceJob:
    """One slice to simulate: where it goes and the seed that makes it."""

    split: str
    index: int
    condition: Condition
    seed: int

    @property
    def id(self) -> str:
        return f"{self.split}_{self.index:04d}"

    @property
    def file(self) -> str:
        return f"{self.split}/{self.id}.nii.gz"


def cohort_jobs(seed: int, scale: float = 1.0) -> list[SliceJob]:
    """All slices of a cohort in a fixed order: per split, the paper's counts per level x pattern (times scale).
    Unilateral cases alternate left and right."""
    jobs = []
    for split, split_key in SPLIT_KEYS.items():
        index = 0
        for (level, pattern), count in PAPER_COUNTS.items():
            for case in range(int(round(count * scale))):
                side = (Side.LEFT, Side.RIGHT)[case % 2] if takes_side(pattern) else None
                case_seed = int(np.random.SeedSequence([seed, split_key, index]).generate_state(1)[0])
                jobs.append(SliceJob(split, index, Condition(level, pattern, side), case_seed))
                index += 1
    return jobs


VISIBLE_ASYMMETRY = 0.04  # |1 - LR| of the noise-free slice below which a unilateral defect is not called


def _visible(condition: Condition, activity: np.ndarray) -> bool:
    """A unilateral case is labelled so only when its noise-free slice shows the asymmetry on its side (as a
    reader would label it); other patterns always qualify."""
    if not takes_side(condition.pattern):
        return True
    lr = hemisphere_stats(canonical_image(activity, condition.level), TEMPLATE_MIDLINE).lr
    return lr < 1 - VISIBLE_ASYMMETRY if condition.side is Side.LEFT else lr > 1 + VISIBLE_ASYMMETRY


def subject_lesions(subject: Subject) -> tuple[Lesion, ...]:
    """A simulated subject's defects as the lesions its manifest row records (left before right)."""
    order = list(Side)
    return tuple(Lesion(defect.side, defect.territory, round(defect.severity, 4))
                 for defect in sorted(subject.defects, key=lambda defect: order.index(defect.side)))


def simulate_slices(jobs: list[SliceJob], matrix: int) -> tuple[np.ndarray, list[CohortRecord]]:
    """Phantoms, acquisition and reconstruction of a chunk: counts [N, H, W] and the slices' manifest rows."""
    weights = axial_profile(PLANE_STEP_MM, SLAB_THICKNESS_MM, PLANE_HALF_DEPTH_MM)
    activities, mus, subjects, noise_seeds = [], [], [], []
    for job in jobs:
        rng = np.random.default_rng(job.seed)
        grid = canonical_grid(job.condition.level, matrix, PLANE_HALF_DEPTH_MM, PLANE_STEP_MM)
        while True:
            subject = random_subject(job.condition, rng)
            activity, mu = perfusion_phantom(subject, grid)
            slab = np.tensordot(weights, activity, axes=1)
            if _visible(job.condition, slab):
                break
        activities.append(slab)
        mus.append(mu[len(weights) // 2])
        subjects.append(subject)
        noise_seeds.append(int(rng.integers(2**31)))
    counts = acquire(np.stack(activities), np.stack(mus), pixel_spacing(matrix), SLAB_THICKNESS_MM,
                     protocol_for(matrix), np.array([s.count_level for s in subjects]), noise_seeds)
    records = [CohortRecord(job.split, job.id, job.condition, subject_lesions(subject), job.file)
               for job, subject in zip(jobs, subjects)]
    return counts, records


def _chunk_file(out: Path, number: int) -> Path:
    return Path(out) / "chunks" / f"chunk_{number:04d}.json"


def run_chunk(number: int, chunk: list[SliceJob], matrix: int, out: str) -> int:
    """Worker: simulate a chunk, write its slices atomically, then its manifest rows (which mark it done)."""
    import torch

    torch.set_num_threads(1)
    counts, records = simulate_slices(chunk, matrix)
    for record, array in zip(records, counts):
        atomic_write_image(canonical_image(array, record.condition.level, matrix), Path(out) / record.file)
    atomic_write_bytes(_chunk_file(Path(out), number), json.dumps([r.to_row() for r in records]).encode())
    return len(chunk)


def _chunk_records(out: Path, n_chunks: int) -> list[CohortRecord]:
    rows = [row for number in range(n_chunks) for row in json.loads(_chunk_file(out, number).read_text())]
    return [CohortRecord.from_row(row) for row in rows]


def build_cohort(out: Path, seed: int = 0, matrix: int = DEFAULT_MATRIX, scale: float = 1.0, workers: int | None = None,
                 progress: bool = True) -> Path:
    """Simulate (or reuse, or continue) a cohort in ``out``; returns ``out``."""
    out = Path(out)
    protocol_for(matrix)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    key = {"seed": seed, "matrix": matrix, "scale": scale, "simulator_version": SIMULATOR_VERSION}
    if finished_cohort(out, key, progress):
        return out
    out.mkdir(parents=True, exist_ok=True)
    jobs = cohort_jobs(seed, scale)
    write_cohort_info(out, {"format": "spectgan-cohort", "source": "simulated", "key": key, "state": "building"})
    chunks = [jobs[i:i + CHUNK_SIZE] for i in range(0, len(jobs), CHUNK_SIZE)]
    pending = [number for number in range(len(chunks)) if not _chunk_file(out, number).is_file()]
    workers = workers or min(os.cpu_count() or 1, 2)
    started = time.perf_counter()
    with tqdm(total=len(jobs), initial=len(jobs) - sum(len(chunks[n]) for n in pending), unit="slice",
              desc="cohort", disable=not progress) as bar, ProcessPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(run_chunk, pending, [chunks[n] for n in pending], [matrix] * len(pending),
                             [str(out)] * len(pending)):
            bar.update(done)
    write_manifest(out, _chunk_records(out, len(chunks)))
    train, _ = load_split(out, "train")
    write_cohort_info(out, {
        "format": "spectgan-cohort", "source": "simulated", "key": key, "state": "complete",
        "matrix": matrix, "pixel_spacing_mm": pixel_spacing(matrix), "slab_thickness_mm": SLAB_THICKNESS_MM,
        "count_scale": compute_count_scale(train), "seed": seed, "scale": scale,
        "counts": {split: sum(job.split == split for job in jobs) for split in SPLIT_KEYS},
        "acquisition": dict(protocol_for(matrix).to_dict(), system_fwhm_mm=round(system_fwhm_mm(), 2)),
        "simulation_seconds": round(time.perf_counter() - started, 1),
    })
    return out


# --- reference studies --------------------------------------------------------------------------------------------

STUDY_MATRIX = 64
STUDY_SPACING_MM = 3.5
STUDY_PLANES = 48

# (name, pattern, side, storage orientation): storage is how the volume's array is laid out, not the anatomy
STUDY_SPECS = (
    ("study_normal_axial", Pattern.NORMAL, None, "identity"),
    ("study_unilateral_left_flipped", Pattern.UNILATERAL, Side.LEFT, "flip_x"),
    ("study_unilateral_right_ras", Pattern.UNILATERAL, Side.RIGHT, "ras"),
    ("study_bilateral_oblique", Pattern.BILATERAL, None, "oblique"),
    ("study_unilateral_left_oblique", Pattern.UNILATERAL, Side.LEFT, "oblique"),
    ("study_normal_flipped", Pattern.NORMAL, None, "flip_x"),
)


def random_pose(rng: np.random.Generator, max_degrees: float = 12.0, max_mm: float = 15.0
                ) -> sitk.Similarity3DTransform:
    """A head pose: template -> study similarity (rotation about the brain centre, shift; scale 1)."""
    return similarity_pose(rng.uniform(-max_degrees, max_degrees, 3), rng.uniform(-max_mm, max_mm, 3))


def _storage_grid(volume: sitk.Image, orientation: str, rng: np.random.Generator) -> sitk.Image:
    """The same physical content stored with another direction matrix. Axis flips permute the array exactly;
    an oblique storage resamples (linear) onto a rotated grid over the same field of view."""
    if orientation == "identity":
        return volume
    if orientation in ("flip_x", "ras"):  # array axes reversed, direction and origin follow: content unchanged
        return sitk.DICOMOrient(volume, "RPS" if orientation == "flip_x" else "RAS")
    centre = volume.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in volume.GetSize()])
    rotation = sitk.Euler3DTransform(centre, *np.deg2rad([rng.uniform(8, 15), rng.uniform(-10, 10),
                                                          rng.uniform(20, 30)]))
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    oblique = sitk.Image(volume.GetSize(), sitk.sitkFloat32)
    oblique.SetSpacing(volume.GetSpacing())
    oblique.SetDirection(tuple(direction.ravel()))
    half = direction @ ((np.asarray(volume.GetSize()) - 1) / 2 * np.asarray(volume.GetSpacing()))
    oblique.SetOrigin(tuple(np.asarray(centre) - half))
    return sitk.Resample(volume, oblique, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def simulate_study(pattern: Pattern, side: Side | None, pose: sitk.Similarity3DTransform, seed: int
                   ) -> tuple[sitk.Image, dict]:
    """A 3D reference study of the template anatomy in a head pose, through the same acquisition.
    Defects are MCA territories (cut by all three levels). Returns the axial scanner volume and its subject."""
    rng = np.random.default_rng(seed)
    subject = random_subject(Condition(Level.BG, pattern, side), rng)
    defects = tuple(Defect("MCA", d.side, d.severity) for d in subject.defects)
    subject = replace(subject, defects=defects, diaschisis=subject.diaschisis if defects else 0.0)
    scanner = sitk.Image(STUDY_MATRIX, STUDY_MATRIX, STUDY_PLANES, sitk.sitkFloat32)
    scanner.SetSpacing((STUDY_SPACING_MM,) * 3)
    centre = np.asarray(pose.TransformPoint(BRAIN_CENTRE_MM))
    scanner.SetOrigin(tuple(centre - (np.asarray(scanner.GetSize()) - 1) / 2 * STUDY_SPACING_MM))
    activity, mu = perfusion_phantom(subject, scanner, to_template=pose.GetInverse())
    protocol = protocol_for(STUDY_MATRIX)
    activity = ndimage.gaussian_filter1d(activity, system_fwhm_mm() / 2.3548 / STUDY_SPACING_MM, axis=0)
    counts = acquire(activity, mu, STUDY_SPACING_MM, STUDY_SPACING_MM, protocol,
                     np.full(STUDY_PLANES, subject.count_level),
                     [int(v) for v in rng.integers(2**31, size=STUDY_PLANES)])
    # the in-plane post-filter of acquire(), completed along z for a 3D study
    counts = ndimage.gaussian_filter1d(counts, protocol.post_filter_fwhm_mm / 2.3548 / STUDY_SPACING_MM, axis=0)
    volume = sitk.GetImageFromArray(counts)
    volume.CopyInformation(scanner)
    return volume, subject.to_dict()


def build_studies(out: Path, seed: int = 0, progress: bool = True) -> list[Path]:
    """Write the reference studies (NIfTI + JSON sidecar with the true pose) for the MONAI Label datastore."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (name, pattern, side, orientation) in enumerate(tqdm(STUDY_SPECS, desc="studies", unit="study",
                                                                     disable=not progress)):
        rng = np.random.default_rng([seed, number])
        pose = random_pose(rng)
        volume, subject = simulate_study(pattern, side, pose, int(rng.integers(2**31)))
        stored = _storage_grid(volume, orientation, rng)
        sidecar = {
            "id": name, "pattern": pattern.value, "side": side.value if side else None,
            "territory": "MCA" if pattern is not Pattern.NORMAL else None,
            "storage_orientation": orientation, "direction": list(stored.GetDirection()),
            "template_to_study": pose_to_dict(pose),
            "subject": subject, "seed": seed, "simulator_version": SIMULATOR_VERSION,
            "note": "synthetic study made by spectgan (no patient data)",
        }
        path = out / f"{name}.nii.gz"
        atomic_write_image(stored, path)
        atomic_write_bytes(out / f"{name}.json", (json.dumps(sidecar, indent=2) + "\n").encode())
        written.append(path)
    return written


# --- preview, command line -------------------------------------------------------------------------------------

PREVIEW_COLUMNS = ((Pattern.NORMAL, None), (Pattern.UNILATERAL, Side.LEFT), (Pattern.UNILATERAL, Side.RIGHT),
                   (Pattern.BILATERAL, None))


def draw_preview(cohort_dir: Path, png: Path, split: str = "train", per_cell: int = 2) -> Path:
    """A grid of examples: rows are levels, columns normal / unilateral left / unilateral right / bilateral.
    Radiological display: the patient's right on the image's left (marked R and L), anterior at the top."""
    plt = pyplot()
    arrays, records = load_split(cohort_dir, split)
    figure, axes = plt.subplots(len(Level), len(PREVIEW_COLUMNS) * per_cell,
                                figsize=(1.9 * len(PREVIEW_COLUMNS) * per_cell, 2.1 * len(Level)), squeeze=False)
    for row, level in enumerate(Level):
        vmax = float(np.percentile([a for a, r in zip(arrays, records) if r.condition.level is level], 99.8))
        for column, (pattern, side) in enumerate(PREVIEW_COLUMNS):
            matches = [i for i, r in enumerate(records) if r.condition == Condition(level, pattern, side)]
            for k in range(per_cell):
                axis = axes[row, column * per_cell + k]
                axis.set_xticks([]), axis.set_yticks([])
                if k >= len(matches):
                    axis.set_facecolor("0.85")
                    axis.text(0.5, 0.5, "no cases", ha="center", va="center", transform=axis.transAxes, fontsize=7)
                    continue
                record = records[matches[k]]
                axis.imshow(arrays[matches[k]], cmap="inferno", vmin=0, vmax=vmax)
                axis.text(0.02, 0.02, "R", color="cyan", transform=axis.transAxes, fontsize=7)
                axis.text(0.93, 0.02, "L", color="cyan", transform=axis.transAxes, fontsize=7)
                axis.set_title(f"{record.condition.label}\n{_lesion_caption(record)}", fontsize=6)
    figure.suptitle(f"{Path(cohort_dir).name}: {split} split (one count window per level; R = patient right)",
                    fontsize=9)
    figure.tight_layout()
    return save_figure(figure, png, dpi=90, tight=False)


def _lesion_caption(record: CohortRecord) -> str:
    """``MCA 31%`` (per side for a bilateral defect: ``L MCA 31% R ACA 22%``), ``-`` for a normal slice."""
    parts = [(f"{lesion.side.value[0].upper()} " if len(record.lesions) > 1 else "")
             + f"{lesion.territory or '?'} " + ("?" if lesion.severity is None else f"{lesion.severity:.0%}")
             for lesion in record.lesions]
    return " ".join(parts) or "-"


def add_cohort_command(subparsers) -> None:
    parser = subparsers.add_parser("cohort", help="simulate a 123I-IMP cohort at the paper's counts (train + test)")
    parser.add_argument("--out", required=True, type=Path, help="cohort folder (created; reused when complete)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--matrix", type=int, choices=(128, 64), default=128)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the paper's counts by K")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--preview", type=Path, help="write a PNG grid of examples per level x pattern")
    parser.set_defaults(func=_run_cohort)


def _run_cohort(args) -> int:
    out = build_cohort(args.out, args.seed, args.matrix, args.scale, args.workers)
    info = read_cohort_info(out)
    print(f"cohort: {out} ({info['counts']['train']} train + {info['counts']['test']} test slices, "
          f"{info['matrix']}x{info['matrix']}, count scale {info['count_scale']:.1f})")
    if args.preview:
        print(f"preview: {draw_preview(out, args.preview)}")
    return 0


def add_studies_command(subparsers) -> None:
    parser = subparsers.add_parser("studies", help="simulate 3D reference studies in random poses (datastore)")
    parser.add_argument("--out", type=Path, default=Path("sample_data/studies"))
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=lambda args: print("\n".join(map(str, build_studies(args.out, args.seed)))))

