"""spectgan.client: HTTP behaviour against a real local server (retries with backoff, typed 4xx errors, timeouts,
multipart), request expansion, result files and the overview, and the generate -> export -> query -> retrieve chain
through a real Orthanc."""
from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import replace
from urllib.parse import parse_qs

import numpy as np
import pytest
import SimpleITK as sitk
from requests_toolbelt import MultipartEncoder

from conftest import SHIPPED_MODEL
from gan_toy_cohort import toy_cohort  # noqa: F401 (a fixture)
from orthanc_fixtures import orthanc, pacs_login  # noqa: F401 (fixtures)
from scripted_server import MIDLINE, MODEL, ScriptedServer
from spectgan.cli import main
from spectgan.client.batch import expand_conditions, parse_seeds
from spectgan.client.http import (InvalidResponseError, RequestRejectedError, ServerTimeoutError,
                                  ServerUnavailableError, SpectGANClient, model_conditions, parse_multipart)
from spectgan.client.overview import draw_overview
from spectgan.conditions import LEVEL_Z_MM, Condition, ConditionAxes, Level, Pattern, Side, valid_conditions
from spectgan.demo import STUDIES, require_bundles, run_chain
from spectgan.export.dicom import counts_slope, read_scan, write_series
from spectgan.errors import InvalidImageError, NotFoundError, SpectganError
from spectgan.geometry.display import display_orientation, oriented
from spectgan.geometry.registration import pose_from_dict
from spectgan.export.orthanc import LocalOrthanc
from spectgan.export.pacs import pending_count
from spectgan.geometry.roi import hemisphere_masks, hemisphere_stats
from spectgan.results import GenerationResult, LevelPlane, ModelVersion, RegistrationSummary
from test_dicom import make_oblique_scan
from test_pacs import cfind_series, dicomweb_client
from test_server import tiny_models  # noqa: F401 (a fixture: bundles A and B after one training step)

FAST = {"retries": 2, "backoff_s": 0.05}


# ------------------------------------------------------------------------------------------------------ HTTP

def test_5xx_and_dropped_connections_are_retried_with_growing_backoff(tmp_path):
    with ScriptedServer(tmp_path, failures=[503, "drop", 502]) as server:
        client = SpectGANClient(server.url, retries=3, backoff_s=0.1)
        assert MODEL in client.info()["models"]
    times = [request.at for request in server.received]
    assert len(times) == 4
    gaps = np.diff(times)
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4


def test_persistent_5xx_names_the_server_the_attempts_and_its_message(tmp_path):
    with ScriptedServer(tmp_path, failures=[500] * 5, detail="the bundle cannot be read") as server:
        with pytest.raises(ServerUnavailableError,
                           match=r"failed the GET /info/ \(3 attempts\); last: HTTP 500: the bundle cannot be read"):
            SpectGANClient(server.url, **FAST).info()
        assert len(server.received) == 3


def test_a_server_that_is_down_is_a_clear_error_after_the_retries(closed_port):
    port = closed_port
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=rf"server at http://127.0.0.1:{port} failed .* \(3 attempts\); "
                                                     r"last: cannot connect \(.*refused.*\)\. Is the server running"):
        SpectGANClient(f"http://127.0.0.1:{port}", **FAST).info()
    assert time.monotonic() - started >= 0.05 + 0.1


@pytest.mark.parametrize("status, detail, error_type, message", [
    (422, "invalid level 'XX'; allowed: CER, BG, COR", RequestRejectedError,
     "invalid level 'XX'; allowed: CER, BG, COR"),
    (404, "unknown image 'nope'; available: study_a", NotFoundError, "unknown image 'nope'; available: study_a"),
    (422, [{"loc": ["query", "output"], "msg": "value is not a valid enumeration member"}], RequestRejectedError,
     "query.output: value is not a valid enumeration member"),
])
def test_4xx_is_a_typed_error_with_the_servers_message_and_is_not_retried(tmp_path, status, detail, error_type,
                                                                         message):
    with ScriptedServer(tmp_path, failures=[status], detail=detail) as server:
        with pytest.raises(error_type) as caught:
            SpectGANClient(server.url, **FAST).generate("nope", MODEL, "XX", "normal")
        assert len(server.received) == 1
    if error_type is RequestRejectedError:
        assert caught.value.status_code == status and caught.value.message == message
    assert f"(HTTP {status}): {message}" in str(caught.value)


def test_a_slow_answer_is_a_timeout_error_without_a_retry(tmp_path):
    with ScriptedServer(tmp_path, failures=[1.5]) as server:
        with pytest.raises(ServerTimeoutError, match=r"did not answer the GET /info/ within 0.3 s"):
            SpectGANClient(server.url, timeout=(2.0, 0.3), **FAST).info()
        assert len(server.received) == 1  # no retry


def test_multipart_parts_come_back_byte_for_byte():
    rng = np.random.default_rng(0)
    payload = rng.bytes(20000) + b"\r\n--\r\n\r\n\n\r" + rng.bytes(100)
    params = json.dumps({"label": "BG-normal", "é": 1})
    encoder = MultipartEncoder(fields={"params": (None, params, "application/json"),
                                       "image": ("result.nii.gz", payload, "application/gzip")})
    parts = parse_multipart(encoder.content_type, encoder.to_string())
    assert parts["image"].data == payload and parts["image"].filename == "result.nii.gz"
    assert json.loads(parts["params"].data) == {"label": "BG-normal", "é": 1}
    with pytest.raises(InvalidResponseError, match="expected a multipart answer"):
        parse_multipart("application/json", b"{}")
    with pytest.raises(InvalidResponseError, match="malformed multipart"):
        parse_multipart(encoder.content_type, b"no parts at all")


# ------------------------------------------------------------------------------------------------- generation

def test_generate_returns_the_image_with_its_geometry_stats_and_metadata(tmp_path):
    with ScriptedServer(tmp_path) as server, SpectGANClient(server.url, **FAST) as client:
        result = client.generate("study", MODEL, Level.BG, Pattern.UNILATERAL, Side.LEFT, seed=7, psi=0.8)
        (request,) = server.received
    assert request.query == {"image": ["study"], "output": ["all"]}
    assert json.loads(parse_qs(request.body.decode())["params"][0])["psi"] == 0.8
    expected = make_oblique_scan(7).image
    for getter in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(result.image, getter)(), getattr(expected, getter)(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(result.image), sitk.GetArrayViewFromImage(expected))
    assert result.condition == Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT) and result.seed == 7
    assert result.name == "BG-unilateral-left_seed7" and result.midline == MIDLINE
    measured_here = hemisphere_stats(result.image, result.midline).to_dict()
    assert result.stats.to_dict() == {key: pytest.approx(value, rel=1e-6) if isinstance(value, float) else value
                                      for key, value in measured_here.items()}
    assert (result.model.name, result.model.sha256, result.options) == (MODEL, "ab" * 32, {"psi": 0.8})
    masks = hemisphere_masks(result.image, result.midline)  # read back once, split at the server's midline
    assert all((sitk.GetArrayViewFromImage(given) == sitk.GetArrayViewFromImage(expected)).all()
               for given, expected in zip(result.masks, masks))


def test_a_result_reads_back_from_its_json_as_it_was_built():
    image = make_oblique_scan(5).image
    built = GenerationResult.measured(
        image, MIDLINE, condition=Condition(Level.COR, Pattern.BILATERAL), seed=5,
        model=ModelVersion(MODEL, "1.0.0", "ab" * 32, "fastgan"), reference="study", options={"psi": 0.7},
        level_plane=LevelPlane((1.0, 2.0, 3.0), (0.0, 0.0, 1.0)),
        registration=RegistrationSummary(0.9, -0.5, {"translation": [1.0, 2.0, 3.0]}, True),
        timings_s={"total": 0.25}, result_id="abc")
    values = json.loads(json.dumps(built.to_json()))
    assert values["synthetic"] is True and values["psi"] == 0.7 and values["condition"]["label"] == "COR-bilateral"
    assert GenerationResult.from_json(values, image) == built
    with pytest.raises(ValueError, match="lacks midline, image"):
        GenerationResult.from_json({key: value for key, value in values.items() if key not in ("midline", "image")},
                                   image)


def test_generate_sends_every_param_as_monai_label_expects(tmp_path):
    with ScriptedServer(tmp_path) as server, SpectGANClient(server.url, **FAST) as client:
        client.generate("study 1", MODEL, "COR", "normal", seed=None, output_space="slice")
    (request,) = server.received
    assert request.path == f"/infer/{MODEL}" and request.query["image"] == ["study 1"]
    assert json.loads(parse_qs(request.body.decode())["params"][0]) == {
        "level": "COR", "pattern": "normal", "side": None, "seed": None, "output_space": "slice"}  # psi: the model's


def test_upload_sends_the_volume_and_names_it_by_content(tmp_path):
    image = make_oblique_scan(3).image
    path = tmp_path / "my scan.nii.gz"
    sitk.WriteImage(image, str(path), True)
    (tmp_path / "notes.nii.gz").write_text("not an image")
    with ScriptedServer(tmp_path / "server") as server, SpectGANClient(server.url, **FAST) as client:
        (tmp_path / "server").mkdir()
        from_file = client.upload(path)
        assert from_file.startswith("my_scan-") and client.upload(path) == from_file
        from_image = client.upload(image)
        with pytest.raises(InvalidImageError, match="notes.nii.gz"):
            client.upload(tmp_path / "notes.nii.gz")
        assert len(server.received) == 3
    assert server.uploads[from_file] == path.read_bytes()
    received = tmp_path / "received.nii.gz"
    received.write_bytes(server.uploads[from_image])
    read = sitk.ReadImage(str(received))
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)


def test_unknown_model_names_the_servers_models(tmp_path):
    with ScriptedServer(tmp_path) as server, SpectGANClient(server.url, **FAST) as client:
        with pytest.raises(NotFoundError, match=f"has no model 'spect_fastgan_C' .*; it has: {MODEL}"):
            client.conditions("spect_fastgan_C")
        assert client.conditions(MODEL) == valid_conditions()


# --------------------------------------------------------------------------------------------- request expansion

MODEL_A = valid_conditions()
MODEL_B = model_conditions({"axes": ConditionAxes.declare(valid_conditions([Level.COR])).to_list()})


@pytest.mark.parametrize("available, levels, patterns, sides, expected", [
    (MODEL_A, "all", "all", None, [c.label for c in MODEL_A]),
    (MODEL_A, "CER,BG", "bilateral", None, ["BG-bilateral"]),
    (MODEL_A, "COR", "unilateral,normal", "left", ["COR-normal", "COR-unilateral-left"]),
    (MODEL_B, None, "unilateral", "all", ["COR-unilateral-left", "COR-unilateral-right"]),
])
def test_expand_conditions(available, levels, patterns, sides, expected):
    assert [c.label for c in expand_conditions(available, levels, patterns, sides)] == expected


@pytest.mark.parametrize("available, levels, patterns, sides, message", [
    (MODEL_A, "CER", "bilateral", None, "no valid condition in this request; the model's conditions: CER-normal"),
    (MODEL_B, "BG", "normal", None, "the model has no level BG; its conditions: COR-normal"),
    (MODEL_A, "BG", "normal", "left", "sides apply to the unilateral pattern only"),
    (MODEL_A, "BG", "ischemic", None, "invalid pattern 'ischemic'; allowed: normal, unilateral, bilateral"),
])
def test_expand_conditions_names_what_is_allowed(available, levels, patterns, sides, message):
    with pytest.raises(ValueError, match=message):
        expand_conditions(available, levels, patterns, sides)


def test_parse_seeds():
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0-2, 7,1") == [0, 1, 2, 7]
    for bad in ("5-3", "x", "1,,2", "-1"):
        with pytest.raises(ValueError, match="invalid seeds"):
            parse_seeds(bad)


# ----------------------------------------------------------------------------------------------------- overview

def test_display_is_radiological_for_any_direction_and_leaves_the_data_alone():
    """Whatever the direction matrix, the patient's left (+x) is on the screen's right and anterior is up."""
    for direction in [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                      (0, 1, 0, 1, 0, 0, 0, 0, -1)]:
        image = sitk.Image(5, 4, 1, sitk.sitkFloat32)
        image.SetDirection(direction)
        x_mm = np.zeros((4, 5))
        y_mm = np.zeros((4, 5))
        for row in range(4):
            for column in range(5):
                x_mm[row, column], y_mm[row, column], _ = image.TransformIndexToPhysicalPoint((column, row, 0))
        orientation = display_orientation(image)
        shown_x, shown_y = oriented(x_mm, orientation), oriented(y_mm, orientation)
        assert (np.diff(shown_x, axis=1) > 0).all() and (np.diff(shown_y, axis=0) > 0).all(), direction


def test_overview_draws_every_scan(tmp_path):
    with ScriptedServer(tmp_path) as server, SpectGANClient(server.url, **FAST) as client:
        results = [client.generate("s", MODEL, "BG", "unilateral", "left", seed=seed) for seed in (0, 1)]
        results.append(client.generate("s", MODEL, "BG", "normal", seed=2))
    unmeasured = replace(results[0], stats=None, masks=None, seed=9, stats_error="no brain")
    path = draw_overview(results + [unmeasured], tmp_path / "overview.png")
    picture = sitk.ReadImage(str(path))
    assert picture.GetWidth() > 400 and picture.GetHeight() > 400


# ------------------------------------------------------------------------------------ generate -> PACS -> back

def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.parametrize("protocol", ["dicom", "dicomweb"])
def test_generate_command_exports_and_the_pacs_gives_back_the_same_scans(protocol, pacs_login, tmp_path):
    out = tmp_path / "out"
    url = pacs_login.dicom_url if protocol == "dicom" else pacs_login.dicomweb_url
    with ScriptedServer(tmp_path) as server:
        assert main(["generate", "--server", server.url, "--image", "study", "--model", MODEL, "--level", "BG",
                     "--pattern", "unilateral,normal", "--side", "left", "--seeds", "0-1", "--out", str(out),
                     "--pacs", url, "--no-progress"]) == 0
    names = ["BG-normal_seed0", "BG-normal_seed1", "BG-unilateral-left_seed0", "BG-unilateral-left_seed1"]
    assert sorted(path.name for path in out.glob("*.nii.gz")) == [f"{name}.nii.gz" for name in names]
    rows = read_rows(out / "stats.csv")
    assert [row["file"] for row in rows] == [f"{name}.nii.gz" for name in names]  # model order, then seeds
    entries = json.loads((out / "stats.json").read_text())
    assert [entry["file"] for entry in entries] == [row["file"] for row in rows]
    assert (out / "overview.png").stat().st_size > 10000
    assert pending_count(out / "dicom") == 0

    client = dicomweb_client(pacs_login)
    studies = {item["0020000D"]["Value"][0] for item in client.search_for_studies()}
    for entry in entries:
        folder = out / "dicom" / entry["file"].replace(".nii.gz", "")
        study_uid = {read.StudyInstanceUID for read in map(_header, folder.glob("*.dcm"))}.pop()
        assert study_uid in studies
        assert sorted(cfind_series(pacs_login, study_uid).values()).count("NM") == len(entries)
        retrieved = [client.retrieve_instance(header.StudyInstanceUID, header.SeriesInstanceUID,
                                              header.SOPInstanceUID) for header in map(_header, folder.glob("*.dcm"))]
        write_series(retrieved, tmp_path / "back" / folder.name)
        image, stats = read_scan(tmp_path / "back" / folder.name)
        written = sitk.ReadImage(str(out / entry["file"]))
        for getter in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(image, getter)(), getattr(written, getter)(), atol=1e-5)
        slope = counts_slope(_header(next(folder.glob("NM_*.dcm"))))
        assert np.abs(sitk.GetArrayFromImage(image) - sitk.GetArrayFromImage(written)).max() <= slope / 2 + 1e-5
        assert stats == {key: entry["stats"][key] for key in stats}


def test_generate_command_makes_scans_from_the_reference_patients_own_slice(shipped_server, tmp_path):
    """``spectgan generate --base reference`` through the real server with model A: a left MCA defect added to a
    normal study's slice, and the left MCA defect of a study that has one taken away (``--remove left``)."""
    command = ["generate", "--server", shipped_server.url, "--model", SHIPPED_MODEL, "--level", "BG",
               "--base", "reference", "--territory", "MCA", "--seeds", "0", "--no-progress"]
    assert main([*command, "--image", "study_normal_axial", "--pattern", "unilateral", "--side", "left",
                 "--severity", "0.3", "--out", str(tmp_path / "added")]) == 0
    assert main([*command, "--image", "study_unilateral_left_oblique", "--pattern", "normal", "--remove", "left",
                 "--severity", "0.27", "--out", str(tmp_path / "removed")]) == 0
    (added,), (removed,) = (json.loads((tmp_path / name / "stats.json").read_text()) for name in ("added", "removed"))
    assert (added["file"], removed["file"]) == ("BG-unilateral-left_reference.nii.gz", "BG-normal_reference.nii.gz")
    assert added["derivation"]["removed"] == [] and added["stats"]["ai"] < -5  # the defect at the patient's left
    assert removed["derivation"]["removed"] == [{"side": "left", "territory": "MCA", "severity": 0.27}]
    assert abs(removed["stats"]["ai"]) < 5  # the study's own left defect (27 %) is gone
    assert all(entry["base"] == "reference" and entry["synthetic"] for entry in (added, removed))
    assert [row["file"] for row in read_rows(tmp_path / "added" / "stats.csv")] == [added["file"]]


def test_generate_command_takes_the_learned_method(shipped_server, tmp_path):
    """``--method learned``: model A inverted on a normal study's BG slice adds the left MCA defect; the result
    records the method."""
    assert main(["generate", "--server", shipped_server.url, "--model", SHIPPED_MODEL, "--level", "BG", "--base",
                 "reference", "--method", "learned", "--image", "study_normal_axial", "--pattern", "unilateral",
                 "--side", "left", "--territory", "MCA", "--severity", "0.5", "--seeds", "0", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    (added,) = json.loads((tmp_path / "stats.json").read_text())
    assert (added["derivation"]["method"], added["derivation"]["removed"]) == ("learned", [])
    assert "(learned method)" in added["derivation"]["description"]
    assert added["stats"]["ai"] < -5 and added["synthetic"]  # the defect at the patient's left


def _header(path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def test_exports_of_one_run_over_one_reference_land_in_one_study(pacs_login, tmp_path, capsys):
    common = ["--image", "study", "--model", MODEL, "--pattern", "normal", "--seeds", "1", "--pacs",
              pacs_login.dicomweb_url, "--no-progress"]
    with ScriptedServer(tmp_path) as server:
        generate = ["generate", "--server", server.url, *common]
        assert main([*generate, "--level", "BG", "--out", str(tmp_path / "first")]) == 0
        run_id = re.search(r"with --run (\S+)", capsys.readouterr().out).group(1)
        assert main([*generate, "--level", "COR", "--out", str(tmp_path / "second"), "--run", run_id]) == 0
        assert main([*generate, "--level", "CER", "--out", str(tmp_path / "third")]) == 0  # a new run
        received = len(server.received)
        assert main([*generate, "--level", "CER", "--out", str(tmp_path / "fourth"), "--run", "yesterday"]) == 2
        assert len(server.received) == received  # refused before anything was generated
    assert "run id 'yesterday' is not of the form YYYYMMDDTHHMMSS-<hex>" in capsys.readouterr().err
    studies = {batch: {header.StudyInstanceUID for header in map(_header, (tmp_path / batch / "dicom").rglob("*.dcm"))}
               for batch in ("first", "second", "third")}
    assert len(studies["first"]) == 1 and studies["second"] == studies["first"] != studies["third"]
    (study_uid,) = studies["first"]
    assert sorted(cfind_series(pacs_login, study_uid).values()) == ["NM", "NM", "SEG", "SEG", "SR", "SR"]


def test_wrong_pacs_password_is_a_clear_error_and_the_scans_stay_pending(pacs_login, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("SPECTGAN_PACS_PASSWORD", "not-the-password")
    reference = tmp_path / "reference.nii.gz"  # a local file as --image: uploaded first
    sitk.WriteImage(make_oblique_scan(0).image, str(reference))
    with ScriptedServer(tmp_path) as server:
        assert main(["generate", "--server", server.url, "--image", str(reference), "--model", MODEL, "--level",
                     "COR", "--pattern", "normal", "--seeds", "4", "--out", str(tmp_path / "out"), "--pacs",
                     pacs_login.dicomweb_url, "--no-progress"]) == 2
    (image_id,) = server.uploads
    assert image_id.startswith("reference-") and server.received[-1].query["image"] == [image_id]
    error = capsys.readouterr().err
    assert "spectgan generate: error: authentication failed" in error
    assert f"resend with: spectgan export {tmp_path / 'out' / 'dicom'} --retry" in error
    assert (tmp_path / "out" / "COR-normal_seed4.nii.gz").is_file()
    assert pending_count(tmp_path / "out" / "dicom") == 3
    assert os.environ["SPECTGAN_PACS_PASSWORD"] == "not-the-password"


# ------------------------------------------------------------------------------------ the real server (the demo)

def test_demo_refuses_to_start_without_bundles_and_says_how_to_make_them(tmp_path):
    with pytest.raises(SpectganError, match=r"missing trained model bundle\(s\): .*spect_fastgan_A, .*spect_fastgan_B"
                                            r"[\s\S]*spectgan train --cohort sample_data/cohorts/default --levels COR "
                                            r"--out runs/spect_fastgan_B --export-bundle"):
        require_bundles(tmp_path)


@pytest.mark.slow
def test_demo_chain_through_the_real_server_and_orthanc(tiny_models, tmp_path, monkeypatch, capsys):
    """Upload a sample study, generate every valid condition of A and B over it, overviews, export to Orthanc."""
    for name in ("SPECTGAN_PACS_USERNAME", "SPECTGAN_PACS_PASSWORD"):
        monkeypatch.setenv(name, "")  # run_chain sets them for its own Orthanc; restored after the test
    generated, orthanc_dir = run_chain(tmp_path, tiny_models, "study_unilateral_left_oblique", seed=3)
    printed = capsys.readouterr().out
    sidecar = json.loads((STUDIES / "study_unilateral_left_oblique.json").read_text())
    study_to_template = pose_from_dict(sidecar["template_to_study"])
    for model, expected in (("spect_fastgan_A", valid_conditions()),
                            ("spect_fastgan_B", valid_conditions([Level.COR]))):
        entries = json.loads((generated / model / "stats.json").read_text())
        assert [entry["condition"]["label"] for entry in entries] == [condition.label for condition in expected]
        assert (generated / model / "overview.png").is_file() and pending_count(generated / model / "dicom") == 0
        for entry in entries:
            image = sitk.ReadImage(str(generated / model / entry["file"]))
            assert entry["seed"] == 3 and entry["image"].startswith("study_unilateral_left_oblique-")
            normal = np.asarray(image.GetDirection()).reshape(3, 3)[:, 2]
            plane_point = study_to_template.TransformPoint((0.0, 0.0, LEVEL_Z_MM[Level(entry["condition"]["level"])]))
            assert abs(np.dot(np.asarray(plane_point) - image.GetOrigin(), normal)) < 4.0  # on the level's plane
            here = hemisphere_stats(image, GenerationResult.from_json(entry, image).midline).to_dict()
            assert entry["stats"] == {key: pytest.approx(value, rel=1e-6) if isinstance(value, float) else value
                                      for key, value in here.items()}
        assert f"{model} in Orthanc: http://127.0.0.1:" in printed
    with LocalOrthanc(storage_dir=orthanc_dir) as pacs:  # the storage the demo leaves, served again
        modalities = [series["MainDicomTags"]["Modality"] for series in pacs.get("/series?expand")]
        assert len(pacs.get("/studies")) == len(pacs.get("/patients")) == 1  # A and B over one reference: one study
    conditions = len(valid_conditions()) + len(valid_conditions([Level.COR]))
    assert sorted(modalities) == sorted(["NM", "SEG", "SR"] * conditions)
