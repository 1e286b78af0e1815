"""The model lifecycle through a real `monailabel start_server` process (with an API token) serving a copy of the
shipped model A: retraining keeps the served bundle's recipe, the quality gate keeps a bad candidate back, `force`
publishes it anyway, versions are listed and rolled back (HTTP and `spectgan models`), and a cohort imported from
DICOM studies, named by its id, fine-tunes model A through the gate into service while the spectgan page, in a real
headless Chromium, watches the training; its Models panel lists the versions and opens their evaluation reports.

Trainings are a few iterations on the small simulated cohort (``conftest.small_cohort``); the gate runs the
evaluation's quick mode.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import shlex
import shutil
import time
from pathlib import Path

import pytest
import requests
import SimpleITK as sitk
from dicom_builders import Identity, nm_multiframe, write_files
from test_reader_study import text_of, wait_for
from test_workstation_page import artifacts, browser  # noqa: F401
from test_workstation_token import log_in

from spectgan.cli import main as cli_main
from spectgan.models.fastgan.recipe import bundle_recipe
from spectgan.models.versions import CANDIDATES_FOLDER, VERSIONS_FOLDER
from spectgan.serving.settings import DEFAULT_MODELS_DIR, REPOSITORY_ROOT, SAMPLE_STUDIES_DIR
from spectgan.tools.server import ServerProcess

MODEL = "spect_fastgan_A"
TOKEN = "lifecycle-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STUDY = "study_normal_axial"
SITE_COHORT = "site"  # the id of the imported cohort in the server's cohorts_dir
TRAIN_TIMEOUT_S = 600.0
SHA256_SHOWN = 12  # hex digits of a sha256 the page's Models panel shows
SHIPPED = json.loads((DEFAULT_MODELS_DIR / MODEL / "configs" / "metadata.json").read_text())
NEXT_VERSION = ".".join(SHIPPED["version"].split(".")[:2] + [str(int(SHIPPED["version"].split(".")[2]) + 1)])


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> Path:
    """The server's cohorts_dir (the imported cohort lands here)."""
    return tmp_path_factory.mktemp("cohorts")


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_cohort, cohorts):
    """The real server with a copy of the shipped model A (with its fidelity report), the small simulated cohort as its
    default cohort and an API token."""
    root = tmp_path_factory.mktemp("lifecycle")
    models, studies = root / "models", root / "studies"
    shutil.copytree(DEFAULT_MODELS_DIR / MODEL, models / MODEL, ignore=shutil.ignore_patterns("history"))
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    # keep_versions 8: every version this module makes stays listed beside the shipped one
    with ServerProcess(studies, models, root / "server.log", cohort_dir=small_cohort, token=TOKEN,
                       conf={"cohorts_dir": str(cohorts), "keep_versions": "8"}) as process:
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
    """An older bundle (before the recipe travelled with it) is the shipped one without ``training.settings``: its
    recipe, read back from the run's defining command (not the resumes after it) and its network, is the one the
    shipped bundle records."""
    old = copy.deepcopy(SHIPPED)
    recorded = old["training"].pop("settings")
    out = shlex.split(old["training"]["commands"][0])[3]
    old["training"]["commands"].append(f"spectgan train --out {out} --iters 99999 --resume")  # must not mislead
    recipe = bundle_recipe(old)
    for name in ("image_size", "generator_width", "discriminator_width", "latent_dim", "condition_dim",
                 "output_floor", "output_noise", "defect_axes", "calibrated_severity", "iterations",
                 "generator_classification_weight", "classification_weight", "count_level_weight",
                 "joint_discriminator_batch", "seed"):
        assert getattr(recipe, name) == recorded[name], name
    assert recipe.levels == tuple(recorded["levels"]) and recipe.cohort == "default"
    assert recipe.output_filter_fwhm_mm == pytest.approx(recorded["output_filter_fwhm_mm"], abs=0.01)


def test_retraining_keeps_the_served_recipe_and_reestimates_the_noise_stage(server, small_cohort):
    result = _train(server, {"iterations": 2, "batch": 4})
    assert result["version"] == NEXT_VERSION and result["init"] == "served" and result["gate"] is not None
    folder = VERSIONS_FOLDER if result["published"] else CANDIDATES_FOLDER
    candidate = _metadata(server, folder, NEXT_VERSION)
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
    assert (server.models_dir / folder / MODEL / NEXT_VERSION / "docs" / "gate" / "report.md").is_file()


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
    assert all(entry["gate"]["summary"] for entry in listed if entry["version"] != SHIPPED["version"])  # gated

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


def _open_page(server, browser) -> None:  # noqa: F811
    """The spectgan page, logged in with the server's token; returns when its Models panel is filled."""
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/spectgan/")
    wait_for(browser, lambda d: d.find_element(By.ID, "login").is_displayed()
             or d.find_elements(By.CSS_SELECTOR, ".model-card"), 60)
    if browser.find_element(By.ID, "login").is_displayed():
        log_in(browser, TOKEN)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".model-card"), 60)
    assert text_of(browser, "error") == ""


def _panel_state(browser) -> tuple[str, str]:  # noqa: F811
    """(the training state the Models panel shows, whether it is polling)."""
    from selenium.webdriver.common.by import By

    section = browser.find_element(By.ID, "models-section")
    return section.get_attribute("data-training"), section.get_attribute("data-polling")


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


def test_site_adaptation_import_train_gate_serve(server, cohorts, tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    _open_page(server, browser)
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
    browser.find_element(By.ID, "refresh-models").click()  # the page shows the training and reads it again
    wait_for(browser, lambda d: _panel_state(d) == ("running", "true"), 60)
    assert f"{MODEL} on cohort {SITE_COHORT}: running" in text_of(browser, "training")
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
    assert "quality gate: passed" in listing and "fidelity report: full evaluation" in listing, listing  # 4.0.0's
    print(f"site adaptation: import {imported_s:.0f} s, train + gate + publish {trained_s:.0f} s")
    # the page saw the end on its own, stopped asking and shows the new version
    wait_for(browser, lambda d: _panel_state(d) == ("done", "false"), 60)
    assert f"published version {served['version']}" in text_of(browser, "training")
    card = browser.find_element(By.CSS_SELECTOR, f".model-card[data-model='{MODEL}']")
    wait_for(browser, lambda d: card.find_element(By.TAG_NAME, "h3").text == f"{MODEL} {served['version']}", 30)
    assert "quality gate: passed" in card.find_element(By.CSS_SELECTOR, "dl.served").text


def test_the_models_panel_lists_versions_and_opens_their_reports(server, browser, artifacts):  # noqa: F811
    """The panel against the versions route (after the trainings above: the served, published and candidate
    versions; alone: the shipped version with its fidelity report)."""
    from selenium.webdriver.common.by import By

    listed = requests.get(f"{server.url}/models/{MODEL}/versions", headers=AUTH, timeout=30).json()["versions"]
    _open_page(server, browser)
    card = browser.find_element(By.CSS_SELECTOR, f".model-card[data-model='{MODEL}']")
    (served,) = [entry for entry in listed if entry["state"] == "served"]
    assert card.find_element(By.TAG_NAME, "h3").text == f"{MODEL} {served['version']}"
    summary = card.find_element(By.CSS_SELECTOR, "dl.served")
    assert summary.find_element(By.CSS_SELECTOR, "code.sha256").text == served["sha256"][:SHA256_SHOWN]
    assert served["cohort"] in summary.text and served["evaluation"]["summary"] in summary.text
    rows = {row.get_attribute("data-version"): row.text for row in card.find_elements(By.CSS_SELECTOR, ".versions tr")
            if row.get_attribute("data-version")}
    others = [entry for entry in listed if entry is not served]
    assert sorted(rows) == sorted(entry["version"] for entry in others)
    for entry in others:
        assert entry["state"] in rows[entry["version"]] and entry["sha256"][:SHA256_SHOWN] in rows[entry["version"]]
    browser.execute_script("document.getElementById('models-section').scrollIntoView()")
    browser.save_screenshot(str(artifacts / "models_panel.png"))

    page_window = browser.current_window_handle
    summary.find_element(By.CSS_SELECTOR, "a.report-link").click()  # the served version's report, in a new tab
    wait_for(browser, lambda d: len(d.window_handles) == 2)
    browser.switch_to.window([handle for handle in browser.window_handles if handle != page_window][0])
    try:
        wait_for(browser, lambda d: d.title == f"{MODEL} {served['version']}: evaluation report", 30)
        wait_for(browser, lambda d: d.execute_script(
            "const images = [...document.images]; return images.length > 0 && images.every(i => i.naturalWidth > 0)"),
            30)  # its figures load
        browser.save_screenshot(str(artifacts / "model_report.png"))
        report = browser.page_source
        assert "Evaluation" in browser.find_element(By.TAG_NAME, "h1").text and "<table>" in report
        assert "/tmp/" not in report and str(REPOSITORY_ROOT) not in report and str(server.models_dir) not in report
    finally:
        browser.close()
        browser.switch_to.window(page_window)

    route = f"{server.url}/models/{MODEL}/versions"
    assert requests.get(f"{route}/{served['version']}/report/", timeout=30).status_code == 401
    for path, status, words in ((f"{route}/9.9.9/report/", 404, served["version"]),
                                (f"{server.url}/models/no_such_model/versions/1.0.0/report/", 404, MODEL),
                                (f"{route}/{served['version']}/report/figures/nothing.png", 404, "no figure")):
        answer = requests.get(path, headers=AUTH, timeout=30)
        assert answer.status_code == status and words in answer.json()["detail"], (path, answer.text)
