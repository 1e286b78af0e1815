"""What the spectgan page (``/spectgan/``, static files in ``spectgan.workstation_page``) asks of the server, HTTP
aside (``monai_app.asgi`` has the routes).

- ``slice_view``: one generated slice as the page draws it: its counts, shown radiologically (the patient's right
  on the screen's left, anterior up: ``spectgan.geometry.display``), its hemisphere regions, the registered midline
  and the orientation marks;
- ``ResultStore``: the latest results by a random id, so that the page exports what it shows (never a path);
- ``PageExport``: DICOM (NM, hemisphere SEG, SR; ``spectgan.export.dicom``) of chosen results, sent to the server's
  PACS through the outbox of ``spectgan.export.pacs``; the scans of one page run over one reference land in one
  synthetic study, which the bundled OHIF shows when the PACS is the server's own DICOMweb datastore;
- ``describe_page``: what the page may offer, and the statistics it shows, as declared;
- ``report_page``: a model version's evaluation report (``spectgan.models.versions.ModelStore.report``) as HTML;
- ``training_state``: the server's latest train task, for the page's Models panel.
"""
from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

import numpy as np
import SimpleITK as sitk

from spectgan.errors import InvalidImageError, InvalidRequestError, NotFoundError, UnavailableError
from spectgan.export.scans import send_to_pacs, write_dicom
from spectgan.geometry.display import direction_letter, display_orientation, displayed_axes, midline_distance, \
    oriented
from spectgan.geometry.roi import STATISTICS
from spectgan.results import GenerationResult

RESULT_STORE_SIZE = 512  # results the page can still export (a 64 x 64 slice takes 16 kB)
MAX_EXPORT_RESULTS = 64
REGION_CODES = {"left": 1, "right": 2}  # ``regions`` of a slice view: 0 outside the brain
OHIF_VIEWER = "/ohif/viewer?StudyInstanceUIDs="
PAGE_STYLESHEET = "/spectgan/static/page.css"
NO_TRAINING = "NONE"  # TrainingState.status when the server has run no train task since it started
TRAINING_UNDER_WAY = ("SUBMITTED", "RUNNING")  # MONAI Label's task states while a training is queued or runs


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def slice_view(result: GenerationResult) -> dict:
    """A one-slice result as the page draws it, radiologically: its image, its hemisphere masks as measured.

    ``counts``: base64 of little-endian float32 [rows, columns] in counts; ``regions``: base64 of uint8 [rows,
    columns] (``REGION_CODES``; all 0 when no brain was measured); ``spacing_mm``: (column width, row height);
    ``midline``: (a, b, c) with a x column + b x row + c = signed distance in mm (> 0 toward the patient's left) at
    the pixel centre (column, row); ``marks``: the patient direction at the screen's left, right, top and bottom.
    """
    image = result.image
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        raise InvalidImageError(f"the page shows one-slice images (output_space slice), got size {image.GetSize()}")
    orientation = display_orientation(image)
    counts = oriented(sitk.GetArrayFromImage(image)[0], orientation)
    regions = np.zeros(counts.shape, dtype=np.uint8)
    if result.masks is not None:  # None: no brain to split, the result's stats_error says why
        for side, mask in (("left", result.masks.left), ("right", result.masks.right)):
            regions[oriented(sitk.GetArrayFromImage(mask)[0], orientation) > 0] = REGION_CODES[side]
    distance = oriented(midline_distance(image, result.midline), orientation)
    rows, columns = distance.shape
    per_column = float(distance[0, 1] - distance[0, 0]) if columns > 1 else 0.0
    per_row = float(distance[1, 0] - distance[0, 0]) if rows > 1 else 0.0
    spacing = image.GetSpacing()[:2]
    right_axis, down_axis = displayed_axes(image, orientation)
    return {
        "rows": rows, "columns": columns,
        "spacing_mm": list(spacing[::-1] if orientation[0] else spacing),
        "counts": _base64(counts, "<f4"), "regions": _base64(regions, "u1"),
        "midline": [per_column, per_row, float(distance[0, 0])],
        "marks": {"left": direction_letter(-right_axis), "right": direction_letter(right_axis),
                  "top": direction_letter(-down_axis), "bottom": direction_letter(down_axis)},
    }


class ResultStore:
    """The latest generated results by random id (thread-safe; the oldest is dropped beyond ``capacity``)."""

    def __init__(self, capacity: int = RESULT_STORE_SIZE):
        self.capacity = capacity
        self._results: OrderedDict[str, GenerationResult] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, result: GenerationResult) -> GenerationResult:
        """Keep a result under a new random id; the result with that ``result_id``."""
        kept = replace(result, result_id=secrets.token_urlsafe(12))
        with self._lock:
            self._results[kept.result_id] = kept
            while len(self._results) > self.capacity:
                self._results.popitem(last=False)
        return kept

    def get(self, result_ids: Sequence[str]) -> list[GenerationResult]:
        """The results of these ids, in order; NotFoundError names how many are unknown (or dropped)."""
        with self._lock:
            found = [self._results.get(result_id) for result_id in result_ids]
        missing = sum(result is None for result in found)
        if missing:
            raise NotFoundError(f"{missing} of the {len(result_ids)} results are no longer on the server (it keeps "
                                f"the latest {self.capacity} and forgets them when it restarts): generate them again")
        return found


def parse_export_request(body) -> tuple[list[str], str | None]:
    """(result ids, run id or None) from the page's export request ``{"results": [...], "run": "..."}``."""
    if not isinstance(body, dict):
        raise InvalidRequestError("an export request is a JSON object {\"results\": [result ids], \"run\": run id}")
    ids, run = body.get("results"), body.get("run")
    if not isinstance(ids, list) or not ids or not all(isinstance(item, str) and item for item in ids):
        raise InvalidRequestError("results must be a non-empty list of result ids (select results to export)")
    if len(ids) > MAX_EXPORT_RESULTS:
        raise InvalidRequestError(f"at most {MAX_EXPORT_RESULTS} results per export, got {len(ids)}")
    if run is not None and not isinstance(run, str):
        raise InvalidRequestError("run must be the run id an earlier export answered, or absent")
    return list(dict.fromkeys(ids)), run or None


class PageExport:
    """Exports chosen results to the server's PACS (``pacs_url``; None: export is off) as DICOM written under
    ``folder``. ``ohif``: the bundled OHIF reads that PACS (it is the server's DICOMweb datastore)."""

    def __init__(self, pacs_url: str | None, folder: Path, ohif: bool):
        self.pacs_url, self.folder, self.ohif = pacs_url, Path(folder), ohif
        self._runs: dict = {}
        self._lock = threading.Lock()

    def describe(self) -> dict:
        """What the page may offer: export on or off, and OHIF links."""
        return {"export": self.pacs_url is not None, "ohif": self.ohif and self.pacs_url is not None}

    def _run(self, run_id: str | None):
        from spectgan.export.dicom import SyntheticRun

        with self._lock:
            run = SyntheticRun(run_id) if run_id else SyntheticRun()
            return self._runs.setdefault(run.run_id, run)

    def export(self, results: Sequence[GenerationResult], run_id: str | None) -> dict:
        """Send the results' DICOM to the PACS as the synthetic studies of their references in the run ``run_id``
        (a new run when None). The same results of the same run go to the same folder, so pressing Export again
        resends only what the PACS has not confirmed. UnavailableError when there is no PACS or it fails."""
        from spectgan.export.dicom import DicomError
        from spectgan.export.pacs import PacsError

        if self.pacs_url is None:
            raise UnavailableError("this server has no PACS to export to: start it with --conf pacs URL (or "
                                   "$SPECTGAN_PACS_URL), or with a DICOMweb datastore")
        run = self._run(run_id)
        key = hashlib.sha256("\0".join(sorted(result.result_id for result in results)).encode())
        folder = self.folder / run.run_id / key.hexdigest()[:16]
        try:
            sent = send_to_pacs(folder, self.pacs_url) if folder.is_dir() else \
                send_to_pacs(write_dicom(results, folder, run), self.pacs_url)
        except DicomError as error:
            raise InvalidRequestError(f"cannot encode these results as DICOM: {error}") from None
        except PacsError as error:
            raise UnavailableError(f"the PACS did not take the export: {str(error).splitlines()[0]} Nothing "
                                   "confirmed is sent twice: press Export again when the PACS is back.") from None
        studies = {}
        for result in results:  # a study filed with the source names no patient: the answer tells no more
            study = run.study_for(result)
            studies.setdefault(study.study_instance_uid, {
                "study_instance_uid": study.study_instance_uid, "reference": result.reference,
                **({"patient_id": study.patient_id} if study.identity_removed else {"filed_with": "source"}),
                "scans": 0,
                **({"ohif_url": OHIF_VIEWER + quote(study.study_instance_uid)} if self.describe()["ohif"] else {})})
            studies[study.study_instance_uid]["scans"] += 1
        return {"run": run.run_id, "studies": list(studies.values()), "instances": sent.sent + sent.already_confirmed,
                "sent_now": sent.sent}


def describe_page(export: PageExport) -> dict:
    """What the page may offer (``PageExport.describe``) and the hemisphere statistics it shows: their declarations
    (``spectgan.geometry.roi.STATISTICS``: key, label, unit, digits, region, whether on the cards and table)."""
    return {**export.describe(), "statistics": [statistic.to_dict() for statistic in STATISTICS]}


def report_page(markdown_text: str, title: str) -> str:
    """An evaluation report (Markdown with tables; figures linked as ``figures/<name>.png``, relative to the page)
    as one HTML page in the spectgan page's style. HTML in the Markdown is shown as text, never run."""
    import markdown

    body = markdown.markdown(html.escape(markdown_text, quote=False), extensions=["tables"], output_format="html")
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f'<link rel="stylesheet" href="{PAGE_STYLESHEET}">\n</head>\n<body class="report">\n'
            f'<p class="note">{html.escape(title)}. Research use only: the model makes synthetic images.</p>\n'
            f"{body}\n</body>\n</html>\n")


@dataclass(frozen=True)
class TrainingState:
    """The server's latest train task (MONAI Label's task record, ``GET /train/``) as the page shows it."""

    status: str  # NO_TRAINING, or MONAI Label's: SUBMITTED, RUNNING, DONE, ERROR, STOPPED
    running: bool  # queued or running: the page asks again until it is not
    model: str | None
    cohort: str | None  # the cohort id the request named (None: the server's default cohort)
    started: str | None  # server local time, "YYYY-mm-dd HH:MM:SS" as MONAI Label records it
    ended: str | None
    latest: str  # the task's latest line of its own ("<model>: ..."): what it is doing, or how it ended

    def to_dict(self) -> dict:
        return asdict(self)


def training_state(task: dict | None) -> TrainingState:
    """The page's view of MONAI Label's latest train task record (None: no training since the server started)."""
    if task is None:
        return TrainingState(NO_TRAINING, False, None, None, None, None, "")
    request = task.get("request") or {}
    model = request.get("model")
    prefix = f"{model}: "
    own = [line[line.index(prefix):] for line in task.get("details") or () if model and prefix in line]
    status = str(task.get("status", NO_TRAINING))
    return TrainingState(status, status in TRAINING_UNDER_WAY, model, request.get("cohort"), task.get("start_ts"),
                         task.get("end_ts"), own[-1] if own else "")
