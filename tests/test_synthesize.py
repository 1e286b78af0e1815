"""`spectgan synthesize`: a synthetic cohort from the shipped model A in the cohort format, the same files for the same
seed, and a run killed part-way (SIGKILL) that resumes to the files of an uninterrupted run."""
import json
from pathlib import Path

import numpy as np
import torch
from gan_toy_cohort import toy_axes_bundle, toy_lesion_cohort  # noqa: F401 (fixtures)
from kill_part_way import kill_after_first_chunk

from spectgan import cli
from spectgan.cohorts.format import load_split, read_cohort_info, read_manifest
from spectgan.conditions import Level, Pattern, parse_levels, valid_conditions
from spectgan.lesions import lesion_text
from spectgan.models.synthesizer import load_synthesizer
from spectgan.models.fastgan.bundle import load_bundle
from spectgan.models.fastgan.sample import sample
from spectgan.cohorts.synthetic import CHUNK_SIZE

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "spect_fastgan_A"


def synthesize(out: Path, *options: str, bundle: Path = BUNDLE) -> int:
    return cli.main(["synthesize", "--bundle", str(bundle), "--out", str(out), "--no-progress", *options])


def slices(cohort: Path) -> tuple[np.ndarray, list]:
    return load_split(cohort, "train")


def test_a_synthetic_cohort_in_the_cohort_format(tmp_path):
    out = tmp_path / "synthetic"
    assert synthesize(out, "--per-condition", "3", "--seed", "5", "--workers", "1") == 0
    metadata = load_bundle(BUNDLE).metadata
    info = read_cohort_info(out)
    assert info["source"] == "synthetic" and info["state"] == "complete" and info["synthetic"] is True
    assert info["bundle"] == {"name": metadata["name"], "version": metadata["version"],
                              "weights_sha256": metadata["weights_sha256"]}
    assert info["count_scale"] == metadata["count_scale"] and info["matrix"] == metadata["image_size"]
    records = read_manifest(out)
    conditions = valid_conditions(parse_levels(metadata["levels"]))
    assert [record.condition for record in records] == [c for c in conditions for _ in range(3)]
    assert all(record.split == "train" and record.seed is not None for record in records)
    assert len({record.seed for record in records}) == len(records)
    assert (out / "manifest.csv").read_text().splitlines()[0].endswith(",file,seed")
    counts, _ = slices(out)
    assert counts.shape == (len(records), metadata["image_size"], metadata["image_size"]) and counts.min() >= 0
    # a slice's seed makes it again with `spectgan sample --seed SEED --n 1`, bit for bit with the one torch thread
    # that synthesize's workers use (another thread count may change the last float bits)
    record = records[4]
    side = record.condition.side.value if record.condition.side else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again, _ = sample(BUNDLE, record.condition.level.value, record.condition.pattern.value, side, seed=record.seed)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(again[0], counts[4])


def test_like_cohort_copies_the_train_split_counts(small_cohort, tmp_path):
    out = tmp_path / "like"
    assert synthesize(out, "--like-cohort", str(small_cohort)) == 0
    real = [r.condition for r in read_manifest(small_cohort) if r.split == "train"]
    synthetic = [r.condition for r in read_manifest(out)]
    assert sorted(map(str, synthetic)) == sorted(map(str, real))


def test_the_manifest_records_each_slices_territory_and_severity(toy_axes_bundle, toy_lesion_cohort,  # noqa: F811
                                                                  tmp_path):
    """A model with defect axes: --territory fixes the territory and the severity is drawn within the trained range;
    the manifest's lesions make the slice again with `spectgan sample`; --like-cohort draws the cohort's lesions."""
    axes = load_synthesizer(toy_axes_bundle).defect_axes()
    out = tmp_path / "mca"
    assert synthesize(out, "--per-condition", "1", "--levels", "COR", "--territory", "MCA", "--workers", "1",
                      bundle=toy_axes_bundle) == 0
    records = read_manifest(out)
    assert [record.condition.label for record in records] == [c.label for c in valid_conditions((Level.COR,))]
    defects = [record for record in records if record.condition.pattern is not Pattern.NORMAL]
    assert all(lesion.territory == "MCA" and axes.severity_range[0] <= lesion.severity <= axes.severity_range[1]
               for record in defects for lesion in record.lesions)
    assert [len(record.lesions) for record in records] == [0, 1, 1, 2]
    record = defects[-1]
    condition = record.labelled_condition
    again, _ = sample(toy_axes_bundle, "COR", "bilateral", seed=record.seed,
                      territory=lesion_text(condition, "territory"), severity=lesion_text(condition, "severity"))
    assert np.array_equal(again[0], load_split(out, "train")[0][-1])

    like = tmp_path / "like"
    assert synthesize(like, "--like-cohort", str(toy_lesion_cohort), "--levels", "COR", "--workers", "1",
                      bundle=toy_axes_bundle) == 0
    train = [(r.condition, r.lesions) for r in read_manifest(toy_lesion_cohort)
             if r.split == "train" and r.condition.level is Level.COR]
    synthetic = [(r.condition, r.lesions) for r in read_manifest(like)]
    assert sorted(c.label for c, _ in synthetic) == sorted(c.label for c, _ in train)
    assert set(synthetic) <= set(train)  # every defect is one of the cohort's train slices' (its joint mix)


def test_bad_requests_name_what_is_allowed(tmp_path, capsys):
    assert synthesize(tmp_path / "a", "--per-condition", "0") == 2
    assert "--per-condition must be a positive integer" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert synthesize(tmp_path / "full", "--per-condition", "1") == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert synthesize(tmp_path / "b", "--per-condition", "1", "--levels", "PONS") == 2
    assert "allowed: CER, BG, COR" in capsys.readouterr().err


def test_same_seed_same_files_and_a_killed_run_resumes_to_them(tmp_path):
    per_condition = str(CHUNK_SIZE // 5)  # 11 conditions: three chunks
    whole = tmp_path / "whole"
    assert synthesize(whole, "--per-condition", per_condition, "--seed", "9") == 0
    again = tmp_path / "again"
    assert synthesize(again, "--per-condition", per_condition, "--seed", "9") == 0
    assert (whole / "manifest.csv").read_text() == (again / "manifest.csv").read_text()
    assert np.array_equal(slices(whole)[0], slices(again)[0])

    killed = tmp_path / "killed"
    kill_after_first_chunk(["synthesize", "--bundle", str(BUNDLE), "--out", str(killed), "--per-condition",
                            per_condition, "--seed", "9", "--workers", "1", "--no-progress"], killed / "chunks")
    done = len(list((killed / "chunks").glob("chunk_*.json")))
    assert 1 <= done < 3 and read_cohort_info(killed)["state"] == "building"
    assert synthesize(killed, "--per-condition", per_condition, "--seed", "9") == 0
    assert (whole / "manifest.csv").read_text() == (killed / "manifest.csv").read_text()
    assert np.array_equal(slices(whole)[0], slices(killed)[0])
    other_seed = tmp_path / "other"
    assert synthesize(other_seed, "--per-condition", "1", "--seed", "10") == 0
    assert json.loads((other_seed / "cohort.json").read_text())["seed"] == 10
