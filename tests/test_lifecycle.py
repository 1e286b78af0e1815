"""The model lifecycle through a real `monailabel start_server` process (with an API token) serving a copy of the
shipped model A: retraining keeps the served bundle's recipe, the quality gate keeps a bad candidate back, `force`
publishes it anyway, versions are listed and rolled back (HTTP and `spectgan models`), and a cohort imported from
DICOM studies, named by its id, fine-tunes model A through the gate into service.

Trainings are a few iterations on the small simulated cohort (``conftest.small_cohort``); the gate runs the
evaluation's quick mode.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import time
from pathlib import Path

import pytest
import requests
import SimpleITK as sitk
from dicom_builders import Identity, nm_multiframe, write_files

from spectgan.cli import main as cli_main
from spectgan.models.fastgan.recipe import bundle_recipe
from spectgan.models.versions import CANDIDATES_FOLDER, VERSIONS_FOLDER
from spectgan.serving.settings import DEFAULT_MODELS_DIR, SAMPLE_STUDIES_DIR
from spectgan.tools.server import ServerProcess

MODEL = "spect_fastgan_A"
TOKEN = "lifecycle-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STUDY = "study_normal_axial"
SITE_COHORT = "site"  # the id of the imported cohort in the server's cohorts_dir
TRAIN_TIMEOUT_S = 600.0
SHIPPED = json.loads((DEFAULT_MODELS_DIR / MODEL / "configs" / "metadata.json").read_text())


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> Path:
    """The server's cohorts_dir (the imported cohort lands here)."""
    return tmp_path_factory.mktemp("cohorts")


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_cohort, cohorts):
    """The real server with a copy of the shipped model A, the small simulated cohort as its default cohort and an
    API token."""
    root = tmp_path_factory.mktemp("lifecycle")
    models, studies = root / "models", root / "studies"
    shutil.copytree(DEFAULT_MODELS_DIR / MODEL, models / MODEL, ignore=shutil.ignore_patterns("evaluation", "history"))
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    with ServerProcess(studies, models, root / "server.log", cohort_dir=small_cohort, token=TOKEN,
                       conf={"cohorts_dir": str(cohorts), "keep_versions": "3"}) as process:
        process.models_dir = models
        yield process


def _train(server, params: dict) -> dict:
    """A train task run to its end (run_sync); its result."""
    response = requests.post(f"{server.url}/train/{MODEL}", params={"run_sync": True}, json=params, headers=AUTH,
                             timeout=TRAIN_TIMEOUT_S)
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    return response.json()


def _served(server) -> dict:
    return requests.get(f"{server.url}/info/", headers=AUTH, timeout=30).json()["models"][MODEL]["bundle"]


def _infer_version(server) -> tuple[str, str]:
    response = requests.post(f"{server.url}/infer/{MODEL}", params={"image": STUDY, "output": "json"},
                             data={"params": json.dumps({"level": "BG", "pattern": "normal", "seed": 1})},
                             headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["version"], response.json()["sha256"]


def _metadata(server, folder: str, version: str) -> dict:
    return json.loads((server.models_dir / folder / MODEL / version / "configs" / "metadata.json").read_text())


def _cli(*args) -> tuple[int, str]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = cli_main([str(arg) for arg in args])
    return code, output.getvalue()


def test_a_bundle_without_recorded_settings_gets_its_recipe_from_its_command_and_network():
    assert "settings" not in SHIPPED["training"]
    recipe = bundle_recipe(SHIPPED)
    generator = SHIPPED["network"]["generator"]
    assert (recipe.image_size, recipe.generator_width, recipe.latent_dim, recipe.condition_dim) == (64, 16, 128, 32)
    assert recipe.output_floor == generator["output_floor"] == 0.01
    assert recipe.output_filter_fwhm_mm == pytest.approx(8.0, abs=0.01)
    assert recipe.output_noise == generator["output_noise"] and recipe.defect_axes
    assert recipe.generator_classification_weight == 0.25 and recipe.levels == ("CER", "BG", "COR")
    assert recipe.cohort == "default" and recipe.discriminator_width == 16


def test_retraining_keeps_the_served_recipe_and_reestimates_the_noise_stage(server, small_cohort):
    result = _train(server, {"iterations": 2, "batch": 4})
    assert result["version"] == "4.0.1" and result["init"] == "served" and result["gate"] is not None
    folder = VERSIONS_FOLDER if result["published"] else CANDIDATES_FOLDER
    candidate = _metadata(server, folder, "4.0.1")
    settings, shipped = candidate["training"]["settings"], bundle_recipe(SHIPPED)
    for name in ("image_size", "generator_width", "discriminator_width", "latent_dim", "condition_dim",
                 "output_floor", "generator_classification_weight", "defect_axes", "defect_weight",
                 "defect_lr_factor", "diversity_weight", "classification_weight", "learning_rate", "seed"):
        assert settings[name] == getattr(shipped, name), name
    assert settings["output_filter_fwhm_mm"] == pytest.approx(shipped.output_filter_fwhm_mm)
    assert settings["init_from"] == MODEL and settings["cohort"] == small_cohort.name
    noise = candidate["network"]["generator"]["output_noise"]
    assert set(noise) == set(shipped.output_noise) and noise != shipped.output_noise  # estimated on the new cohort
    assert candidate["training"]["count_scale"] == candidate["count_scale"]
    assert (server.models_dir / folder / MODEL / "4.0.1" / "docs" / "gate" / "report.md").is_file()


def test_a_bad_candidate_is_kept_back_force_publishes_it_and_rollback_restores(server):
    before = _served(server)
    result = _train(server, {"iterations": 1, "batch": 4, "init": "fresh"})
    assert not result["published"] and result["gate"]["failed"], result["gate"]
    assert (result["served"]["sha256"], _served(server)["sha256"]) == (before["sha256"], before["sha256"])
    assert _infer_version(server) == (before["version"], before["sha256"])
    bad_version = result["version"]
    assert "failed: worse than the served version" in result["gate"]["summary"]
    assert result["gate"]["failed"][0] in result["gate"]["summary"]
    assert (server.models_dir / CANDIDATES_FOLDER / MODEL / bad_version / "docs" / "gate" / "report.md").is_file()

    forced = _train(server, {"iterations": 1, "batch": 4, "init": "fresh", "force": True})
    assert forced["published"] and forced["gate"]["forced"] and forced["gate"]["failed"]
    assert _served(server)["sha256"] == forced["sha256"] != before["sha256"]
    assert _infer_version(server) == (forced["version"], forced["sha256"])
    assert "PUBLISHED BY FORCE" in _metadata(server, VERSIONS_FOLDER, forced["version"])["changelog"][forced["version"]]

    listed = requests.get(f"{server.url}/models/{MODEL}/versions", headers=AUTH, timeout=30).json()["versions"]
    states = {entry["version"]: entry["state"] for entry in listed}
    assert states[forced["version"]] == "served" and states[bad_version] == "candidate"
    assert states[before["version"]] == "published"
    assert all(entry["gate"]["summary"] for entry in listed if entry["version"] != before["version"])

    refused = requests.post(f"{server.url}/models/{MODEL}/rollback", json={"version": before["version"]}, timeout=30)
    assert refused.status_code == 401 and _served(server)["sha256"] == forced["sha256"]
    unknown = requests.post(f"{server.url}/models/{MODEL}/rollback", json={"version": "9.9.9"}, headers=AUTH,
                            timeout=30)
    assert unknown.status_code == 404 and before["version"] in unknown.json()["detail"]
    rolled = requests.post(f"{server.url}/models/{MODEL}/rollback", json={"version": before["version"]},
                           headers=AUTH, timeout=30)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["sha256"] == _served(server)["sha256"] == before["sha256"]
    assert _infer_version(server) == (before["version"], before["sha256"])


def _import_site_cohort(tmp_path: Path, out: Path) -> None:
    """``spectgan import`` of the sample studies written as NM multi-frame DICOM with made-up identities."""
    source, labels = tmp_path / "dicom", tmp_path / "labels.csv"
    rows = [("study", "pattern", "side", "patient", "split", "levels")]
    for number, path in enumerate(sorted(SAMPLE_STUDIES_DIR.glob("*.nii.gz"))):
        identity = Identity(number)
        write_files(source / f"nm_{number}", [nm_multiframe(sitk.ReadImage(str(path), sitk.sitkFloat32), identity)])
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        rows.append((identity.study_uid, sidecar["pattern"], sidecar["side"] or "", "", "", ""))
    with open(labels, "w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    code, console = _cli("import", source, "--labels", labels, "--out", out, "--matrix", 64, "--seed", 1,
                         "--test-fraction", 0.34, "--key", tmp_path / "key.csv")
    assert code == 0, console


def test_site_adaptation_import_train_gate_serve(server, cohorts, tmp_path):
    started = time.perf_counter()
    _import_site_cohort(tmp_path, cohorts / SITE_COHORT)
    imported_s = time.perf_counter() - started
    for cohort, word in (("elsewhere", "unknown cohort 'elsewhere'"), ("../site", "is not allowed")):
        answer = requests.post(f"{server.url}/train/{MODEL}", json={"cohort": cohort}, headers=AUTH, timeout=30)
        assert answer.status_code == 422 and word in answer.json()["detail"], answer.text
        assert str(cohorts) not in answer.text
    before = _served(server)
    started = time.perf_counter()
    assert requests.post(f"{server.url}/train/{MODEL}", json={"cohort": SITE_COHORT, "iterations": 2, "batch": 4},
                         headers=AUTH, timeout=30).status_code == 200
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (status := requests.get(f"{server.url}/train/", headers=AUTH, timeout=30).json()).get("status") not in \
            ("DONE", "ERROR") and time.monotonic() < deadline:
        time.sleep(1.0)
    trained_s = time.perf_counter() - started
    details = "\n".join(status.get("details", []))
    assert status.get("status") == "DONE", f"{status}\n{server.log_tail()}"
    assert f"from cohort {SITE_COHORT}" in details and "quality gate passed" in details, details
    served = _served(server)
    assert f"published version {served['version']} (sha256 {served['sha256']})" in details
    assert served["sha256"] != before["sha256"] and _infer_version(server) == (served["version"], served["sha256"])
    (tmp_path / "token").write_text(TOKEN)
    code, listing = _cli("models", "list", "--server", server.url, "--model", MODEL, "--token-file", tmp_path / "token")
    assert code == 0 and f"{served['version']}  served" in listing and f"cohort {SITE_COHORT}" in listing, listing
    print(f"site adaptation: import {imported_s:.0f} s, train + gate + publish {trained_s:.0f} s")
