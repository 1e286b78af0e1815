"""spectgan.serving.generation_pool: generation in worker processes gives what the service gives in-process, keeps the
error statuses, picks up a retrained bundle without a restart, and replaces a worker that dies."""
from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from gan_toy_cohort import one_thread, toy_cohort, toy_run  # noqa: F401 (fixtures)

from spectgan.models.fastgan import export_bundle
from spectgan.serving.generation_pool import GenerationPool
from spectgan.serving.service import NOT_FOUND, SERVICE_UNAVAILABLE, UNPROCESSABLE, GenerationService, ServiceError
from spectgan.serving.settings import SAMPLE_STUDIES_DIR, generation_workers_from

MODEL = "spect_fastgan_A"
STUDY = SAMPLE_STUDIES_DIR / "study_unilateral_left_oblique.nii.gz"
PARAMS = {"level": "BG", "pattern": "unilateral", "side": "left", "seed": 5, "output_space": "reference"}
WORKERS = 2


@pytest.fixture(scope="module")
def models(toy_run, tmp_path_factory) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("pool_models")
    with one_thread():
        export_bundle(toy_run, folder / MODEL, name=MODEL)
    return folder


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


def test_the_pool_gives_the_in_process_result_also_under_concurrent_requests(pool, models):
    service = GenerationService(models, [MODEL])
    seeds = range(8)
    expected = {}
    for seed in seeds:
        path, result = service.generate_file(MODEL, STUDY, {**PARAMS, "seed": seed})
        expected[seed] = (sitk.GetArrayFromImage(_read(path)), result)
    with ThreadPoolExecutor(max_workers=4) as clients:
        answers = list(clients.map(lambda seed: pool.generate_file(MODEL, STUDY, {**PARAMS, "seed": seed}), seeds))
    # Each process registers the study on its own: the same pose to rounding (about 1e-14 mm), so nearly equal images.
    for seed, (path, result) in zip(seeds, answers):
        image = _read(path)
        array, local = expected[seed]
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), array, rtol=1e-5, atol=1e-4)
        assert result["seed"] == seed and result["condition"] == local["condition"]
        for name in ("mc", "left", "right", "lr", "ai"):
            assert result["stats"][name] == pytest.approx(local["stats"][name], rel=1e-6, abs=1e-9), name
        for key in ("origin", "spacing", "direction"):
            np.testing.assert_allclose(result["geometry"][key], local["geometry"][key], atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), result["geometry"]["direction"], atol=1e-6)


@pytest.mark.parametrize("params, image, model, status, message", [
    ({"level": "CER", "pattern": "bilateral"}, STUDY, MODEL, UNPROCESSABLE, "allowed patterns at CER"),
    ({"level": "BG", "pattern": "normal"}, STUDY.with_name("missing.nii.gz"), MODEL, NOT_FOUND, "does not exist"),
    ({"level": "COR", "pattern": "normal"}, STUDY, "spect_fastgan_B", NOT_FOUND, "this server has: " + MODEL),
])
def test_errors_keep_their_status_and_message(pool, params, image, model, status, message):
    with pytest.raises(ServiceError) as raised:
        pool.generate_file(model, image, params)
    assert raised.value.status == status and message in str(raised.value)


def test_a_retrained_bundle_is_used_without_a_restart(pool, models, toy_run):  # noqa: F811
    path, before = pool.generate_file(MODEL, STUDY, PARAMS)
    path.unlink()
    with one_thread():
        export_bundle(toy_run, models / MODEL, name=MODEL, version="1.0.1")
    for _ in range(WORKERS):  # every worker serves the new version
        path, after = pool.generate_file(MODEL, STUDY, PARAMS)
        path.unlink()
        assert after["version"] == "1.0.1" != before["version"]


def test_a_worker_that_dies_fails_its_request_with_503_and_is_replaced(pool):
    killed = pool.worker_pids[0]
    os.kill(killed, signal.SIGKILL)
    statuses = []
    for _ in range(WORKERS + 1):
        try:
            path, _ = pool.generate_file(MODEL, STUDY, PARAMS)
            path.unlink()
            statuses.append(200)
        except ServiceError as error:
            statuses.append(error.status)
            assert "send the request again" in str(error)
    assert statuses.count(SERVICE_UNAVAILABLE) == 1 and statuses[-1] == 200, statuses
    assert len(pool.worker_pids) == WORKERS and killed not in pool.worker_pids


def test_generation_workers_setting():
    assert generation_workers_from({"generation_workers": "3"}) == 3
    assert generation_workers_from({"generation_workers": "0"}) == 0
    assert generation_workers_from({}) >= 1
    with pytest.raises(ValueError, match="whole number of processes"):
        generation_workers_from({"generation_workers": "two"})
