import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from gan_toy_cohort import single_thread, toy_bundle, toy_cohort, toy_run  # noqa: F401 (fixtures)

from spectgan.cli import main
from spectgan.conditions import Level
from spectgan.errors import SpectganError
from spectgan.models.fastgan import Bundle, export_bundle, load_bundle, sample
from spectgan.models.fastgan import bench
from spectgan.models.fastgan.bundle import sha256_file
from spectgan.models.fastgan.networks import Generator
from spectgan.geometry.template import canonical_image

REPO = Path(__file__).resolve().parents[1]


def test_bundle_layout_and_metadata(toy_bundle):
    for file in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md",
                 "docs/loss_curves.png", "docs/samples.png"):
        assert (toy_bundle / file).is_file(), file
    metadata = json.loads((toy_bundle / "configs/metadata.json").read_text())
    assert metadata["weights_sha256"] == sha256_file(toy_bundle / "models/model.pt")
    assert (toy_bundle / "models/model.pt").stat().st_size < 50 * 2 ** 20
    assert metadata["name"] == "toy_A" and metadata["version"] and metadata["monai_version"]
    assert metadata["pytorch_version"] == torch.__version__.split("+")[0]
    assert set(metadata["network_data_format"]) == {"inputs", "outputs"}
    assert metadata["network_data_format"]["outputs"]["pred"]["spatial_shape"] == [64, 64]
    assert metadata["levels"] == ["CER", "BG", "COR"] and len(metadata["valid_conditions"]) == 11
    assert metadata["level_planes_mm"] == {"CER": -30.0, "BG": 4.0, "COR": 52.0}
    assert metadata["pixel_spacing_mm"] == 3.5 and metadata["count_scale"] > 0
    assert metadata["training"]["iterations"] == 4 and metadata["training"]["cohort_seed"] == 1
    assert metadata["training"]["slices_per_condition"]["CER-unilateral-left"] == 6
    assert "Research only" in metadata["intended_use"] and metadata["synthetic"] is True
    readme = (toy_bundle / "docs/README.md").read_text()
    assert "spectgan.models.fastgan.train.train(" in readme and "loss_curves.png" in readme and "samples.png" in readme
    assert not [p for p in toy_bundle.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_weights_load_with_weights_only_and_through_monai(toy_bundle):
    from monai.bundle import ConfigParser

    state = torch.load(toy_bundle / "models/model.pt", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(toy_bundle / "configs/inference.json"))
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, Generator)
    network.load_state_dict(state)


def test_export_replaces_an_existing_bundle(toy_run, tmp_path):
    target = export_bundle(toy_run, tmp_path / "B", name="model_B")
    (target / "stale.txt").write_text("from an older export")
    export_bundle(toy_run, target, name="model_B")
    assert not (target / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["B"]


def test_load_bundle_is_cached_per_path_and_mtime(toy_bundle, tmp_path):
    copy = Path(shutil.copytree(toy_bundle, tmp_path / "copy"))
    first = load_bundle(copy)
    assert load_bundle(str(copy)) is first and isinstance(first, Bundle)
    generator, metadata = first
    assert not generator.training and metadata["name"] == "toy_A"
    metadata_file = copy / "configs/metadata.json"
    os.utime(metadata_file, ns=(metadata_file.stat().st_atime_ns, metadata_file.stat().st_mtime_ns + 10 ** 9))
    assert load_bundle(copy) is not first


def test_sha256_mismatch_is_a_clear_error(toy_bundle, tmp_path):
    copy = Path(shutil.copytree(toy_bundle, tmp_path / "tampered"))
    state = torch.load(copy / "models/model.pt", weights_only=True)
    state["to_image.parametrizations.weight.original"] += 0.01
    torch.save(state, copy / "models/model.pt")
    with pytest.raises(SpectganError, match="sha256 mismatch"):
        load_bundle(copy)
    with pytest.raises(SpectganError, match="is missing"):
        load_bundle(tmp_path)


def test_sampling_is_deterministic_and_echoes_the_seed(toy_bundle):
    counts, seed = sample(toy_bundle, "BG", "unilateral", "left", seed=3, n=4)
    assert seed == 3 and counts.shape == (4, 64, 64) and counts.dtype == np.float32 and counts.min() >= 0
    again, _ = sample(str(toy_bundle), "bg", "Unilateral", "LEFT", seed=np.int64(3), n=4)
    assert np.array_equal(counts, again)
    assert not np.array_equal(counts, sample(toy_bundle, "BG", "unilateral", "left", seed=4, n=4)[0])
    assert not np.array_equal(counts, sample(toy_bundle, "BG", "unilateral", "right", seed=3, n=4)[0])
    first_alone, _ = sample(toy_bundle, "BG", "unilateral", "left", seed=3, n=1)
    np.testing.assert_allclose(first_alone[0], counts[0], rtol=1e-4, atol=1e-3)  # image i depends on seed and i
    random_counts, random_seed = sample(toy_bundle, "COR", "normal")
    assert isinstance(random_seed, int) and np.array_equal(random_counts,
                                                           sample(toy_bundle, "COR", "normal", seed=random_seed)[0])
    truncated, _ = sample(toy_bundle, "COR", "normal", seed=3, n=2, psi=0.0)
    assert truncated.shape == (2, 64, 64)


@pytest.mark.parametrize("request_, message", [
    (("CER", "bilateral"), "allowed patterns at CER: normal, unilateral"),
    (("BG", "normal", "left"), "only allowed with the unilateral"),
    (("BG", "unilateral"), "needs side"),
    (("XX", "normal"), "allowed: CER, BG, COR"),
])
def test_invalid_conditions_name_what_is_allowed(toy_bundle, request_, message):
    with pytest.raises(ValueError, match=message) as error:
        sample(toy_bundle, *request_, seed=1)
    assert "Valid conditions for toy_A: CER-normal; CER-unilateral-left" in str(error.value)


def test_model_b_allows_only_its_levels(toy_bundle):
    generator, metadata = load_bundle(toy_bundle)
    model_b = Bundle(generator, {**metadata, "name": "B", "levels": [Level.COR.value]})
    with pytest.raises(ValueError, match="allowed levels: COR"):
        sample(model_b, "BG", "normal", seed=1)
    assert sample(model_b, "COR", "bilateral", seed=1)[0].shape == (1, 64, 64)


@pytest.mark.parametrize("arguments, message", [
    ({"n": 0}, "n must be an integer in"),
    ({"n": 2.5}, "n must be an integer in"),
    ({"psi": 1.5}, "psi"),
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": "3"}, "seed must be an integer"),
])
def test_invalid_requests(toy_bundle, arguments, message):
    with pytest.raises(ValueError, match=message):
        sample(toy_bundle, "COR", "normal", **arguments)


def test_cli_sample_writes_template_geometry_bit_identical_to_the_api(toy_bundle, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "spectgan.cli", "sample", "--bundle", str(toy_bundle),
                             "--level", "BG", "--pattern", "unilateral", "--side", "left", "--seed", "3", "--n", "2",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "seed 3" in result.stdout
    assert (out / "BG-unilateral-left_seed3.png").is_file()
    counts, _ = sample(toy_bundle, "BG", "unilateral", "left", seed=3, n=2)
    for index in range(2):
        image = sitk.ReadImage(str(out / f"BG-unilateral-left_seed3_{index:03d}.nii.gz"))
        reference = canonical_image(counts[index], Level.BG)
        assert image.GetSpacing() == pytest.approx(reference.GetSpacing())
        assert image.GetOrigin() == pytest.approx(reference.GetOrigin())
        assert image.GetDirection() == pytest.approx(reference.GetDirection())
        assert np.array_equal(sitk.GetArrayFromImage(image)[0], counts[index])  # another process, same bits


def test_cli_sample_invalid_condition_is_a_message(toy_bundle, tmp_path, capsys):
    assert main(["sample", "--bundle", str(toy_bundle), "--level", "CER", "--pattern", "bilateral",
                 "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "allowed patterns at CER" in error and "Traceback" not in error


def test_sample_benchmark_reports_rates_and_roofline(toy_bundle, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_benchmark_generator", lambda: (load_bundle(toy_bundle).generator, "toy_A"))
    assert bench.run_sample_benchmark(as_json=True) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["cpu_images_per_s"]) == {"1", "16", "64"}
    assert all(rate > 0 for rate in result["cpu_images_per_s"].values())
    assert result["matmul_gflops"] > 0 and result["peak_memory_mb"] > 0
    assert result["ratio_to_matmul_roofline"] == pytest.approx(
        result["generator_gflops_batch64"] / result["matmul_gflops"], rel=0.02)


def test_bundle_metadata_names_no_absolute_path(toy_run, toy_bundle):
    """The run was trained on a cohort given by its absolute path; the bundle names the folder only."""
    text = (toy_bundle / "configs" / "metadata.json").read_text()
    cohort = json.loads(text)["data_source"]
    assert str(toy_run.parent.parent) not in text and "/tmp" not in text and "/work" not in text, cohort
