"""spectgan.serving.generation_pool: generation in worker processes gives what the service gives in-process, keeps the
domain errors as they are, picks up a retrained bundle without a restart, and replaces a worker that dies."""
from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from gan_toy_cohort import one_thread, toy_cohort, toy_run  # noqa: F401 (fixtures)

from spectgan.errors import InvalidRequestError, NotFoundError, UnavailableError
from spectgan.models.fastgan import export_bundle
from spectgan.serving.generation_pool import GenerationPool
from spectgan.serving.service import GenerationService
from spectgan.serving.settings import SAMPLE_STUDIES_DIR, generation_workers_from

MODEL = "spect_fastgan_A"
STUDY = SAMPLE_STUDIES_DIR / "study_unilateral_left_oblique.nii.gz"
PARAMS = {"level": "BG", "pattern": "unilateral", "side": "left", "seed": 5, "output_space": "reference"}
WORKERS = 2


def _models(toy_run, folder: Path) -> Path:  # noqa: F811
    with one_thread():
        export_bundle(toy_run, folder / MODEL, name=MODEL)
    return folder


@pytest.fixture(scope="module")
def models(toy_run, tmp_path_factory) -> Path:  # noqa: F811
    """Bundles no test changes (a test that retrains gets its own folder)."""
    return _models(toy_run, tmp_path_factory.mktemp("pool_models"))


@pytest.fixture(scope="module")
def service(models) -> GenerationService:
    return GenerationService(models, [MODEL])


@pytest.fixture(scope="module")
def pool(models):
    pool = GenerationPool(models, [MODEL], WORKERS)
    pool.start()
    yield pool
    pool.close()


def _read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    finally:
        path.unlink()


def test_the_pool_gives_the_in_process_result_also_under_concurrent_requests(pool, service):
    requests = {seed: service.request(MODEL, {**PARAMS, "seed": seed}) for seed in range(8)}
    expected = {}
    for seed, request in requests.items():
        path, result = service.generate_file(request, STUDY)
        expected[seed] = (sitk.GetArrayFromImage(_read(path)), result)
    with ThreadPoolExecutor(max_workers=4) as clients:
        answers = list(clients.map(lambda request: pool.generate_file(request, STUDY), requests.values()))
    # Each process registers the study on its own: the same pose to rounding (about 1e-14 mm), so nearly equal images.
    for seed, (path, result) in zip(requests, answers):
        image = _read(path)
        array, local = expected[seed]
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), array, rtol=1e-5, atol=1e-4)
        assert result["seed"] == seed and result["condition"] == local["condition"]
        for name in ("mc", "left", "right", "lr", "ai"):
            assert result["stats"][name] == pytest.approx(local["stats"][name], rel=1e-6, abs=1e-9), name
        for key in ("origin", "spacing", "direction"):
            np.testing.assert_allclose(result["geometry"][key], local["geometry"][key], atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), result["geometry"]["direction"], atol=1e-6)


@pytest.mark.parametrize("change, image, error, message", [
    ({}, STUDY.with_name("missing.nii.gz"), NotFoundError, "does not exist"),
    ({}, Path(__file__), InvalidRequestError, "cannot be used"),
    ({"model": "spect_fastgan_B"}, STUDY, NotFoundError, "this server has: " + MODEL),
])
def test_errors_cross_from_the_worker_as_they_are(pool, service, change, image, error, message):
    with pytest.raises(error, match=message):
        pool.generate_file(replace(service.request(MODEL, PARAMS), **change), image)


def test_a_retrained_bundle_is_used_without_a_restart(toy_run, tmp_path):  # noqa: F811
    models = _models(toy_run, tmp_path)
    request = GenerationService(models, [MODEL]).request(MODEL, PARAMS)
    pool = GenerationPool(models, [MODEL], WORKERS)
    try:
        path, before = pool.generate_file(request, STUDY)
        path.unlink()
        with one_thread():
            export_bundle(toy_run, models / MODEL, name=MODEL, version="1.0.1")
        for _ in range(WORKERS):  # every worker serves the new version
            path, after = pool.generate_file(request, STUDY)
            path.unlink()
            assert after["version"] == "1.0.1" != before["version"]
    finally:
        pool.close()


def test_a_worker_that_dies_fails_its_request_as_unavailable_and_is_replaced(pool, service):
    request = service.request(MODEL, PARAMS)
    killed = pool.worker_pids[0]
    os.kill(killed, signal.SIGKILL)
    outcomes = []
    for _ in range(WORKERS + 1):
        try:
            path, _ = pool.generate_file(request, STUDY)
            path.unlink()
            outcomes.append("ok")
        except UnavailableError as error:
            outcomes.append("unavailable")
            assert "send the request again" in str(error)
    assert outcomes.count("unavailable") == 1 and outcomes[-1] == "ok", outcomes
    assert len(pool.worker_pids) == WORKERS and killed not in pool.worker_pids


def test_generation_workers_setting():
    assert generation_workers_from({"generation_workers": "3"}) == 3
    assert generation_workers_from({"generation_workers": "0"}) == 0
    assert generation_workers_from({}) >= 1
    with pytest.raises(ValueError, match="whole number of processes"):
        generation_workers_from({"generation_workers": "two"})
