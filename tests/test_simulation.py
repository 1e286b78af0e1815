"""The simulated cohort is plausible perfusion SPECT, not only a file generator."""
import json
from dataclasses import replace
from collections import defaultdict

import numpy as np
import pytest
import SimpleITK as sitk
from kill_part_way import kill_after_first_chunk

from spectgan.simulation.acquisition import acquire
from spectgan.simulation.protocol import protocol_for
from spectgan.cohorts.simulated import build_cohort, cohort_jobs, simulate_slices
from spectgan.cohorts.format import load_split, read_cohort_info, read_manifest
from spectgan.conditions import PAPER_COUNTS, Condition, Level, Pattern, Side
from spectgan.errors import SpectganError
from spectgan.simulation.phantom import TERRITORIES_AT_LEVEL, perfusion_phantom, random_subject
from spectgan.geometry.roi import TEMPLATE_MIDLINE, hemisphere_stats
from spectgan.geometry.template import canonical_grid, canonical_image, mni_maps


@pytest.fixture(scope="module")
def cohort_stats(small_cohort):
    """Hemisphere statistics of every slice of the small cohort, by condition label."""
    stats = defaultdict(list)
    for split in ("train", "test"):
        arrays, records = load_split(small_cohort, split)
        for array, record in zip(arrays, records):
            stats[record.condition].append(hemisphere_stats(canonical_image(array, record.condition.level),
                                                            TEMPLATE_MIDLINE))
    return stats


def test_manifest_has_the_paper_counts_per_split(small_cohort):
    records = read_manifest(small_cohort)
    info = read_cohort_info(small_cohort)
    for split in ("train", "test"):
        for (level, pattern), count in PAPER_COUNTS.items():
            found = [r for r in records if r.split == split and r.condition.level is level
                     and r.condition.pattern is pattern]
            assert len(found) == round(count * 0.1), (split, level, pattern)
    assert info["count_scale"] > 0 and info["matrix"] == 64
    assert len({r.id for r in records}) == len(records)
    for record in records:
        image = sitk.ReadImage(str(small_cohort / record.file))
        assert image.GetSize() == (64, 64, 1)
        if record.condition.pattern is Pattern.NORMAL:
            assert record.lesions == ()
        else:  # one lesion per affected hemisphere, each with its own territory and severity
            sides = [record.condition.side] if record.condition.side else [Side.LEFT, Side.RIGHT]
            assert [lesion.side for lesion in record.lesions] == sides
            for lesion in record.lesions:
                assert lesion.territory in TERRITORIES_AT_LEVEL[record.condition.level]
                assert 0.15 <= lesion.severity <= 0.5


def test_normals_are_symmetric_and_unilateral_defects_on_their_side(cohort_stats):
    normal_lr = [s.lr for c, group in cohort_stats.items() if c.pattern is Pattern.NORMAL for s in group]
    assert abs(np.mean(normal_lr) - 1.0) <= 0.05
    for condition, group in cohort_stats.items():
        if condition.side is Side.LEFT:
            assert all(s.lr < 1 for s in group), condition
        if condition.side is Side.RIGHT:
            assert all(s.lr > 1 for s in group), condition


def test_bilateral_defects_lower_mean_counts(cohort_stats):
    for level in (Level.BG, Level.COR):
        normal = np.mean([s.mc for s in cohort_stats[Condition(level, Pattern.NORMAL)]])
        bilateral = np.mean([s.mc for s in cohort_stats[Condition(level, Pattern.BILATERAL)]])
        assert bilateral < normal, level


def test_grey_white_contrast_before_and_after_acquisition(small_cohort):
    grid = canonical_grid(Level.BG, 64)
    grey = sitk.GetArrayFromImage(sitk.Resample(mni_maps()["gm"], grid))[0]
    white = sitk.GetArrayFromImage(sitk.Resample(mni_maps()["wm"], grid))[0]
    subject = replace(random_subject(Condition(Level.BG, Pattern.NORMAL), np.random.default_rng(0)),
                      rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0))
    activity = perfusion_phantom(subject, grid)[0][0]
    truth_ratio = activity[grey > 0.9].mean() / activity[white > 0.9].mean()
    assert 3.0 <= truth_ratio <= 5.0  # about 4:1 before blurring
    arrays, records = load_split(small_cohort, "train", [Level.BG])
    normals = arrays[[r.condition.pattern is Pattern.NORMAL for r in records]].mean(axis=0)
    measured_ratio = normals[grey > 0.6].mean() / normals[white > 0.9].mean()
    assert 1.2 <= measured_ratio <= 2.5  # partial volume at SPECT resolution


def _point_source_fwhm_mm(reconstruction: np.ndarray, pixel_mm: float) -> float:
    row = reconstruction[reconstruction.shape[0] // 2]
    peak = int(np.argmax(row))
    half = row[peak] / 2
    left = np.interp(half, row[peak - 15:peak + 1], np.arange(peak - 15, peak + 1))
    right = np.interp(half, row[peak:peak + 16][::-1], np.arange(peak, peak + 16)[::-1])
    return float((right - left) * pixel_mm)


def _head(matrix: int) -> np.ndarray:
    rows, cols = np.mgrid[:matrix, :matrix]
    centre = (matrix - 1) / 2
    return ((((cols - centre) / (0.38 * matrix)) ** 2 + ((rows - centre) / (0.45 * matrix)) ** 2) < 1) * 0.14


def test_reconstructed_resolution_is_that_of_brain_spect():
    matrix, pixel_mm = 128, 1.75
    activity = np.zeros((2, matrix, matrix), np.float32)
    activity[0, 64, 64] = 1000.0
    head = np.stack([_head(matrix)] * 2).astype(np.float32)
    reconstruction = acquire(activity, head, pixel_mm, 4.0, protocol_for(matrix), np.array([50.0, 1.0]), [1, 2])
    assert np.unravel_index(np.argmax(reconstruction[0]), (matrix, matrix)) == (64, 64)  # no shift, no flip
    assert 8.0 <= _point_source_fwhm_mm(reconstruction[0], pixel_mm) <= 12.0


def test_noise_scales_with_counts_like_poisson_data():
    matrix = 64
    rows, cols = np.mgrid[:matrix, :matrix]
    disc = (((cols - 31.5) / 19) ** 2 + ((rows - 31.5) / 22) ** 2 < 1) * 30.0
    activity = np.stack([disc] * 4).astype(np.float32)
    head = np.stack([_head(matrix)] * 4).astype(np.float32)
    levels = np.array([1.0, 1.0, 4.0, 4.0])
    reconstruction = acquire(activity, head, 3.5, 4.0, protocol_for(matrix), levels, [1, 2, 3, 4])
    roi = reconstruction[:, 26:38, 26:38]
    relative_noise = roi.std(axis=(1, 2)) / roi.mean(axis=(1, 2))
    ratio = relative_noise[:2].mean() / relative_noise[2:].mean()
    assert 1.6 <= ratio <= 2.5  # sqrt(4) = 2 for Poisson counts


def test_same_seed_same_slices():
    jobs = cohort_jobs(seed=3, scale=0.1)[:2]
    first, records = simulate_slices(jobs, 64)
    second, _ = simulate_slices(jobs, 64)
    assert np.array_equal(first, second)
    other, _ = simulate_slices(cohort_jobs(seed=4, scale=0.1)[:2], 64)
    assert not np.array_equal(first, other)


def test_interrupted_cohort_continues_and_finished_cohort_is_reused(small_cohort, tmp_path, capsys):
    out = tmp_path / "cohort"
    build_cohort(out, seed=7, matrix=64, scale=0.02, progress=False)
    manifest = (out / "manifest.csv").read_bytes()
    first_chunk = json.loads((out / "chunks" / "chunk_0000.json").read_text())
    reference = {row["file"]: (out / row["file"]).read_bytes() for row in first_chunk}
    # an interruption: one chunk unfinished, the cohort not yet complete
    (out / "chunks" / "chunk_0000.json").unlink()
    for name in reference:
        (out / name).unlink()
    info = read_cohort_info(out)
    (out / "cohort.json").write_text(json.dumps(dict(info, state="building")))
    build_cohort(out, seed=7, matrix=64, scale=0.02, progress=False)
    assert (out / "manifest.csv").read_bytes() == manifest
    assert all((out / name).read_bytes() == data for name, data in reference.items())
    build_cohort(out, seed=7, matrix=64, scale=0.02, progress=True)
    assert "reusing" in capsys.readouterr().out
    with pytest.raises(SpectganError, match="another cohort"):
        build_cohort(out, seed=8, matrix=64, scale=0.02, progress=False)


def test_area_averaged_split_keeps_mean_counts_and_hemisphere_ratios(small_cohort):
    full, records = load_split(small_cohort, "test", [Level.BG])
    halved, halved_records = load_split(small_cohort, "test", [Level.BG], image_size=32)
    assert halved.shape == (len(full), 32, 32) and halved_records == records
    assert halved.mean(axis=(1, 2)) == pytest.approx(full.mean(axis=(1, 2)), rel=1e-5)
    for slice_full, slice_half in zip(full[:5], halved[:5]):
        lr_full = hemisphere_stats(canonical_image(slice_full, Level.BG), TEMPLATE_MIDLINE).lr
        lr_half = hemisphere_stats(canonical_image(slice_half, Level.BG), TEMPLATE_MIDLINE).lr
        assert lr_half == pytest.approx(lr_full, abs=0.01)
    with pytest.raises(SpectganError, match="allowed sizes divide 64"):
        load_split(small_cohort, "test", [Level.BG], image_size=48)


def test_a_cohort_killed_part_way_resumes_to_the_uninterrupted_one(small_cohort, tmp_path):
    """`spectgan cohort` killed with SIGKILL after its first chunk, then run again: the same manifest and slices as
    the uninterrupted build of the same seed (the session's small cohort)."""
    out = tmp_path / "killed"
    kill_after_first_chunk(["cohort", "--out", str(out), "--seed", "7", "--matrix", "64", "--scale", "0.1",
                            "--workers", "1"], out / "chunks")
    assert read_cohort_info(out)["state"] == "building" and not (out / "manifest.csv").exists()
    build_cohort(out, seed=7, matrix=64, scale=0.1, progress=False)
    assert (out / "manifest.csv").read_text() == (small_cohort / "manifest.csv").read_text()
    for split in ("train", "test"):
        assert np.array_equal(load_split(out, split)[0], load_split(small_cohort, split)[0])
