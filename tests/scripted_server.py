"""A real HTTP server on 127.0.0.1 (a thread) that speaks the spectgan server's API from a script, for client tests
that need failures on demand: 5xx, dropped connections, slow answers, 4xx with a message.

``GET /info/``, ``GET /datastore/?output=all``, ``PUT /datastore/?image=ID`` and
``POST /infer/{model}?image=ID&output=all`` answer as the MONAI Label app does (multipart built with
requests_toolbelt, as MONAI Label builds it). Generated images are
``test_dicom.make_oblique_scan`` slices: an oblique one-slice volume whose brain is split by the x = 0 plane.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import SimpleITK as sitk
from requests_toolbelt import MultipartEncoder

from spectgan.client.http import parse_multipart
from spectgan.conditions import ConditionAxes, parse_condition, valid_conditions
from spectgan.geometry.roi import MidlinePlane
from spectgan.results import GenerationResult, ModelVersion
from test_dicom import make_oblique_scan

MIDLINE = MidlinePlane(point=(0.0, 18.0, 10.0), normal=(1.0, 0.0, 0.0))  # the plane make_oblique_scan splits at
MODEL = "spect_fastgan_A"
VERSION, SHA256 = "1.0.0", "ab" * 32
STUDIES = ("study",)  # the datastore's studies before any upload


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict
    body: bytes
    headers: dict
    at: float


class ScriptedServer:
    """``failures``: what the first requests get, in order: an HTTP status (answered with a JSON ``detail``),
    ``"drop"`` (the connection is closed without an answer) or a float (seconds to wait before answering)."""

    def __init__(self, tmp_path: Path, failures: list | None = None, detail: object = "scripted failure"):
        self.failures = list(failures or [])
        self.detail = detail
        self.received: list[Received] = []
        self.uploads: dict[str, bytes] = {}
        self.images: dict[str, sitk.Image] = {}  # what each generate answered, by file name
        self.folder = tmp_path
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def next_failure(self):
        with self._lock:
            return self.failures.pop(0) if self.failures else None

    def info(self) -> dict:
        axes = ConditionAxes.declare(valid_conditions())
        return {"name": "spectgan", "models": {MODEL: {"axes": axes.to_list(),
                                                       "conditions": [c.label for c in axes.conditions()]}}}

    def generate(self, model: str, query: dict, form: dict) -> tuple[dict, str, bytes]:
        """(metadata, file name, NIfTI bytes) of one scan, as the app's infer task answers."""
        params = json.loads(form["params"][0])
        condition = parse_condition(params["level"], params["pattern"], params.get("side"))
        seed = params["seed"] if params.get("seed") is not None else 1234
        image = make_oblique_scan(seed).image
        name = f"{condition.label}_{seed}.nii.gz"
        path = self.folder / name
        sitk.WriteImage(image, str(path), True)
        self.images[name] = image
        result = GenerationResult.measured(image, MIDLINE, condition=condition, seed=seed,
                                           model=ModelVersion(model, VERSION, SHA256), reference=query["image"][0],
                                           output_space=params.get("output_space"), options={"psi": params.get("psi")})
        return result.to_json(), name, path.read_bytes()


def _handler(server: ScriptedServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            """Quiet."""

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            server.received.append(Received(self.command, parts.path, parse_qs(parts.query), body,
                                            dict(self.headers), time.monotonic()))
            failure = server.next_failure()
            if failure == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if isinstance(failure, float):
                time.sleep(failure)
            elif isinstance(failure, int):
                self._answer(failure, json.dumps({"detail": server.detail}).encode())
                return
            self._route(parts.path, parse_qs(parts.query), body)

        def _route(self, path: str, query: dict, body: bytes) -> None:
            if self.command == "GET" and path == "/info/":
                self._answer(200, json.dumps(server.info()).encode())
            elif self.command == "GET" and path == "/datastore/" and query.get("output") == ["all"]:
                objects = {image: {"image": {"ext": ".nii.gz"}, "labels": {}} for image in {*STUDIES, *server.uploads}}
                self._answer(200, json.dumps({"name": "scripted", "objects": objects}).encode())
            elif self.command == "PUT" and path == "/datastore/":
                upload = parse_multipart(self.headers["Content-Type"], body)["file"]
                server.uploads[query["image"][0]] = upload.data
                self._answer(200, json.dumps({"image": query["image"][0]}).encode())
            elif self.command == "POST" and path.startswith("/infer/"):
                metadata, name, data = server.generate(path.split("/")[2], query, parse_qs(body.decode()))
                encoder = MultipartEncoder(fields={"params": (None, json.dumps(metadata), "application/json"),
                                                   "image": (name, data, "application/gzip")})
                self._answer(200, encoder.to_string(), encoder.content_type)
            else:
                self._answer(404, json.dumps({"detail": "Not Found"}).encode())

        do_GET = do_PUT = do_POST = _serve

    return Handler
