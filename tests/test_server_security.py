"""A real server with an API token, served over TLS with a self-signed certificate this module makes: every route
wants the token (MONAI Label's own datastore routes included), both clients send it, uploads are checked, no answer
or log line shows the token or a server path; a browser logs in once with the token for a session cookie
instead."""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import SimpleITK as sitk
from gan_toy_cohort import toy_cohort  # noqa: F401 (a fixture)
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from test_server import STUDY_IDS, tiny_models  # noqa: F401 (tiny_models: a fixture)

from spectgan.client.http import SpectGANClient
from spectgan.errors import AuthenticationError
from spectgan.serving.settings import SAMPLE_STUDIES_DIR
from spectgan.serving.uploads import ALLOWED_TYPES, ID_RULE
from spectgan.tools.server import ServerProcess

MAX_UPLOAD_MB = 1
STUDY = "study_normal_axial"
PARAMS = {"level": "COR", "pattern": "normal", "seed": 1}
PATH_VALUES = {"model": "spect_fastgan_A", "image": STUDY, "id": STUDY, "session_id": "none"}
# The routes a browser reaches without the token: the page's login (the page itself and its files are not in the
# OpenAPI document).
LOGIN_ROUTES = {("GET", "/spectgan/api/session"), ("POST", "/spectgan/api/login"), ("POST", "/spectgan/api/logout")}


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(key file, certificate file) for 127.0.0.1, made with openssl."""
    key, certificate = folder / "key.pem", folder / "certificate.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    return key, certificate


@pytest.fixture(scope="module")
def secured(tmp_path_factory, tiny_models):  # noqa: F811
    """The server with a token and TLS; ``token``, ``certificate`` and ``log`` beside it."""
    folder = tmp_path_factory.mktemp("secured")
    studies = folder / "studies"
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    token = secrets.token_urlsafe(24)
    tls = self_signed_certificate(folder)
    with ServerProcess(studies, tiny_models, folder / "server.log", token=token, tls=tls,
                       conf={"max_upload_mb": str(MAX_UPLOAD_MB), "generation_workers": "1"}) as server:
        server.token, server.certificate = token, tls[1]
        yield server


def _routes(server) -> list[tuple[str, str]]:
    """(method, path) of every route the server has, from its OpenAPI document, path parameters filled in."""
    document = requests.get(f"{server.url}/openapi.json", headers=server.headers, verify=server.verify,
                            timeout=30).json()
    routes = []
    for path, methods in document["paths"].items():
        for name, value in PATH_VALUES.items():
            path = path.replace(f"{{{name}}}", value)
        routes += [(method.upper(), path) for method in methods]
    return routes


def test_every_route_wants_the_token_and_the_answer_says_how_to_send_it(secured):
    routes = _routes(secured)
    assert ("DELETE", "/datastore/image") in routes and ("PUT", "/datastore/image") in routes and len(routes) > 30
    assert LOGIN_ROUTES <= set(routes)
    routes = [route for route in routes if route not in LOGIN_ROUTES]
    hidden = [("DELETE", "/datastore/"), ("PUT", "/datastore/"), ("GET", "/no/such/route")]  # not in the schema
    for method, path in routes + hidden:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": secured.token}):
            response = requests.request(method, f"{secured.url}{path}", params={"id": STUDY, "image": STUDY},
                                        headers=headers, verify=secured.verify, timeout=30)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            if method != "HEAD":  # an answer to HEAD has no body
                assert "Authorization: Bearer" in response.text or "not this server's token" in response.text
            assert secured.token not in response.text
    listed = requests.get(f"{secured.url}/datastore/", params={"output": "all"}, headers=secured.headers,
                          verify=secured.verify, timeout=30).json()
    assert STUDY in json.dumps(listed), "a refused DELETE removed the study"


def test_the_official_client_sends_the_token_with_update_auth(secured, tmp_path):
    client = MONAILabelClient(secured.url, tmpdir=str(tmp_path))
    with pytest.raises(MONAILabelClientException, match="401"):
        client.info()
    client.update_auth({"token_type": "Bearer", "access_token": secured.token})
    assert set(client.info()["models"]) == {"spect_fastgan_A", "spect_fastgan_B"}
    path, result = client.infer("spect_fastgan_B", STUDY, PARAMS)
    assert result["seed"] == 1 and sitk.ReadImage(path).GetSize()[2] == 1


def test_our_client_sends_the_token_over_tls(secured):
    with SpectGANClient(secured.url, token="not-it", verify=str(secured.certificate), retries=0) as client:
        with pytest.raises(AuthenticationError, match="not this server's token"):
            client.info()
    with SpectGANClient(secured.url, token=secured.token, verify=str(secured.certificate)) as client:
        assert secured.token not in repr(client)
        result = client.generate(STUDY, "spect_fastgan_B", "COR", "normal", seed=1)
        assert result.seed == 1 and result.image.GetSize()[2] == 1
    with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP on a TLS port
        requests.get(secured.url.replace("https://", "http://") + "/info/", timeout=30)


def _upload(server, image_id: str | None, filename: str, data: bytes) -> requests.Response:
    return requests.put(f"{server.url}/datastore/", params={"image": image_id} if image_id else {},
                        files={"file": (filename, data)}, data={"params": "{}"}, headers=server.headers,
                        verify=server.verify, timeout=60)


def test_uploads_take_plain_ids_and_nifti_or_dicom_under_the_size_limit(secured):
    nifti = (SAMPLE_STUDIES_DIR / f"{STUDY}.nii.gz").read_bytes()
    refused = {
        "../../evil": (_upload(secured, "../../evil", "evil.nii.gz", nifti), 422, ID_RULE),
        "a/b": (_upload(secured, "a/b", "a.nii.gz", nifti), 422, ID_RULE),
        "name from a path": (_upload(secured, None, "../...nii.gz", nifti), 422, ID_RULE),
        "text": (_upload(secured, "notes", "notes.txt", b"hello"), 422, ALLOWED_TYPES),
        "text named NIfTI": (_upload(secured, "fake", "fake.nii.gz", b"hello" * 100), 422, ALLOWED_TYPES),
        "text named DICOM": (_upload(secured, "fake", "fake.dcm", b"hello" * 100), 422, ALLOWED_TYPES),
        "too large": (_upload(secured, "large", "large.nii", b"\0" * (MAX_UPLOAD_MB * 2**20 + 10)), 413,
                      f"at most {MAX_UPLOAD_MB} MB"),
        "delete with a path id": (requests.delete(f"{secured.url}/datastore/", params={"id": "../studies"},
                                                  headers=secured.headers, verify=secured.verify, timeout=30), 422,
                                  ID_RULE),
    }
    for case, (response, status, allowed) in refused.items():
        assert response.status_code == status, (case, response.text)
        assert allowed in response.json()["detail"], (case, response.text)
    accepted = _upload(secured, "my_scan", "scan.nii.gz", nifti)
    assert accepted.status_code == 200 and accepted.json()["image"] == "my_scan", accepted.text
    with SpectGANClient(secured.url, token=secured.token, verify=str(secured.certificate)) as client:
        assert client.generate("my_scan", "spect_fastgan_B", "COR", "normal", seed=2).seed == 2
    listed = json.dumps(requests.get(f"{secured.url}/datastore/", params={"output": "all"}, headers=secured.headers,
                                     verify=secured.verify, timeout=30).json())
    assert "evil" not in listed and "notes" not in listed and "large" not in listed


def _login(server, token) -> requests.Response:
    return requests.post(f"{server.url}/spectgan/api/login", json={"token": token}, verify=server.verify, timeout=30)


def test_a_browser_logs_in_for_a_session_cookie_that_stands_for_the_token_until_logout(secured):
    wrong = _login(secured, "not-" + secured.token)
    assert wrong.status_code == 401 and "not this server's API token" in wrong.json()["detail"]
    assert "set-cookie" not in wrong.headers and secured.token not in wrong.text
    assert _login(secured, "").status_code == 422
    as_form = requests.post(f"{secured.url}/spectgan/api/login", data={"token": secured.token}, verify=secured.verify,
                            timeout=30)
    assert as_form.status_code == 400  # JSON only: no form of another site logs a browser in

    logged_in = _login(secured, secured.token)
    assert logged_in.status_code == 200 and secured.token not in logged_in.text
    cookie = logged_in.headers["set-cookie"]
    assert secured.token not in cookie
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age", "secure"} <= attributes and "samesite=strict" in cookie.lower()
    session = {"spectgan_session": logged_in.cookies["spectgan_session"]}

    def status(path: str, **headers) -> int:
        return requests.get(f"{secured.url}{path}", cookies=session, headers=headers, verify=secured.verify,
                            timeout=30).status_code

    assert status("/info/") == 200 and status("/spectgan/api/studies") == 200
    assert status("/info/", Authorization="Bearer wrong-token") == 401  # a token sent is checked, cookie or not
    assert requests.get(f"{secured.url}/spectgan/api/session", cookies=session, verify=secured.verify,
                        timeout=30).json() == {"token_required": True, "logged_in": True}
    logged_out = requests.post(f"{secured.url}/spectgan/api/logout", cookies=session, verify=secured.verify,
                               timeout=30)
    assert logged_out.status_code == 200 and 'spectgan_session=""' in logged_out.headers["set-cookie"]
    assert status("/info/") == 401 and status("/spectgan/api/studies") == 401


def test_the_token_is_in_no_log_line(secured):
    requests.get(f"{secured.url}/info/", headers=secured.headers, verify=secured.verify, timeout=30)
    assert secured.token not in secured.log_path.read_text(errors="replace")


def test_a_request_rejected_for_its_token_is_not_retried(secured):
    with SpectGANClient(secured.url, token="", verify=str(secured.certificate), retries=3, backoff_s=60) as client:
        with pytest.raises(AuthenticationError, match=r"\(HTTP 401\): this server requires an API token"):
            client.info()
