"""The HTTP client of the spectgan server (a MONAI Label app): ``SpectGANClient``.

One ``requests.Session``; every request has a timeout; connection errors and 5xx answers are retried with
exponential backoff; a 4xx answer is an error carrying the server's message, at once: ``NotFoundError`` (404) and
``AuthenticationError`` (401) of ``spectgan.errors``, the kinds the server raised, else a ``RequestRejectedError``.
The multipart answer of MONAI Label's infer endpoint is parsed with the standard library's ``email`` parser (the
``cgi`` module is gone from Python 3.13), and its result read into ``spectgan.results.GenerationResult``.

Images keep their geometry: the server's NIfTI is read by SimpleITK (LPS, origin, spacing, direction); nothing is
flipped.
"""
from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import requests
import SimpleITK as sitk

from spectgan.conditions import Condition, ConditionAxes
from spectgan.errors import AuthenticationError, NotFoundError, SpectganError
from spectgan.files import NIFTI_SUFFIX
from spectgan.geometry.registration import OUTPUT_SPACES
from spectgan.geometry.roi import read_image
from spectgan.lesions import LESION_AXES
from spectgan.models.versions import VersionEntry
from spectgan.results import GenerationResult
from spectgan.serving.settings import API_TOKEN_ENV

DEFAULT_TIMEOUT_S = (5.0, 300.0)  # (connect, read): a first request on a new reference registers it (seconds)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5  # waits 0.5, 1, 2, ... s between attempts
ERROR_OF_STATUS = {401: AuthenticationError, 404: NotFoundError}  # 4xx answers that name a domain error


# ------------------------------------------------------------------------------------------------------- errors

class ClientError(SpectganError):
    """The spectgan server could not do what was asked; the message says why."""


class ServerUnavailableError(ClientError):
    """The server cannot be reached, or kept failing (5xx) after every retry."""


class ServerTimeoutError(ClientError):
    """The server accepted the request but did not answer within the read timeout."""


class RequestRejectedError(ClientError):
    """The server refused the request (HTTP 4xx other than 401 and 404, which are the ``AuthenticationError`` and
    ``NotFoundError`` of ``spectgan.errors``); ``message`` is the server's own explanation."""

    def __init__(self, status_code: int, message: str, request: str | None = None):
        self.status_code, self.message = status_code, message
        super().__init__(f"the server rejected {request} (HTTP {status_code}): {message}" if request else message)


class InvalidResponseError(ClientError):
    """The server answered 2xx but not in the form the API promises."""



# ---------------------------------------------------------------------------------------------------- multipart

@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts of a ``multipart/*`` body by their form name (RFC 7578); binary data comes back byte for byte."""
    if not content_type.lower().startswith("multipart/") or "boundary=" not in content_type:
        raise InvalidResponseError(f"expected a multipart answer with a boundary, got Content-Type {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise InvalidResponseError("a part of the multipart answer has no form name (Content-Disposition)")
        parts[name] = Part(name, part.get_filename(), part.get_content_type(), part.get_payload(decode=True) or b"")
    if message.defects or not parts:
        raise InvalidResponseError(f"malformed multipart answer ({len(parts)} parts; "
                                   f"{', '.join(type(defect).__name__ for defect in message.defects) or 'no parts'})")
    return parts




def _read_nifti(data: bytes, filename: str | None) -> sitk.Image:
    """A SimpleITK image from NIfTI bytes (SimpleITK reads files only: through a temporary file)."""
    suffix = ".nii" if filename and filename.endswith(".nii") else NIFTI_SUFFIX
    with tempfile.TemporaryDirectory(prefix="spectgan-") as folder:
        path = Path(folder) / f"result{suffix}"
        path.write_bytes(data)
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InvalidResponseError(f"the server's image part is not a readable NIfTI ({len(data)} bytes)") \
                from error




# ------------------------------------------------------------------------------------------------------- client

class SpectGANClient:
    """HTTP client of the spectgan MONAI Label server at ``url``.

    ``timeout``: seconds, or (connect, read) seconds, for every request; ``retries``: extra attempts after a
    connection error or a 5xx answer, ``backoff_s`` x 2^k apart. ``token``: the server's API token, sent as
    ``Authorization: Bearer <token>`` (default: $SPECTGAN_API_TOKEN; none when unset). ``verify``: for https, True
    (the system's certificate authorities) or a certificate file to trust (a self-signed server).
    """

    def __init__(self, url: str, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
                 retries: int = DEFAULT_RETRIES, backoff_s: float = DEFAULT_BACKOFF_S, token: str | None = None,
                 verify: str | bool = True):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid server URL {url!r}; expected http(s)://host:port")
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries and backoff must not be negative, got {retries} and {backoff_s}")
        self.url = url.strip().rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.verify = verify  # given with each request: $REQUESTS_CA_BUNDLE would override a session's setting
        self.session = requests.Session()
        token = token if token is not None else os.environ.get(API_TOKEN_ENV, "").strip()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never shows the token
        return f"SpectGANClient({self.url!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "SpectGANClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- API

    def info(self) -> dict:
        """The server's ``/info/``: its models with their parameters and allowed values."""
        return self._json(self._request("GET", "/info/"), "GET /info/")

    def model_info(self, model: str) -> dict:
        """One model's entry of ``/info/``; NotFoundError lists the models the server has."""
        models = self.info().get("models") or {}
        if model not in models:
            raise NotFoundError(f"the server at {self.url} has no model {model!r} (it lists a model once its "
                                f"bundle is trained); it has: {', '.join(sorted(models)) or 'none'}")
        return models[model]

    def model_versions(self, model: str) -> list[VersionEntry]:
        """The model's served, published and candidate versions, newest first, with their quality gate verdicts."""
        answer = self._json(self._request("GET", f"/models/{model}/versions"), f"GET /models/{model}/versions")
        return [VersionEntry.from_dict(entry) for entry in answer.get("versions", [])]

    def rollback(self, model: str, version: str) -> VersionEntry:
        """Have the server serve a published version of the model again (an admin's request)."""
        return VersionEntry.from_dict(self._json(self._request("POST", f"/models/{model}/rollback",
                                                               json={"version": version}),
                                                 f"POST /models/{model}/rollback"))

    def conditions(self, model: str) -> list[Condition]:
        """Every valid condition the model offers, as its ``/info/`` entry lists them."""
        return model_conditions(self.model_info(model))

    def images(self) -> list[str]:
        """The ids of the studies in the server's datastore, sorted (MONAI Label's ``GET /datastore/?output=all``): a
        folder's studies and uploads, or the series of the PACS the server uses as its datastore."""
        answer = self._json(self._request("GET", "/datastore/?output=all"), "GET /datastore/")
        objects = answer.get("objects") if isinstance(answer, dict) else None
        if not isinstance(objects, dict):
            raise InvalidResponseError(f"the server's datastore listing has no objects: {str(answer)[:200]!r}")
        return sorted(objects)

    def upload(self, path_or_image: str | Path | sitk.Image, image_id: str | None = None) -> str:
        """Put a local volume into the server's datastore; returns its image id.

        The id defaults to the file's name plus a hash of its bytes: uploading the same scan again reuses it, and a
        changed scan never takes the id (nor the cached registration) of another.
        """
        if isinstance(path_or_image, sitk.Image):
            with tempfile.TemporaryDirectory(prefix="spectgan-") as folder:
                path = Path(folder) / f"volume{NIFTI_SUFFIX}"
                sitk.WriteImage(path_or_image, str(path), True)
                data = path.read_bytes()
            filename = path.name
        else:
            path = Path(path_or_image)
            read_image(path)  # a clear error for a file that is not an image, before anything is sent
            data, filename = path.read_bytes(), path.name
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", filename.split(".")[0]) or "volume"
        image_id = image_id or f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}"
        suffix = filename[len(filename.split(".")[0]):] or NIFTI_SUFFIX
        request = f"upload of {filename}"
        response = self._request("PUT", f"/datastore/?image={quote(image_id, safe='')}", what=request,
                                 data={"params": "{}"}, files={"file": (f"{image_id}{suffix}", data)})
        answer = self._json(response, request)
        if not isinstance(answer, dict) or not answer.get("image"):
            raise InvalidResponseError(f"the server's answer to the {request} has no image id: {answer!r}")
        return str(answer["image"])

    def generate(self, image: str, model: str, level, pattern, side=None, seed: int | None = None,
                 psi: float | None = None, output_space: str = "slice", territory=None, severity=None,
                 axis_values: Mapping[str, Any] | None = None, base: str = "model",
                 file_with: str = "synthetic", method: str | None = None) -> GenerationResult:
        """One synthetic scan of a condition, registered over the reference ``image`` (a datastore id).

        ``seed=None`` lets the server draw one (it comes back in the result); ``psi=None``: the model's default.
        ``output_space``: ``slice`` (a one-slice volume on the level's plane) or ``reference`` (resampled onto the
        reference's grid). ``territory`` and ``severity`` (a model with defect axes; the forms of
        ``spectgan.lesions``): None lets the model draw them from its training cohort; the result's ``condition``
        says what it drew. ``axis_values``: the values of any further axes the model declares (its ``/info/``
        ``axes``), by name. ``base``: ``model`` (a new brain) or ``reference`` (the reference patient's own slice
        with the defect that side, territory and severity give added; with pattern normal, that defect removed);
        the result's ``derivation`` says which, and by which ``method`` (``spectgan.counterfactual.METHODS``;
        None: the server's default). ``file_with``: ``synthetic`` (the DICOM export files the result under a
        synthetic patient) or, with base ``reference`` and a DICOM reference, ``source`` (in the reference's own
        study, under its patient; the result's ``derivation`` then carries that patient and study).
        """
        if output_space not in OUTPUT_SPACES:
            raise ValueError(f"invalid output_space {output_space!r}; allowed: {', '.join(OUTPUT_SPACES)}")
        params = {"level": _value(level), "pattern": _value(pattern), "side": _value(side) if side else None,
                  "seed": seed, **({"psi": psi} if psi is not None else {}), "output_space": output_space,
                  **{axis: value for axis, value in zip(LESION_AXES, (territory, severity)) if value is not None},
                  **(axis_values or {}), **({"base": base} if base != "model" else {}),
                  **({"file_with": file_with} if file_with != "synthetic" else {}),
                  **({"method": method} if method is not None else {})}
        request = f"generation of {params['level']} {params['pattern']} {params['side'] or ''} with {model}"
        response = self._request("POST", f"/infer/{quote(model, safe='')}?image={quote(image, safe='')}&output=all",
                                 what=" ".join(request.split()), data={"params": json.dumps(params)})
        parts = parse_multipart(response.headers.get("Content-Type", ""), response.content)
        if "params" not in parts or "image" not in parts:
            raise InvalidResponseError(f"the server's answer lacks the parts params and image (has "
                                       f"{', '.join(sorted(parts))})")
        try:
            metadata = json.loads(parts["params"].data)
        except ValueError as error:
            raise InvalidResponseError(f"the server's params part is not JSON: {error}") from error
        try:
            return GenerationResult.from_json(metadata, _read_nifti(parts["image"].data, parts["image"].filename))
        except ValueError as error:
            raise InvalidResponseError(f"the server's result is not valid: {error}") from None

    # --- HTTP

    def _request(self, method: str, path: str, what: str | None = None, **kwargs) -> requests.Response:
        """Send with the timeout; retry connection errors and 5xx with backoff; 4xx raise at once."""
        what = what or f"{method} {path.split('?')[0]}"
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                response = self.session.request(method, self.url + path, timeout=self.timeout, verify=self.verify,
                                                **kwargs)
            except requests.exceptions.ConnectionError as error:
                failure = f"cannot connect ({_reason(error)})"
            except requests.exceptions.Timeout as error:
                raise ServerTimeoutError(f"the server at {self.url} did not answer the {what} within "
                                         f"{_read_timeout(self.timeout):g} s") from error
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    raise rejection(response.status_code, _server_message(response), f"the {what}")
                failure = f"HTTP {response.status_code}: {_server_message(response)}"
            if attempt + 1 < attempts:
                time.sleep(self.backoff_s * 2 ** attempt)
        tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
        raise ServerUnavailableError(f"the spectgan server at {self.url} failed the {what} ({tries}); last: {failure}"
                                     ". Is the server running (monailabel start_server ...) at this URL?")

    @staticmethod
    def _json(response: requests.Response, what: str):
        try:
            return response.json()
        except ValueError as error:
            raise InvalidResponseError(f"the server's answer to {what} is not JSON: {response.text[:200]!r}") \
                from error


def _value(item) -> str:
    """An enum member or a string as its string value."""
    return str(getattr(item, "value", item))


def _read_timeout(timeout) -> float:
    return timeout[1] if isinstance(timeout, tuple) else timeout


def _reason(error: Exception) -> str:
    """The innermost reason of a requests connection error, e.g. ``Connection refused``."""
    text = str(error)
    match = (re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
             or re.search(r"(Connection \w+|Remote end closed[^'\")]*)", text))
    return match.group(1).strip() if match else type(error).__name__


def rejection(status_code: int, message: str, request: str) -> SpectganError:
    """The error of a 4xx answer to ``request``, with the server's message: the domain error the server answered
    (``ERROR_OF_STATUS``) or a ``RequestRejectedError``."""
    if status_code in ERROR_OF_STATUS:
        return ERROR_OF_STATUS[status_code](f"the server rejected {request} (HTTP {status_code}): {message}")
    return RequestRejectedError(status_code, message, request)


def _server_message(response: requests.Response) -> str:
    """The server's explanation of an error answer: FastAPI's ``detail`` (a string or validation items) or text."""
    try:
        detail = response.json().get("detail", response.json())
    except (ValueError, AttributeError):
        return response.text.strip()[:500] or response.reason or "no message"
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg', item)}"
                         if isinstance(item, dict) else str(item) for item in detail)
    return str(detail)


def model_axes(model_info: dict) -> ConditionAxes:
    """A model's declared condition axes from its ``/info/`` entry (``axes``)."""
    declared = model_info.get("axes")
    if not declared or not isinstance(declared, list):
        raise InvalidResponseError("the model's /info/ entry declares no condition axes")
    try:
        axes = ConditionAxes.from_list(declared)
        axes.conditions()  # level, pattern and side are there, with values this spectgan knows
    except (TypeError, ValueError, KeyError) as error:
        raise InvalidResponseError(f"the model's /info/ entry has invalid condition axes: {error!r}") from error
    return axes


def model_conditions(model_info: dict) -> list[Condition]:
    """Every valid condition of a model (level, pattern, side), from its ``/info/`` entry's declared axes."""
    return model_axes(model_info).conditions()
