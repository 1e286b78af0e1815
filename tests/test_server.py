"""The MONAI Label app: a real `monailabel start_server` process on a free port of 127.0.0.1 (started once for the
module), and its ASGI app in-process (starlette TestClient) where that is simpler: /info, every valid condition,
output geometry against the reference, the statistics' side, 4xx errors, a fuzz test, /info under load, training.

The bundles are tiny (width 4, one iteration, 64 px, trained on the toy cohort), so generated content means nothing;
the side of the statistics is checked through a known left-low slice put in place of the generator. The shipped model
A is served by a second real server, for the side of its unilateral defects at every level.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import SimpleITK as sitk
import torch
from gan_toy_cohort import toy_axes_bundle, toy_cohort, toy_lesion_cohort  # noqa: F401 (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monailabel.client import MONAILabelClient
from requests_toolbelt.multipart.decoder import MultipartDecoder
from scipy.stats import binomtest
from conftest import SHIPPED_MODEL
from stand_in_family import left_low_counts

from spectgan.cli import main as cli_main
from spectgan.conditions import ALL_LEVELS, LEVEL_Z_MM, ConditionAxes, Lesion, Level, Side, valid_conditions
from spectgan.models.fastgan import export_bundle
from spectgan.models.fastgan.train import train
from spectgan.geometry.registration import Registration, extract_level, pose_from_sidecar
from spectgan.geometry.roi import MidlinePlane, hemisphere_masks, hemisphere_stats
from spectgan.lesions import LESION_AXES, DefectAxes
from spectgan.models.synthesizer import load_synthesizer
from spectgan.results import GenerationResult
from spectgan.serving.request import BASE_INFER_PARAMS
from spectgan.serving.settings import REPOSITORY_ROOT, SAMPLE_STUDIES_DIR, generation_workers_from
from spectgan.tools.server import ServerProcess
from spectgan.tools.server_bench import format_server_figures, measure_server
from spectgan.geometry.template import SLICE_CENTRE_MM, canonical_image

APP_DIR = REPOSITORY_ROOT / "monai_app"
STUDY_IDS = sorted(path.name[:-len(".nii.gz")] for path in SAMPLE_STUDIES_DIR.glob("*.nii.gz"))
OBLIQUE_STUDY = "study_unilateral_left_oblique"
CACHED_STUDY = "study_normal_axial"  # the fuzz test's one valid image (registered once)
POSITION_TOLERANCE_MM = 4.0  # registration error allowed on the slice centre (2 voxels of the 3.5 mm studies)
ANGLE_TOLERANCE_DEG = 4.0
TRAIN_TIMEOUT_S = 300.0
MODELS = {"spect_fastgan_A": ALL_LEVELS, "spect_fastgan_B": (Level.COR,)}  # the bundles the tests make, and levels
AXES_MODEL = "toy_axes"  # a tiny model with defect axes (territory, severity), served by the real server only


# --------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, toy_cohort) -> Path:  # noqa: F811
    """Bundles spect_fastgan_A (all levels) and spect_fastgan_B (COR) after one training step each."""
    models = tmp_path_factory.mktemp("models")
    for name, levels in MODELS.items():
        run = tmp_path_factory.mktemp(f"run_{name}")
        train(run, progress=False, cohort=str(toy_cohort), levels=[level.value for level in levels],
              iterations=1, batch_size=4, generator_width=4, discriminator_width=4)
        export_bundle(run, models / name, name=name)
    return models


def _models_copy(tmp_path_factory, tiny_models: Path) -> Path:  # noqa: F811
    """The tiny bundles in a folder of their own (a train task publishes new versions into it)."""
    return Path(shutil.copytree(tiny_models, tmp_path_factory.mktemp("models") / "models"))


def _studies_copy(tmp_path_factory) -> Path:
    """The sample studies in a folder of their own (MONAI Label's datastore writes its index beside them)."""
    folder = tmp_path_factory.mktemp("studies") / "studies"
    shutil.copytree(SAMPLE_STUDIES_DIR, folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models, toy_cohort, toy_axes_bundle):  # noqa: F811
    """The real server with the tiny bundles A and B and the tiny model with defect axes (``AXES_MODEL``)."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    models = _models_copy(tmp_path_factory, tiny_models)
    shutil.copytree(toy_axes_bundle, models / AXES_MODEL)
    with ServerProcess(_studies_copy(tmp_path_factory), models, log_path, cohort_dir=toy_cohort) as process:
        yield process


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, tiny_models, toy_cohort):  # noqa: F811
    """The ASGI app in-process, configured as start_server would: ``client`` (a TestClient), ``service`` (the
    app's GenerationService) and ``studies`` (its datastore folder). It generates in its request threads
    (``generation_workers`` 0), so that a test can put a known slice in place of the generator; the real server
    process generates in worker processes."""
    from monailabel.config import settings as monailabel_settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache
    from starlette.testclient import TestClient

    saved = {key: getattr(monailabel_settings, key)
             for key in ("MONAI_LABEL_APP_DIR", "MONAI_LABEL_STUDIES", "MONAI_LABEL_APP_CONF")}
    torch_threads = torch.get_num_threads()  # importing the ASGI app sets the server's
    monailabel_settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    studies = _studies_copy(tmp_path_factory)
    monailabel_settings.MONAI_LABEL_STUDIES = str(studies)
    monailabel_settings.MONAI_LABEL_APP_CONF = {"models": "all",
                                                "models_dir": str(_models_copy(tmp_path_factory, tiny_models)),
                                                "cohort": str(toy_cohort), "generation_workers": "0"}
    sys.path.insert(0, str(APP_DIR))  # start_server puts the app folder on the path (its `lib` package)
    try:
        from monai_app.asgi import app

        with TestClient(app) as client:
            yield SimpleNamespace(client=client, service=app_instance().service, studies=studies)
    finally:
        clear_cache()
        torch.set_num_threads(torch_threads)
        sys.path.remove(str(APP_DIR))
        for key, value in saved.items():
            setattr(monailabel_settings, key, value)


def _infer(base, model: str, image: str, params, output: str | None = "all", session=None) -> requests.Response:
    """POST /infer the way MONAI Label clients do (form field ``params``); ``base`` is a URL or a TestClient."""
    query = {"image": image, **({"output": output} if output else {})}
    form = {"params": params if isinstance(params, str) else json.dumps(params)}
    if isinstance(base, str):
        return (session or requests).post(f"{base}/infer/{model}", params=query, data=form, timeout=300)
    return base.post(f"/infer/{model}", params=query, data=form)


def _parts(response, tmp_path: Path) -> tuple[dict, sitk.Image]:
    """The multipart answer of output=all: the result JSON and the image."""
    assert response.status_code == 200, response.text
    parts = {}
    for part in MultipartDecoder(response.content, response.headers["content-type"]).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        parts[disposition.split('name="')[1].split('"')[0]] = part.content
    path = tmp_path / f"result_{time.perf_counter_ns()}.nii.gz"
    path.write_bytes(parts["image"])
    return json.loads(parts["params"]), sitk.ReadImage(str(path))


def _geometry(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "origin": list(image.GetOrigin()), "spacing": list(image.GetSpacing()),
            "direction": list(image.GetDirection())}


def _assert_same_geometry(actual: dict, expected: dict) -> None:
    assert actual["size"] == expected["size"]
    for key in ("origin", "spacing", "direction"):
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-4, err_msg=key)


# ------------------------------------------------------------------------------------------------------------- info

def test_info_lists_one_infer_and_train_task_per_bundle(server):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert set(info["models"]) == set(info["trainers"]) == {*MODELS, AXES_MODEL}
    for name, model_levels in MODELS.items():
        model = info["models"][name]
        levels = [level.value for level in model_levels]
        assert model["params"]["level"]["allowed"] == levels
        assert model["params"]["pattern"]["allowed"] == ["normal", "unilateral", "bilateral"]
        assert model["params"]["side"]["allowed"] == ["left", "right"]
        assert model["params"]["output_space"]["allowed"] == ["slice", "reference"]
        assert set(model["params"]) == {*BASE_INFER_PARAMS, "psi"}  # psi: an option of the FastGAN family
        assert model["params"]["psi"] == {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 1.0,
                                          "description": "truncation of the latent toward its mean; 1: none"}
        assert model["conditions"] == [condition.label for condition in valid_conditions(model_levels)]
        assert [axis["name"] for axis in model["axes"]] == ["level", "pattern", "side"]  # no defect axes
        assert ConditionAxes.from_list(model["axes"]).conditions() == valid_conditions(model_levels)
        assert model["config"]["level"] == levels and model["config"]["output_space"] == ["slice", "reference"]
        assert model["bundle"]["name"] == name and len(model["bundle"]["sha256"]) == 64
        assert info["trainers"][name]["config"]["levels"] == ",".join(levels)
    assert "CER-bilateral" not in info["models"]["spect_fastgan_A"]["conditions"]


def test_info_lists_the_defect_axes_of_a_model_that_has_them(server, toy_axes_bundle):  # noqa: F811
    model = requests.get(f"{server.url}/info/", timeout=30).json()["models"][AXES_MODEL]
    params = model["params"]
    assert set(params) == {*BASE_INFER_PARAMS, *LESION_AXES, "psi"}
    axes = load_synthesizer(toy_axes_bundle).defect_axes()
    assert model["axes"][3:] == [axis.to_dict() for axis in axes.condition_axes()]  # declared once, listed as is
    assert DefectAxes.from_dict(params) == axes and axes.territories["CER"] == ("MCA", "PICA")
    assert params["territory"]["default"] is None and params["severity"]["default"] is None
    assert params["severity"]["unit"] == "fractional CBF reduction" and "left=VALUE;right=VALUE" in \
        params["territory"]["description"]


# ------------------------------------------------------------------------------------------------------- inference

def test_every_valid_condition_of_both_bundles(server, tmp_path):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    with requests.Session() as session:
        for name, levels in MODELS.items():
            for seed, condition in enumerate(valid_conditions(levels)):
                params = {**condition.to_dict(), "seed": seed, "psi": 0.7}
                result, image = _parts(_infer(server.url, name, OBLIQUE_STUDY, params, session=session), tmp_path)
                assert result["condition"] == {**condition.to_dict(), "label": condition.label}
                assert (result["seed"], result["psi"], result["output_space"]) == (seed, 0.7, "slice")
                bundle = info["models"][name]["bundle"]
                assert (result["model"], result["version"], result["sha256"]) == (name, bundle["version"],
                                                                                 bundle["sha256"])
                assert image.GetPixelID() == sitk.sitkFloat32 and image.GetSize()[2] == 1
                _assert_same_geometry(result["geometry"], _geometry(image))
                assert set(result["stats"]) >= {"mc", "left", "right", "lr", "ai"}
                assert set(result["timings_s"]) >= {"registration", "generation", "placement", "total"}


def test_output_geometry_against_the_reference_and_its_true_pose(server, tmp_path):
    reference = sitk.ReadImage(str(server.studies / f"{OBLIQUE_STUDY}.nii.gz"))
    true_pose = pose_from_sidecar(server.studies / f"{OBLIQUE_STUDY}.json")
    params = {"level": "BG", "pattern": "unilateral", "side": "left", "seed": 5}
    result, resampled = _parts(_infer(server.url, "spect_fastgan_A", OBLIQUE_STUDY,
                                      {**params, "output_space": "reference"}), tmp_path)
    _assert_same_geometry(_geometry(resampled), _geometry(reference))
    assert result["output_space"] == "reference" and np.count_nonzero(sitk.GetArrayViewFromImage(resampled)) > 0

    result, placed = _parts(_infer(server.url, "spect_fastgan_A", OBLIQUE_STUDY, params), tmp_path)
    width, height, _ = placed.GetSize()
    centre = np.asarray(placed.TransformContinuousIndexToPhysicalPoint(((width - 1) / 2, (height - 1) / 2, 0.0)))
    expected_centre = np.asarray(true_pose.TransformPoint((*SLICE_CENTRE_MM, LEVEL_Z_MM[Level.BG])))
    assert np.linalg.norm(centre - expected_centre) < POSITION_TOLERANCE_MM
    normal = np.asarray(placed.GetDirection()).reshape(3, 3)[:, 2]
    expected_normal = np.asarray(true_pose.GetMatrix()).reshape(3, 3)[:, 2]
    expected_normal /= np.linalg.norm(expected_normal)
    assert np.degrees(np.arccos(np.clip(normal @ expected_normal, -1, 1))) < ANGLE_TOLERANCE_DEG
    np.testing.assert_allclose(result["geometry"]["level_plane"]["point"], centre, atol=1e-3)


def test_same_seed_same_image_and_a_drawn_seed_is_echoed(server, tmp_path):
    params = {"level": "COR", "pattern": "bilateral"}
    first, first_image = _parts(_infer(server.url, "spect_fastgan_B", OBLIQUE_STUDY, params), tmp_path)
    assert isinstance(first["seed"], int)
    again, again_image = _parts(_infer(server.url, "spect_fastgan_B", OBLIQUE_STUDY,
                                       {**params, "seed": first["seed"]}), tmp_path)
    assert again["seed"] == first["seed"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again_image), sitk.GetArrayFromImage(first_image))


def test_territory_and_severity_come_back_as_given_or_as_drawn(server, toy_axes_bundle, tmp_path):  # noqa: F811
    """Given values come back as sent; what a request leaves out comes back as the model drew it (the same seed: the
    same draw, among the territories of the level and within the severity range)."""
    axes = load_synthesizer(toy_axes_bundle).defect_axes()
    given = {"level": "BG", "pattern": "unilateral", "side": "right", "territory": "pca", "severity": "0.3", "seed": 2}
    result, _ = _parts(_infer(server.url, AXES_MODEL, OBLIQUE_STUDY, given), tmp_path)
    assert result["condition"] == {"level": "BG", "pattern": "unilateral", "side": "right", "territory": "PCA",
                                   "severity": 0.3, "label": "BG-unilateral-right"}
    per_side = {"level": "COR", "pattern": "bilateral", "territory": {"left": "MCA", "right": "ACA"},
                "severity": "right=0.25", "seed": 4}
    result, _ = _parts(_infer(server.url, AXES_MODEL, OBLIQUE_STUDY, per_side), tmp_path)
    condition = result["condition"]
    assert condition["territory"] == {"left": "MCA", "right": "ACA"} and condition["severity"]["right"] == 0.25
    assert axes.severity_range[0] <= condition["severity"]["left"] <= axes.severity_range[1]  # drawn
    drawn, again = (_infer(server.url, AXES_MODEL, OBLIQUE_STUDY, {"level": "CER", "pattern": "unilateral",
                                                                   "side": "left", "seed": 9}, "json").json()
                    for _ in range(2))
    assert drawn["condition"] == again["condition"] and drawn["condition"]["territory"] in axes.territories["CER"]
    assert axes.severity_range[0] <= drawn["condition"]["severity"] <= axes.severity_range[1]


def test_generate_command_sends_territory_and_severity_and_records_what_was_used(server, tmp_path):
    """`spectgan generate` with --territory / --severity through the real server: the defect conditions get them
    (the normal one none), and stats.csv / stats.json record the territory and severity of every scan."""
    out = tmp_path / "generated"
    assert cli_main(["generate", "--server", server.url, "--image", OBLIQUE_STUDY, "--model", AXES_MODEL,
                     "--level", "COR", "--territory", "ACA", "--severity", "left=0.2;right=0.3", "--pattern",
                     "normal,bilateral", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    with open(out / "stats.csv", newline="") as stream:
        rows = {row["pattern"]: row for row in csv.DictReader(stream)}
    assert (rows["normal"]["territory"], rows["normal"]["severity"]) == ("", "")
    assert (rows["bilateral"]["territory"], rows["bilateral"]["severity"]) == ("ACA", "left=0.2000;right=0.3000")
    bilateral = next(entry for entry in json.loads((out / "stats.json").read_text())
                     if entry["condition"]["pattern"] == "bilateral")
    image = sitk.ReadImage(str(out / bilateral["file"]))
    assert GenerationResult.from_json(bilateral, image).condition.lesions == (
        Lesion(Side.LEFT, "ACA", 0.2), Lesion(Side.RIGHT, "ACA", 0.3))
    assert cli_main(["generate", "--server", server.url, "--image", OBLIQUE_STUDY, "--model", AXES_MODEL,
                     "--level", "COR", "--pattern", "normal", "--territory", "ACA", "--out", str(tmp_path / "no"),
                     "--no-progress"]) == 2


ERROR_CASES = {
    "bilateral at CER": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "CER", "pattern": "bilateral"}, 422,
                         "allowed patterns at CER: normal, unilateral"),
    "non-COR level for B": ("spect_fastgan_B", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal"}, 422,
                            "allowed levels: COR"),
    "unknown level": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "PONS", "pattern": "normal"}, 422,
                      "allowed: CER, BG, COR"),
    "unknown pattern": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "diffuse"}, 422,
                        "allowed: normal, unilateral, bilateral"),
    "unilateral without side": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "unilateral"}, 422,
                                "allowed: left, right"),
    "bad side": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "unilateral", "side": "up"}, 422,
                 "allowed: left, right"),
    "side with normal": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal", "side": "left"},
                         422, "only allowed with the unilateral pattern"),
    "negative seed": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal", "seed": -3}, 422,
                      "seed must be an integer in [0, "),
    "psi above one": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal", "psi": 1.5}, 422,
                      "psi must be a number in [0, 1]"),
    "bad output space": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal",
                                                            "output_space": "template"}, 422,
                         "allowed: slice, reference"),
    "malformed JSON": ("spect_fastgan_A", OBLIQUE_STUDY, '{"level": "BG",', 400, "params is not valid JSON"),
    "JSON that is not an object": ("spect_fastgan_A", OBLIQUE_STUDY, '["BG"]', 400, "must be a JSON object"),
    "unknown image": ("spect_fastgan_A", "no_such_study", {"level": "BG", "pattern": "normal"}, 404,
                      f"available: {', '.join(STUDY_IDS)}"),
    "unknown model": ("spect_fastgan_C", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal"}, 404,
                      "spect_fastgan_A, spect_fastgan_B"),
    "misspelt param": ("spect_fastgan_A", OBLIQUE_STUDY, {"level": "BG", "pattern": "normal", "severty": 0.3}, 422,
                       "unknown param(s) 'severty' for spect_fastgan_A; allowed: level, pattern, side, seed, psi"),
}


UNILATERAL_LEFT = {"level": "CER", "pattern": "unilateral", "side": "left"}
ERROR_CASES.update({
    "territory not at the level": (AXES_MODEL, OBLIQUE_STUDY, {**UNILATERAL_LEFT, "territory": "ACA"}, 422,
                                   "territory ACA is not available at CER; allowed: MCA, PICA"),
    "severity out of range": (AXES_MODEL, OBLIQUE_STUDY, {**UNILATERAL_LEFT, "severity": 0.9}, 422,
                              "severity 0.9 is outside the trained range; allowed: 0.15 to 0.49"),
    "severity not a fraction": (AXES_MODEL, OBLIQUE_STUDY, {**UNILATERAL_LEFT, "severity": "much"}, 422,
                                "severities 0.15 to 0.49"),
    "per-side territory of a unilateral defect": (AXES_MODEL, OBLIQUE_STUDY,
                                                  {**UNILATERAL_LEFT, "territory": {"left": "MCA"}}, 422,
                                                  "one territory (its own side's)"),
    "territory of a normal slice": (AXES_MODEL, OBLIQUE_STUDY, {"level": "BG", "pattern": "normal",
                                                                "territory": "MCA"}, 422,
                                    "a normal pattern takes neither"),
    "territory for a model without defect axes": ("spect_fastgan_A", OBLIQUE_STUDY,
                                                  {**UNILATERAL_LEFT, "territory": "MCA", "severity": 0.3}, 422,
                                                  "model spect_fastgan_A has no defect axes"),
})


BG_LEFT_FROM_REFERENCE = {"level": "BG", "pattern": "unilateral", "side": "left", "base": "reference"}
ERROR_CASES.update({
    "unknown base": ("spect_fastgan_A", OBLIQUE_STUDY, {**BG_LEFT_FROM_REFERENCE, "base": "patient"}, 422,
                     "invalid base 'patient'; allowed: model, reference"),
    "defect from the reference without severity": ("spect_fastgan_A", OBLIQUE_STUDY,
                                                   {**BG_LEFT_FROM_REFERENCE, "territory": "MCA"}, 422,
                                                   "needs its territory and severity: at BG a territory among "
                                                   "MCA, ACA, PCA"),
    "territory the simulation lacks at the level": ("spect_fastgan_A", OBLIQUE_STUDY,
                                                    {**BG_LEFT_FROM_REFERENCE, "territory": "PICA",
                                                     "severity": 0.3}, 422, "territory PICA is not available at BG"),
    "removing a defect the request does not name": ("spect_fastgan_A", OBLIQUE_STUDY,
                                                    {"level": "BG", "pattern": "normal", "base": "reference"}, 422,
                                                    "needs the defect the study has: side (empty for both sides), "
                                                    "territory and severity"),
})


LEARNED_CER_LEFT = {"level": "CER", "pattern": "unilateral", "side": "left", "base": "reference", "method": "learned"}
ERROR_CASES.update({
    "unknown method": ("spect_fastgan_A", OBLIQUE_STUDY, {**BG_LEFT_FROM_REFERENCE, "territory": "MCA",
                                                          "severity": 0.3, "method": "magic"}, 422,
                       "invalid method 'magic'; allowed: physics, learned"),
    "learned method of a model without defect axes": ("spect_fastgan_A", OBLIQUE_STUDY,
                                                      {**LEARNED_CER_LEFT, "territory": "MCA", "severity": 0.3}, 422,
                                                      "the learned method needs a model with defect axes (territory, "
                                                      "severity); spect_fastgan_A has none: use method physics"),
    "learned method beyond the model's severities": (AXES_MODEL, OBLIQUE_STUDY,  # the physics method takes 0.5
                                                     {**LEARNED_CER_LEFT, "territory": "MCA", "severity": 0.5}, 422,
                                                     "severity 0.5 is outside the trained range; allowed: 0.15 to 0.49 "
                                                     "(fractional CBF reduction) (learned method of toy_axes)"),
    "learned method, a territory the model lacks at the level": (AXES_MODEL, OBLIQUE_STUDY,
                                                                 {**LEARNED_CER_LEFT, "territory": "ACA",
                                                                  "severity": 0.3}, 422,
                                                                 "territory ACA is not available at CER; allowed: MCA, "
                                                                 "PICA (learned method of toy_axes)"),
})


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_requests_get_a_4xx_naming_what_is_allowed(server, case):
    model, image, params, status, allowed = ERROR_CASES[case]
    response = _infer(server.url, model, image, params)
    assert response.status_code == status, response.text
    assert allowed in response.json()["detail"]


@pytest.mark.parametrize("study, side", [("study_normal_axial", "left"), ("study_normal_flipped", "right")])
def test_a_defect_from_the_reference_lands_on_its_side_of_the_patients_own_slice(server, tmp_path, study, side):
    """base=reference: the patient's own BG slice (taken here through the study's TRUE pose, not the server's
    registration) loses counts in the requested hemisphere only; the other keeps the patient's pattern."""
    params = {"level": "BG", "pattern": "unilateral", "side": side, "territory": "MCA", "severity": 0.4,
              "base": "reference"}
    result, image = _parts(_infer(server.url, "spect_fastgan_A", study, params), tmp_path)
    assert result["base"] == "reference" and result["derivation"]["method"] == "physics"
    assert result["synthetic"] is True and result["condition"]["territory"] == "MCA"
    made = sitk.GetArrayFromImage(image)[0]
    reference = sitk.ReadImage(str(SAMPLE_STUDIES_DIR / f"{study}.nii.gz"))
    patient = extract_level(reference, pose_from_sidecar(SAMPLE_STUDIES_DIR / f"{study}.json"), Level.BG,
                            made.shape[0])
    middle = made.shape[1] // 2
    brain = patient > 0.3 * patient.max()
    halves = {"left": np.s_[:, middle + 2:], "right": np.s_[:, :middle - 2]}  # left = +x = higher columns
    other = "right" if side == "left" else "left"
    assert made[halves[side]][brain[halves[side]]].mean() < 0.9 * patient[halves[side]][brain[halves[side]]].mean()
    kept, own = made[halves[other]][brain[halves[other]]], patient[halves[other]][brain[halves[other]]]
    assert np.corrcoef(kept, own)[0, 1] > 0.95
    assert abs(kept.mean() / own.mean() - 1) < 0.05
    assert (result["stats"]["ai"] < -5) == (side == "left") and abs(result["stats"]["ai"]) > 5


def test_the_learned_method_inverts_the_model_and_says_so(server, tmp_path):
    """method=learned with the model with defect axes: the patient's slice changed by the inverted model, the
    derivation naming the method (the tiny model's defect itself means nothing after two training steps)."""
    params = {"level": "BG", "pattern": "unilateral", "side": "left", "territory": "MCA", "severity": 0.3,
              "base": "reference", "method": "learned", "seed": 3}
    result, image = _parts(_infer(server.url, AXES_MODEL, "study_normal_axial", params), tmp_path)
    assert result["base"] == "reference" and result["derivation"]["method"] == "learned" and result["seed"] == 3
    assert result["synthetic"] is True and result["condition"]["territory"] == "MCA"
    assert np.isfinite(sitk.GetArrayFromImage(image)).all() and sitk.GetArrayFromImage(image).max() > 0
    info = requests.get(f"{server.url}/info/", timeout=30).json()["models"][AXES_MODEL]["params"]["method"]
    assert info["allowed"] == ["physics", "learned"] and info["default"] == "physics"


def test_the_official_client_with_its_default_temporary_folder_keeps_every_result(server):
    """MONAI Label's own client saves the image part as <its temporary folder>/<part file name>; the server's result
    files live in a private folder of their own and the part is named after the model, condition and seed."""
    client = MONAILabelClient(server.url)
    assert client._tmpdir == (tempfile.tempdir or "/tmp")
    params = {"level": "BG", "pattern": "unilateral", "side": "left"}
    for seed, study in enumerate(STUDY_IDS):
        path, result = client.infer("spect_fastgan_A", study, {**params, "seed": seed})
        try:
            assert Path(path).parent == Path(client._tmpdir)
            assert Path(path).name.startswith(f"spect_fastgan_A_BG-unilateral-left_seed{seed}_")
            image = sitk.ReadImage(path)
            _assert_same_geometry(_geometry(image), result["geometry"])
        finally:
            Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("image", ["/etc/passwd", "../../../../etc/passwd", "sample_data/studies/"
                                   f"{OBLIQUE_STUDY}.nii.gz", "STUDY_FILE", f"{OBLIQUE_STUDY}.nii.gz"])
def test_an_image_id_is_never_a_path_on_the_server(server, image):
    """Only ids of the datastore are images: a path, even to a study file the server has, is a 404 that lists valid
    ids and shows no path of the server."""
    image = str(server.studies / f"{OBLIQUE_STUDY}.nii.gz") if image == "STUDY_FILE" else image
    response = _infer(server.url, "spect_fastgan_A", image, {"level": "BG", "pattern": "normal"})
    assert response.status_code == 404, response.text
    assert "available: " + ", ".join(STUDY_IDS[:3]) in response.json()["detail"]
    _assert_no_server_path(server, response.text)


def _assert_no_server_path(server, text: str) -> None:
    for folder in (server.studies, server.studies.parent, REPOSITORY_ROOT, Path(tempfile.gettempdir()), Path.home(),
                   Path("/etc")):
        assert f"{folder}/" not in text, (folder, text)


def test_no_error_answer_shows_a_server_path(server, tmp_path):
    """Errors of every kind, through the real server: none names a folder of the server."""
    answers = [_infer(server.url, model, image, params) for model, image, params, _, _ in ERROR_CASES.values()]
    answers.append(requests.post(f"{server.url}/infer/spect_fastgan_A", params={"output": "all"},
                                 files={"file": ("junk.nii.gz", b"not an image")},
                                 data={"params": json.dumps({"level": "BG", "pattern": "normal"})}, timeout=60))
    answers.append(requests.post(f"{server.url}/train/spect_fastgan_A", json={"iterations": "many"}, timeout=30))
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
        _assert_no_server_path(server, response.text)


# ------------------------------------------------------------------------------------------------ statistics side

def _left_low_slice(synthesizer, request):
    """The stand-in family's known left-low slice in place of the generator's."""
    level = request.condition.level
    return canonical_image(left_low_counts(synthesizer.describe()["image_size"]), level), 11, request.condition


@pytest.mark.parametrize("output_space", ["slice", "reference"])
def test_statistics_split_by_the_registered_midline_put_left_low_on_the_left(in_process, monkeypatch, tmp_path,
                                                                             output_space):
    monkeypatch.setattr(in_process.service, "canonical_slice", _left_low_slice)
    params = {"level": "BG", "pattern": "unilateral", "side": "left", "output_space": output_space}
    for study in STUDY_IDS:  # identity, flipped, RAS-like and oblique storage
        result, _ = _parts(_infer(in_process.client, "spect_fastgan_A", study, params), tmp_path)
        assert result["stats"]["left"] < result["stats"]["right"] and result["stats"]["ai"] < 0, (study, result)

        path = in_process.studies / f"{study}.nii.gz"
        outcome = in_process.service.generate(in_process.service.request("spect_fastgan_A", params), path)
        midline = in_process.service.registrations.get(path)[0].registration.midline()
        assert outcome.midline == midline and outcome.stats == hemisphere_stats(outcome.image, midline)
        masks = hemisphere_masks(outcome.image, midline)  # measured once, with the statistics
        assert all((sitk.GetArrayViewFromImage(given) == sitk.GetArrayViewFromImage(expected)).all()
                   for given, expected in zip(outcome.masks, masks))


# The shipped model A's side through the real server. One slice may carry a mild defect whose hemisphere means
# differ by less than their noise (15 % of the real cohort's unilateral defects have |AI| < 5 %), so a single slice
# with the other side lower is no broken promise; a model that ignored or flipped the side would put the requested
# side lower in about half of the slices or fewer. Hence a one-sided sign test over the seeds of each level and side:
# with 8 seeds, 7 or more hits (P < 0.05 under "the side is a coin toss"). The studies alternate between RAS-like
# and oblique storage, and the side is measured with the study's TRUE midline (its sidecar), not the server's.
SIDE_SEEDS = range(8)
SIDE_STUDIES = ("study_unilateral_right_ras", OBLIQUE_STUDY)
SIGN_TEST_ALPHA = 0.05


def _true_midline(study: str) -> MidlinePlane:
    """The template's midsagittal plane in a sample study, through its true pose."""
    return Registration(pose_from_sidecar(SAMPLE_STUDIES_DIR / f"{study}.json"), metric=0.0, correlation=1.0).midline()


def _sign_test_p(hits: int, trials: int) -> float:
    """One-sided P of at least ``hits`` of ``trials`` when each is a fair coin toss."""
    return float(binomtest(hits, trials, 0.5, alternative="greater").pvalue)


@pytest.mark.parametrize("level,side", sorted({(c.level.value, c.side.value) for c in valid_conditions() if c.side}))
def test_shipped_model_a_puts_a_unilateral_defect_on_the_requested_side(shipped_server, tmp_path, level, side):
    requested_lower, answered_lower, ais = 0, 0, []
    for seed in SIDE_SEEDS:
        study = SIDE_STUDIES[seed % len(SIDE_STUDIES)]
        result, image = _parts(_infer(shipped_server.url, SHIPPED_MODEL, study,
                                      {"level": level, "pattern": "unilateral", "side": side, "seed": seed}), tmp_path)
        assert (result["condition"]["level"], result["condition"]["pattern"], result["condition"]["side"],
                result["seed"]) == (level, "unilateral", side, seed)
        stats = hemisphere_stats(image, _true_midline(study))  # patient left = +x, wherever the study stores it
        means = {"left": stats.left, "right": stats.right}
        other = "right" if side == "left" else "left"
        requested_lower += means[side] < means[other]
        answered_lower += result["stats"][side] < result["stats"][other]
        ais.append(round(stats.ai, 1))
    trials = len(SIDE_SEEDS)
    assert _sign_test_p(requested_lower, trials) < SIGN_TEST_ALPHA, (level, side, requested_lower, ais)
    assert _sign_test_p(answered_lower, trials) < SIGN_TEST_ALPHA, (level, side, answered_lower, ais)


# ------------------------------------------------------------------------------------------------------------- fuzz

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
VALID_VALUES = {"level": ["CER", "BG", "COR", "bg"], "pattern": ["normal", "unilateral", "bilateral"],
                "side": ["left", "right", "", None], "seed": [0, 7, 2 ** 63 - 1, "42"], "psi": [0, 0.5, 1, "0.8"],
                "output_space": ["slice", "reference"],
                "territory": ["MCA", "", None, {"left": "MCA"}, "left=MCA;right=ACA"],
                "severity": [0.3, "0.2", None, {"right": 0.3}, "left=0.2"]}
PARAMS = st.fixed_dictionaries({}, optional={name: st.one_of(st.sampled_from(values), JSON_VALUES)
                                             for name, values in VALID_VALUES.items()})
PARAMS_TEXT = st.one_of(PARAMS.map(json.dumps), PARAMS.map(json.dumps), JSON_VALUES.map(json.dumps),
                        st.text(max_size=40))


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=st.sampled_from(["spect_fastgan_A", "spect_fastgan_B", "spect_fastgan_C"]),
       image=st.sampled_from([CACHED_STUDY, CACHED_STUDY, "unknown_study", ""]),
       params=PARAMS_TEXT, output=st.sampled_from(["all", "json", "image", "dicom_seg", "html", None]))
def test_no_request_gets_a_500(in_process, model, image, params, output):
    response = _infer(in_process.client, model, image, params, output)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["detail"], response.text


# ---------------------------------------------------------------------------------------------------- concurrency

@pytest.mark.skipif(generation_workers_from() < 2, reason="parallel generation needs 2 workers (one per core)")
def test_info_answers_while_four_inferences_run_in_parallel(server):
    """No timing limit: the server's own clock says when each generation ran; two of them must overlap (the
    workers run in parallel) and /info/ must have answered while generations ran."""
    studies = STUDY_IDS[:4]
    for study in studies:  # a new modification time: each inference registers its study again (seconds of work)
        path = server.studies / f"{study}.nii.gz"
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 1_000_000))
    info_answered, running = [], threading.Event()
    running.set()

    def poll_info():
        with requests.Session() as session:
            while running.is_set():
                assert session.get(f"{server.url}/info/", timeout=30).status_code == 200
                info_answered.append(time.time())
                time.sleep(0.05)

    def inference(study):
        response = _infer(server.url, "spect_fastgan_A", study, {"level": "BG", "pattern": "normal"}, "json")
        assert response.status_code == 200, response.text
        return response.json()["timings_s"]

    poller = threading.Thread(target=poll_info)
    poller.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            timings = list(pool.map(inference, studies))
    finally:
        running.clear()
        poller.join()
    assert all(timing["registration"] > 0 for timing in timings), "the studies were not registered again"
    intervals = sorted(tuple(timing["interval_unix_s"]) for timing in timings)
    assert any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:])), intervals
    assert any(any(start < answered < end for start, end in intervals) for answered in info_answered), \
        (intervals, info_answered)


@pytest.mark.slow
def test_server_benchmark_measures_a_real_server_with_its_generation_workers(tiny_models, tmp_path):
    """``spectgan bench server`` end to end on the tiny bundle: the figures it reports, no speed asserted."""
    figures = measure_server(tiny_models, tmp_path)
    assert figures["generation_workers"] == generation_workers_from() >= 1
    assert figures["server_ms"]["p50"] > 0 and figures["in_process_ms"]["p50"] > 0
    assert figures["ratio_p50"] == pytest.approx(figures["server_ms"]["p50"] / figures["in_process_ms"]["p50"])
    assert set(figures["throughput_rps"]) == {"1", "2", "4"} and min(figures["throughput_rps"].values()) > 0
    text = format_server_figures(figures)
    assert "4 clients / 1 client" in text and f"{figures['generation_workers']} generation worker" in text


# --------------------------------------------------------------------------------------------------------- training

def _train_status(server) -> dict:
    return requests.get(f"{server.url}/train/", timeout=30).json()


def _wait_for_train(server, done, what: str) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        status = _train_status(server)
        if done(status):
            return status
        time.sleep(1.0)
    pytest.fail(f"the train task did not {what} in {TRAIN_TIMEOUT_S:.0f} s: {status}\n{server.log_tail()}")


def _bundle_of(server, name: str) -> dict:
    return requests.get(f"{server.url}/info/", timeout=30).json()["models"][name]["bundle"]


def test_train_rejects_bad_params_before_starting(server):
    response = requests.post(f"{server.url}/train/spect_fastgan_B", json={"levels": "CER"}, timeout=30)
    assert response.status_code == 422 and "must be among COR" in response.json()["detail"]
    response = requests.post(f"{server.url}/train/spect_fastgan_A", json={"iterations": 0}, timeout=30)
    assert response.status_code == 422 and "iterations must be an integer in [1, " in response.json()["detail"]


def test_train_status_reports_progress_and_a_stopped_task_keeps_the_previous_bundle(server, tmp_path):
    before = _bundle_of(server, "spect_fastgan_B")
    started = requests.post(f"{server.url}/train/spect_fastgan_B", json={"iterations": 100000, "batch": 4},
                            timeout=30)
    assert started.status_code == 200, started.text
    status = _wait_for_train(server, lambda status: any("train:" in line for line in status.get("details", [])),
                             "report training progress")
    assert any("spect_fastgan_B: training version 1.0.1 for 100000 iterations" in line for line in status["details"])
    assert requests.delete(f"{server.url}/train/", timeout=30).json()["status"] == "STOPPED"
    assert _bundle_of(server, "spect_fastgan_B") == before
    result, _ = _parts(_infer(server.url, "spect_fastgan_B", OBLIQUE_STUDY, {"level": "COR", "pattern": "normal"}),
                       tmp_path)
    assert (result["version"], result["sha256"]) == (before["version"], before["sha256"])


def test_a_finished_train_task_publishes_a_new_version_that_infer_uses_without_restart(in_process):
    client = in_process.client
    before = client.get("/info/").json()["models"]["spect_fastgan_B"]["bundle"]
    response = client.post("/train/spect_fastgan_B", params={"run_sync": True},
                           json={"iterations": 1, "batch": 4, "levels": "COR", "force": True})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "1.0.1"
    after = client.get("/info/").json()["models"]["spect_fastgan_B"]["bundle"]
    assert after["version"] == "1.0.1" and after["sha256"] != before["sha256"]
    result = _infer(client, "spect_fastgan_B", CACHED_STUDY, {"level": "COR", "pattern": "normal"}, "json").json()
    assert (result["version"], result["sha256"]) == ("1.0.1", after["sha256"])
