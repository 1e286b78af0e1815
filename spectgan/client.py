"""Client of the spectgan server (a MONAI Label app): ``SpectGANClient``, batches of scans, their files and overview
picture, export to PACS, and the ``spectgan generate`` command. The CLI and the 3D Slicer module both use it.

    client = SpectGANClient("http://127.0.0.1:8000")
    image_id = client.upload("my_scan.nii.gz")  # or an image id already in the server's datastore
    result = client.generate(image_id, "spect_fastgan_A", "BG", "unilateral", side="left", seed=3)
    result.image, result.stats["ai"], result.midline  # SimpleITK image in the reference's LPS space
    result.condition.lesions  # a model with defect axes: the territory and severity it drew (or was given)

HTTP: one ``requests.Session``; every request has a timeout; connection errors and 5xx answers are retried with
exponential backoff; a 4xx answer is a ``RequestRejectedError`` carrying the server's message, at once. The
multipart answer of MONAI Label's infer endpoint is parsed with the standard library's ``email`` parser (the ``cgi``
module is gone from Python 3.13).

Images keep their geometry: the server's NIfTI is read by SimpleITK (LPS, origin, spacing, direction) and written
back unchanged; nothing is flipped.
"""
from __future__ import annotations

import argparse
import csv
import email.parser
import email.policy
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import quote, urlsplit

import numpy as np
import requests
import SimpleITK as sitk

from spectgan.cohorts.format import atomic_write_bytes, atomic_write_image
from spectgan.conditions import Condition, ConditionAxes, Pattern, Side, parse_levels, parse_member, takes_side
from spectgan.lesions import LESION_AXES, apply_lesions, condition_from_dict, lesion_text
from spectgan.errors import SpectganError
from spectgan.figures import pyplot, save_figure
from spectgan.geometry.display import display_orientation, midline_distance, oriented
from spectgan.geometry.registration import OUTPUT_SPACES
from spectgan.geometry.roi import MidlinePlane, hemisphere_masks, read_image
from spectgan.serving.settings import API_TOKEN_ENV

if TYPE_CHECKING:  # spectgan.export.dicom (highdicom) is imported when DICOM is written, not with the client
    from spectgan.export.dicom import SyntheticRun

DEFAULT_TIMEOUT_S = (5.0, 300.0)  # (connect, read): a first request on a new reference registers it (seconds)
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5  # waits 0.5, 1, 2, ... s between attempts
STATS_CSV, STATS_JSON, OVERVIEW_PNG, DICOM_DIR = "stats.csv", "stats.json", "overview.png", "dicom"
NIFTI_SUFFIX = ".nii.gz"
OVERVIEW_COLUMNS = 4  # panels per row when every condition has one seed
PANEL_INCHES = (2.4, 2.9)  # width, height of one scan in the overview
OVERVIEW_TITLE = "Synthetic 123I-IMP SPECT (counts); ROIs: patient left orange, right blue; midline dashed"


# ------------------------------------------------------------------------------------------------------- errors

class ClientError(SpectganError):
    """The spectgan server could not do what was asked; the message says why."""


class ServerUnavailableError(ClientError):
    """The server cannot be reached, or kept failing (5xx) after every retry."""


class ServerTimeoutError(ClientError):
    """The server accepted the request but did not answer within the read timeout."""


class RequestRejectedError(ClientError):
    """The server refused the request (HTTP 4xx); ``message`` is the server's own explanation."""

    def __init__(self, status_code: int, message: str, request: str | None = None):
        self.status_code, self.message = status_code, message
        super().__init__(f"the server rejected {request} (HTTP {status_code}): {message}" if request else message)


class NotFoundError(RequestRejectedError):
    """HTTP 404: an unknown model or image id."""


class AuthenticationError(RequestRejectedError):
    """The server wants an API token (none was sent, or not its own): give it with ``token=``, ``--token-file`` or
    $SPECTGAN_API_TOKEN."""


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


# ------------------------------------------------------------------------------------------------------ results

@dataclass
class GenerationResult:
    """One generated scan: the image (SimpleITK, in the reference's LPS space), its hemisphere statistics and the
    server's metadata (condition, seed, model name / version / sha256, midline, geometry, timings).

    ``stats`` is None when the server found no brain to measure in the image (``metadata["stats_error"]`` says
    why; an untrained model makes such images).
    """

    image: sitk.Image
    stats: dict | None
    metadata: dict
    path: Path | None = None  # where ``save`` wrote the image

    @property
    def condition(self) -> Condition:
        """The condition the scan was made of, with the territory and severity the model drew for what the request
        left out (a model with defect axes)."""
        return condition_from_dict(self.metadata["condition"])

    @property
    def seed(self) -> int:
        return int(self.metadata["seed"])

    @property
    def midline(self) -> MidlinePlane:
        """The registered midsagittal plane in the image's physical space (normal toward the patient's left)."""
        midline = self.metadata["midline"]
        return MidlinePlane(point=midline["point"], normal=midline["normal"])

    @property
    def reference(self) -> str:
        """The reference study the scan was placed over, as the server names it (``image``: the name of its file in
        the datastore, ``<image id>.nii.gz``)."""
        return str(self.metadata["image"])

    @property
    def name(self) -> str:
        """``<condition>_seed<seed>``, e.g. ``BG-unilateral-left_seed3``."""
        return f"{self.condition.label}_seed{self.seed}"

    def provenance(self) -> dict:
        """What made the scan: condition, seed, model, version, sha256 (the metadata ``spectgan.export.dicom`` records)."""
        return {"condition": self.condition.to_dict(), "seed": self.seed, "model": self.metadata["model"],
                "version": self.metadata["version"], "sha256": self.metadata["sha256"]}

    def hemisphere_masks(self) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
        """(brain, left, right) masks on the image's grid, split by the registered midline (``spectgan.geometry.roi``)."""
        return hemisphere_masks(self.image, self.midline)

    def save(self, folder: str | Path) -> Path:
        """Write the image as ``<folder>/<name>.nii.gz`` with its geometry; the path."""
        self.path = Path(folder) / f"{self.name}{NIFTI_SUFFIX}"
        atomic_write_image(self.image, self.path)
        return self.path

    def record(self) -> dict:
        """A flat row for tables and CSV: file, condition (territory and severity empty where the model has no
        defect axes), seed, model and every statistic."""
        condition = self.condition
        row = {"file": self.path.name if self.path else "", "level": condition.level.value,
               "pattern": condition.pattern.value, "side": condition.side.value if condition.side else "",
               **{axis: lesion_text(condition, axis) for axis in LESION_AXES}, "seed": self.seed,
               "model": self.metadata["model"], "version": self.metadata["version"]}
        row.update(self.stats if self.stats is not None else {"stats_error": self.metadata.get("stats_error", "")})
        return row


REQUIRED_METADATA = ("condition", "seed", "model", "version", "sha256", "stats", "midline", "image")


def _result_from_answer(metadata: dict, image: sitk.Image) -> GenerationResult:
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise InvalidResponseError(f"the server's result lacks {', '.join(missing)}")
    stats = metadata["stats"]
    if stats is not None and not isinstance(stats, dict):
        raise InvalidResponseError(f"the server's statistics are not an object: {stats!r}")
    result = GenerationResult(image=image, stats=stats, metadata=metadata)
    try:
        result.condition, result.midline
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidResponseError(f"the server's result has an invalid condition or midline: {error}") from error
    return result


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
            raise NotFoundError(404, f"the server at {self.url} has no model {model!r} (it lists a model once its "
                                     f"bundle is trained); it has: {', '.join(sorted(models)) or 'none'}")
        return models[model]

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
                 axis_values: Mapping[str, Any] | None = None) -> GenerationResult:
        """One synthetic scan of a condition, registered over the reference ``image`` (a datastore id).

        ``seed=None`` lets the server draw one (it comes back in the result); ``psi=None``: the model's default.
        ``output_space``: ``slice`` (a
        one-slice volume on the level's plane) or ``reference`` (resampled onto the reference's grid).
        ``territory`` and ``severity`` (a model with defect axes; the forms of ``spectgan.lesions``): None lets the
        model draw them from its training cohort; the result's ``condition`` says what it drew. ``axis_values``: the
        values of any further axes the model declares (its ``/info/`` ``axes``), by name.
        """
        if output_space not in OUTPUT_SPACES:
            raise ValueError(f"invalid output_space {output_space!r}; allowed: {', '.join(OUTPUT_SPACES)}")
        params = {"level": _value(level), "pattern": _value(pattern), "side": _value(side) if side else None,
                  "seed": seed, **({"psi": psi} if psi is not None else {}), "output_space": output_space,
                  **{axis: value for axis, value in zip(LESION_AXES, (territory, severity)) if value is not None},
                  **(axis_values or {})}
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
        return _result_from_answer(metadata, _read_nifti(parts["image"].data, parts["image"].filename))

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
                    kind = {401: AuthenticationError, 404: NotFoundError}.get(response.status_code,
                                                                             RequestRejectedError)
                    raise kind(response.status_code, _server_message(response), f"the {what}")
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


# ---------------------------------------------------------------------------------------------------- batches

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


def _parse_list(text: str | Sequence[str] | None, what: str) -> list[str] | None:
    """``"a,b"`` or a list -> stripped items; None, empty or ``all`` -> None (every value)."""
    if text is None:
        return None
    items = [item.strip() for item in (text.split(",") if isinstance(text, str) else text) if str(item).strip()]
    if not items:
        raise ValueError(f"empty {what}; give values separated by commas, or all")
    return None if any(item.lower() == "all" for item in items) else items


def expand_conditions(available: Sequence[Condition], levels=None, patterns=None, sides=None) -> list[Condition]:
    """The requested conditions among a model's ``available`` ones, in their order.

    ``levels``, ``patterns`` and ``sides`` are comma lists, lists, or ``all``/None (every value the model offers).
    Sides apply to the unilateral pattern only. Combinations the model lacks (bilateral at CER) are left out when
    they come from a list; a request that leaves nothing, or names a level the model lacks, is a ValueError that
    says what is allowed.
    """
    level_items, pattern_items, side_items = (_parse_list(levels, "levels"), _parse_list(patterns, "patterns"),
                                              _parse_list(sides, "sides"))
    model_levels = {condition.level for condition in available}
    allowed = "; ".join(condition.label for condition in available)
    wanted_levels = set(parse_levels(level_items)) if level_items else model_levels
    missing = sorted(level.value for level in wanted_levels - model_levels)
    if missing:
        raise ValueError(f"the model has no level {', '.join(missing)}; its conditions: {allowed}")
    wanted_patterns = {parse_member(Pattern, item, "pattern") for item in pattern_items or Pattern}
    wanted_sides = {parse_member(Side, item, "side") for item in side_items or Side}
    if side_items and not any(takes_side(pattern) for pattern in wanted_patterns):
        sided = ", ".join(pattern.value for pattern in Pattern if takes_side(pattern))
        raise ValueError(f"sides apply to the {sided} pattern only; add {sided} to the patterns or leave the side "
                         "out")
    chosen = [condition for condition in available
              if condition.level in wanted_levels and condition.pattern in wanted_patterns
              and (condition.side is None or condition.side in wanted_sides)]
    if not chosen:
        raise ValueError(f"no valid condition in this request; the model's conditions: {allowed}")
    return chosen


def lesion_params(condition: Condition) -> dict[str, str]:
    """The territory and severity a condition's lesions give, as request params (only those it names)."""
    return {axis: text for axis in LESION_AXES if (text := lesion_text(condition, axis))}


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0-4,10,12"`` -> the seeds in order, without repeats."""
    seeds: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ValueError(f"invalid seeds {text!r}; use numbers and ranges such as 0-9 or 0-4,10")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        seeds.extend(seed for seed in range(first, last + 1) if seed not in seeds)
    return seeds


def seeds_from_spinboxes(seed: int, count: int) -> list[int | None]:
    """The seeds of a seed / count pair as the Slicer module offers them: ``seed < 0`` lets the server draw."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return [None] * count if seed < 0 else list(range(seed, seed + count))


@dataclass
class GenerationJob:
    """Every scan of one request: conditions x seeds (None: the server draws one), over one reference image. A
    condition's lesions are sent as its territory and severity (what they leave out, the model draws)."""

    client: SpectGANClient
    image: str
    model: str
    conditions: list[Condition]
    seeds: list[int | None]
    psi: float | None = None  # None: the model's default (a family without psi takes none)
    axis_values: dict[str, Any] = field(default_factory=dict)  # further declared axes (``SpectGANClient.generate``)
    results: list[GenerationResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.conditions) * len(self.seeds)

    def run(self, out: str | Path | None = None,
            on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
        """Generate every scan (saving each into ``out`` when given) and return the results in request order."""
        for condition in self.conditions:
            for seed in self.seeds:
                result = self.client.generate(self.image, self.model, condition.level, condition.pattern,
                                              condition.side, seed=seed, psi=self.psi, axis_values=self.axis_values,
                                              **lesion_params(condition))
                if out is not None:
                    result.save(out)
                self.results.append(result)
                if on_result:
                    on_result(result)
        return self.results

    def run_to_folder(self, out: str | Path, progress: bool = True) -> str:
        """Run with a progress bar (stderr), saving each scan into ``out``; then write ``stats.csv``,
        ``stats.json`` and ``overview.png`` there. Returns a summary that says where everything is."""
        from tqdm import tqdm

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=self.total, desc=self.model, unit="scan", disable=not progress, file=sys.stderr) as bar:
            self.run(out, on_result=lambda result: (bar.set_postfix_str(result.name), bar.update()))
        csv_path, json_path = write_stats(self.results, out)
        overview = draw_overview(self.results, out / OVERVIEW_PNG,
                                 title=f"{self.model} over {self.image}. {OVERVIEW_TITLE}")
        return (f"{len(self.results)} scans of {len(self.conditions)} conditions in {out}\n"
                f"statistics: {csv_path}, {json_path}\noverview: {overview}")


def _records(results: Sequence[GenerationResult]) -> tuple[list[str], list[dict]]:
    """Column names (in first-seen order) and one ``record()`` per scan."""
    rows = [result.record() for result in results]
    return list(dict.fromkeys(key for row in rows for key in row)), rows


def stats_table(results: Sequence[GenerationResult]) -> tuple[list[str], list[list[str]]]:
    """The columns of ``stats.csv`` and one row of text per scan (numbers to 6 significant digits), for display."""
    columns, rows = _records(results)
    return columns, [[f"{row[column]:.6g}" if isinstance(row.get(column), float) else str(row.get(column, ""))
                      for column in columns] for row in rows]


def write_stats(results: Sequence[GenerationResult], out: str | Path) -> tuple[Path, Path]:
    """``stats.csv`` (one row per scan: file, condition, seed, model, statistics at full precision) and
    ``stats.json`` (the same with the server's whole metadata) in ``out``."""
    out = Path(out)
    columns, rows = _records(results)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / STATS_CSV, text.getvalue().encode())
    entries = [{"file": row["file"], **result.metadata} for row, result in zip(rows, results)]
    atomic_write_bytes(out / STATS_JSON, (json.dumps(entries, indent=2) + "\n").encode())
    return out / STATS_CSV, out / STATS_JSON


def require_new_dicom_folder(folder: str | Path) -> Path:
    """``folder`` when it holds no files yet (an export folder holds one batch: one study, one outbox)."""
    folder = Path(folder)
    if folder.exists() and any(path.is_file() for path in folder.rglob("*")):
        raise ClientError(f"{folder} already holds an export (DICOM files and their outbox); write the new scans "
                          f"to another folder, or resend that one with: spectgan export {folder} --retry")
    return folder


def write_dicom(results: Sequence[GenerationResult], folder: str | Path, run: SyntheticRun | None = None) -> Path:
    """Encode each scan as DICOM (NM + hemisphere SEG + SR) into ``folder/<scan name>/``; ``folder`` must hold no
    files yet. The scans over one reference study go into the synthetic study of that reference and ``run`` (a new
    run when None): pass the same run for the batches of several models to put them in one study. The hemisphere
    masks are ``spectgan.geometry.roi``'s, split by the registered midline the server returned."""
    from spectgan.export.dicom import SyntheticRun, encode_scan, write_series

    unmeasured = [f"{result.name} ({result.metadata.get('stats_error', 'no statistics')})" for result in results
                  if result.stats is None]
    if unmeasured:
        raise ClientError(f"cannot encode scans without hemisphere statistics as DICOM: {'; '.join(unmeasured)}")
    folder = require_new_dicom_folder(folder)
    run = run or SyntheticRun()
    for result in results:
        _, left, right = result.hemisphere_masks()
        datasets = encode_scan(result.image, left, right, result.stats, result.provenance(),
                               run.study(result.reference))
        write_series(datasets, folder / result.name)
    return folder


def send_to_pacs(folder: str | Path, pacs_url: str):
    """Send a DICOM folder through ``spectgan.export.pacs``'s outbox (what the PACS has not confirmed yet); its
    ExportResult. A PacsError says what stays pending and the command that resends it."""
    from spectgan.export.pacs import PacsError, export_folder

    try:
        return export_folder(folder, pacs_url)
    except PacsError as error:
        raise type(error)(f"{error}\nThe DICOM files stay in {folder}; resend with: spectgan export {folder} "
                          "--retry") from error


def export_results(results: Sequence[GenerationResult], folder: str | Path, pacs_url: str,
                   run: SyntheticRun | None = None):
    """``write_dicom`` then ``send_to_pacs``: the scans of one batch, over one reference, as the synthetic study of
    that reference and ``run`` in the PACS."""
    return send_to_pacs(write_dicom(results, folder, run), pacs_url)


# ---------------------------------------------------------------------------------------------------- overview

def _draw_panel(axis, result: GenerationResult, peak: float) -> None:
    """One scan: counts in grey, hemisphere outlines, the midline, and its statistics in the title."""
    orientation = display_orientation(result.image)
    axis.imshow(oriented(sitk.GetArrayFromImage(result.image)[0], orientation), cmap="gray", vmin=0.0,
                vmax=peak if peak > 0 else None, interpolation="nearest")
    stats = result.stats
    if stats is None:
        numbers = "no brain measured"
    else:
        _, left, right = result.hemisphere_masks()
        for mask, colour in ((left, "tab:orange"), (right, "tab:blue")):
            axis.contour(oriented(sitk.GetArrayFromImage(mask)[0], orientation), levels=[0.5], colors=colour,
                         linewidths=0.8)
        numbers = f"MC {stats['mc']:.0f}  LR {stats['lr']:.3f}  AI {stats['ai']:+.1f} %"
    axis.contour(oriented(midline_distance(result.image, result.midline), orientation), levels=[0.0],
                 colors="yellow", linewidths=0.9, linestyles="dashed")
    axis.set_title(f"{result.condition.label}  seed {result.seed}\n{numbers}", fontsize=7)
    axis.text(0.02, 0.03, "R", color="white", fontsize=7, transform=axis.transAxes, ha="left")
    axis.text(0.98, 0.03, "L", color="white", fontsize=7, transform=axis.transAxes, ha="right")


def _overview_grid(results: Sequence[GenerationResult]) -> list[list[GenerationResult]]:
    """Rows of panels: one row per condition (its seeds across) when conditions have several seeds, else the scans
    in order, ``OVERVIEW_COLUMNS`` to a row."""
    by_condition: dict[str, list[GenerationResult]] = {}
    for result in results:
        by_condition.setdefault(result.condition.label, []).append(result)
    if max(len(row) for row in by_condition.values()) > 1:
        return list(by_condition.values())
    return [list(results[start:start + OVERVIEW_COLUMNS]) for start in range(0, len(results), OVERVIEW_COLUMNS)]


def draw_overview(results: Sequence[GenerationResult], path: str | Path, title: str = "") -> Path:
    """A PNG of every scan with its hemisphere ROI outlines (patient left orange, right blue), the registered midline
    (dashed yellow) and its MC / LR / AI, displayed radiologically (the patient's left on the right, anterior up)."""
    plt = pyplot()
    if not results:
        raise ValueError("no scans to draw")
    for result in results:
        if result.image.GetDimension() != 3 or result.image.GetSize()[2] != 1:
            raise ValueError(f"the overview shows one-slice scans (output_space slice); {result.name} has size "
                             f"{result.image.GetSize()}")
    grid = _overview_grid(results)
    columns = max(len(row) for row in grid)
    title = textwrap.fill(title or OVERVIEW_TITLE, width=max(40, int(PANEL_INCHES[0] * columns * 14)))
    title_inches = 0.18 * (title.count("\n") + 1) + 0.1
    height = PANEL_INCHES[1] * len(grid) + title_inches
    figure, axes = plt.subplots(len(grid), columns, figsize=(PANEL_INCHES[0] * columns, height), squeeze=False)
    peak = max(float(np.percentile(sitk.GetArrayViewFromImage(result.image), 99.5)) for result in results)
    for axis in axes.ravel():
        axis.axis("off")
    for row_axes, row in zip(axes, grid):
        for axis, result in zip(row_axes, row):
            _draw_panel(axis, result, peak)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - title_inches / height))
    return save_figure(figure, path, dpi=110, tight=False)


# -------------------------------------------------------------------------------------------------------- CLI

def add_generate_command(subparsers) -> None:
    """``spectgan generate --server URL --image ID --model M --level L --pattern P [--side S] [--territory T]
    [--severity S] --seeds 0-9 --out DIR [--pacs URL]``."""
    parser = subparsers.add_parser(
        "generate", help="generate synthetic scans on a spectgan server, registered over a reference study",
        description="Request every combination of levels x patterns x sides x seeds from the server, write one NIfTI "
                    f"per scan, {STATS_CSV}, {STATS_JSON} and {OVERVIEW_PNG}; with --pacs also DICOM (NM, hemisphere "
                    f"SEG, SR) into DIR/{DICOM_DIR}, sent to the PACS. Lists are comma-separated; 'all' means every "
                    "value the model offers (GET /info/); combinations without training data are left out.")
    parser.add_argument("--server", required=True, metavar="URL", help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", required=True, metavar="ID",
                        help="reference study: a datastore image id, or a local image file (uploaded first)")
    parser.add_argument("--model", required=True, help="model name, e.g. spect_fastgan_A")
    parser.add_argument("--level", default="all", help="CER, BG, COR, a list or all (default: all)")
    parser.add_argument("--pattern", default="all", help="normal, unilateral, bilateral, a list or all (default: all)")
    parser.add_argument("--side", help="for unilateral: left, right, a list or all (default: all)")
    parser.add_argument("--territory", help="defect territory for a model with defect axes, e.g. MCA, or per side "
                        "for bilateral: left=MCA;right=ACA (default: drawn from the model's training cohort; "
                        "applies to the unilateral and bilateral conditions)")
    parser.add_argument("--severity", help="defect severity (fractional CBF reduction, e.g. 0.3), or per side for "
                        "bilateral: left=0.2;right=0.4 (default: drawn from the model's training cohort)")
    parser.add_argument("--seeds", help="seeds such as 0-9 or 1,5,7 (default: --count seeds drawn by the server)")
    parser.add_argument("--count", type=int, default=1, help="scans per condition without --seeds (default 1)")
    parser.add_argument("--psi", type=float, help="truncation in [0, 1] (default: the model's, 1: none)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--pacs", metavar="URL",
                        help="also export DICOM to this PACS: dicom://AET@host:port or http(s)://host/dicom-web")
    parser.add_argument("--run", metavar="ID",
                        help="with --pacs: export into the synthetic studies of this run (an id an earlier export "
                             "printed), so that the scans of several models over one reference land in one study "
                             "(default: a new run)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S[1], help="seconds per request "
                        "(default %(default)g)")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries of a failed connection "
                        "or server error (default %(default)s)")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help=f"file holding the server's API token (default: ${API_TOKEN_ENV}; a token on the command "
                             "line would be visible to other users of this machine)")
    parser.add_argument("--ca-cert", metavar="FILE", help="certificate to trust for an https server with a "
                                                          "self-signed certificate")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_generate)


def _token_from_file(path: Path | None) -> str | None:
    """The API token in ``path`` (surrounding white space dropped); None without a file (the client then reads
    $SPECTGAN_API_TOKEN)."""
    return path.read_text().strip() if path else None


def run_generate(args: argparse.Namespace) -> int:
    """The ``generate`` command; prints where everything went."""
    if args.seeds is None and args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [None] * args.count
    out = args.out.resolve()
    if args.pacs:
        from spectgan.export.dicom import SyntheticRun

        require_new_dicom_folder(out / DICOM_DIR)
        run = SyntheticRun(args.run) if args.run else SyntheticRun()
    with SpectGANClient(args.server, timeout=(DEFAULT_TIMEOUT_S[0], args.timeout), retries=args.retries,
                        token=_token_from_file(args.token_file), verify=args.ca_cert or True) as client:
        conditions = apply_lesions(expand_conditions(client.conditions(args.model), args.level, args.pattern,
                                                     args.side), args.territory, args.severity)
        image = client.upload(args.image) if Path(args.image).is_file() else args.image
        job = GenerationJob(client, image, args.model, conditions, seeds, psi=args.psi)
        print(job.run_to_folder(out, progress=not args.no_progress))
    if args.pacs:
        print(export_results(job.results, out / DICOM_DIR, args.pacs, run))
        print(f"synthetic run {run.run_id}: export another model's scans over the same reference into the same "
              f"study with --run {run.run_id}")
    return 0
