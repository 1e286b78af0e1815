"""The PACS as the app's datastore: ``--studies http(s)://host:port/dicom-web`` (e.g. Orthanc's DICOMweb root).

``PacsDatastore`` is MONAI Label's DICOMweb datastore with three changes:

- **No dcmqi download at start-up.** MONAI Label 0.8.5 fetches dcmqi (``itkimage2segimage``) from GitHub when it
  opens a DICOMweb datastore, so the server cannot start offline. The tool turns a label saved to the datastore into
  a DICOM SEG; spectgan saves no labels there (its infer tasks answer the generated slice, and spectgan writes its
  hemisphere SEGs itself, with highdicom, in ``spectgan.export``). So the app opens the datastore without the
  download instead of pinning dcmqi (a 40 MB native tool, found only on the PATH), and ``save_label`` of a final
  label is refused with a clear error.
- **Reference studies read as counts.** A reference study is an NM RECON TOMO series (one multi-frame instance or
  single-frame instances). MONAI Label converts a series with SimpleITK (GDCM), which keeps the geometry but reads
  the stored 16-bit values: the Real World Value Mapping that scales them to counts is lost. The series is read with
  ``spectgan.export.dicom.read_nm_volume`` instead (counts, origin, spacing, direction) and cached as
  ``<SeriesInstanceUID>.nii.gz`` in the cache folder, so each series is fetched once, with the series' DICOM
  identity beside it (``spectgan.serving.dicom_source``: its UIDs, instances, patient and study), which a result made
  from the study (``base=reference``) references.
- **The listing names the series.** ``json()`` (``GET /datastore/?output=all``) lists every series the search filter
  finds, with its study, modality and description, not only those fetched so far.

Environment (MONAI Label's settings): ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD`` (HTTP basic
authentication), ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` (a QIDO-RS filter as JSON; default here
``{"Modality": "NM"}``, where MONAI Label's is CT), ``MONAI_LABEL_DICOMWEB_CACHE_PATH`` (default
``~/.cache/monailabel/dicom``), ``MONAI_LABEL_DICOMWEB_CACHE_EXPIRY`` (seconds a series listing is reused).
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import SimpleITK as sitk
from cachetools import TTLCache, cached
from dicomweb_client.session_utils import create_session_from_user_pass
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from pydicom.dataset import Dataset

from spectgan.export.dicom import read_nm_volume
from spectgan.serving.dicom_source import write_sidecar
from spectgan.serving.uploads import is_plain_id

logger = logging.getLogger(__name__)

SEARCH_FILTER_ENV = "MONAI_LABEL_DICOMWEB_SEARCH_FILTER"
DEFAULT_SEARCH_FILTER = {"Modality": "NM"}  # reference studies are NM series
LISTED_FIELDS = ("StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "PatientID", "StudyDate",
                 "NumberOfSeriesRelatedInstances")  # what json() tells of each series (QIDO-RS series attributes)


def search_filter() -> Dict[str, Any]:
    """The QIDO-RS filter of the listed series: ``$MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` when set, else NM."""
    return settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER if os.environ.get(SEARCH_FILTER_ENV) else \
        dict(DEFAULT_SEARCH_FILTER)


class PacsDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore over ``url``, configured from MONAI Label's settings (see the module)."""

    def __init__(self, url: str):
        session = None
        if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
            session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME,
                                                    settings.MONAI_LABEL_DICOMWEB_PASSWORD)
        client = DICOMwebClientX(url=url, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        super().__init__(client=client, search_filter=search_filter(),
                         cache_path=(settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None,
                         fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME)
        self._fetch_locks: Dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @cached(cache=TTLCache(maxsize=16, ttl=settings.MONAI_LABEL_DICOMWEB_CACHE_EXPIRY))
    def series(self) -> Dict[str, Dict[str, str]]:
        """SeriesInstanceUID -> ``LISTED_FIELDS`` of each series the search filter finds (one QIDO-RS query, reused
        for ``MONAI_LABEL_DICOMWEB_CACHE_EXPIRY`` seconds)."""
        listed = {}
        for found in self._client.search_for_series(search_filters=self._search_filter):
            dataset = Dataset.from_json(found)
            listed[str(dataset.SeriesInstanceUID)] = {
                field: str(dataset[field].value) for field in LISTED_FIELDS if dataset.get(field) is not None}
        return listed

    def list_images(self) -> List[str]:
        return list(self.series())

    def json(self) -> Dict[str, Any]:
        """The listing of ``GET /datastore/?output=all``: every listed series as an object whose image info holds its
        ``LISTED_FIELDS`` (and, once fetched, what MONAI Label records); no server path."""
        fetched = super().json().get("objects", {})
        objects = {}
        for uid, fields in self.series().items():
            known = fetched.get(uid, {})
            image = known.get("image", {"ext": ".nii.gz", "info": {}})
            objects[uid] = {**known, "image": {**image, "info": {**image.get("info", {}), **fields,
                                                                  "SeriesInstanceUID": uid}},
                            "labels": known.get("labels", {})}
        return {"name": self.name(), "description": "DICOMweb PACS", "objects": objects}

    def get_image_uri(self, image_id: str) -> str:
        """The cached NIfTI (counts, full geometry) of series ``image_id``, fetched and converted on first use; ""
        when the PACS has no such series under the search filter."""
        if not is_plain_id(image_id):  # a series UID, never a path
            return ""
        nifti = Path(self._datastore.image_path()) / f"{image_id}.nii.gz"
        with self._fetch_lock(image_id):
            if nifti.exists():
                return str(nifti)
            if not self._client.search_for_series(search_filters={**self._search_filter,
                                                                  "SeriesInstanceUID": image_id}):
                return ""
            with tempfile.TemporaryDirectory(prefix="spectgan-series-") as folder:
                dicom_web_download_series(None, image_id, folder, self._client, self._fetch_by_frame)
                converted = Path(folder) / "volume.nii.gz"
                sitk.WriteImage(read_nm_volume(folder), str(converted), useCompression=True)
                write_sidecar(sorted(Path(folder).glob("*.dcm")), nifti)
                self.add_image(image_id, str(converted), self._dicom_info(image_id))
        return str(nifti)

    def _fetch_lock(self, image_id: str) -> threading.Lock:
        """One lock per series, so that parallel requests for a new series fetch it once."""
        with self._locks_lock:
            return self._fetch_locks.setdefault(image_id, threading.Lock())

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        """None: this datastore holds no MONAI Label labels (``save_label``). MONAI Label's version fetches the
        metadata of every SEG series of the PACS on each ``/info/`` (spectgan's SEGs belong to synthetic scans)."""
        return []

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any],
                   label_id: str = "") -> str:
        """Draft labels stay in the cache; a final label would go to the PACS as a DICOM SEG through dcmqi, which
        this app does not install: refused with MONAI Label's invalid-input error (HTTP 422)."""
        if label_tag == DefaultLabelTag.FINAL:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      "this server's PACS datastore takes no final labels; spectgan exports its "
                                      "hemisphere SEGs itself (spectgan export, or the page's export)")
        return super(DICOMWebDatastore, self).save_label(image_id, label_filename, label_tag, label_info, label_id)
