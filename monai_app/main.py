"""The spectgan MONAI Label app: one infer task and one train task per model bundle (``--conf models all``).

Thin: ``spectgan.serving`` does the work. ``--studies`` is a folder of NIfTI / DICOM studies, or a PACS's
DICOMweb URL (``lib.datastore``: NM series, offline). The models are the bundles found in the models folder (or the names in
conf ``models``). App conf: see ``spectgan.serving.settings`` (``models``, ``models_dir``, ``cohort``,
``cohorts_dir``, ``keep_versions``, ``generation_workers``, ``api_token``, ``session_hours``, ``max_upload_mb``,
``pacs``).

``generation_request`` and ``reference_image`` are the edge checks the app's ASGI routes (``asgi.py``) run before any
work: they turn what arrives into a typed request and a reference image path, or raise a domain error.
"""
import logging
from pathlib import Path
from typing import Dict, Optional

from lib.configs.spectgan_model import SpectganModelConfig
from lib.datastore import PacsDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import spectgan
from spectgan.errors import InvalidRequestError, NotFoundError
from spectgan.serving.generation_pool import GenerationPool
from spectgan.serving.page import PageExport, ResultStore, report_page
from spectgan.serving.request import GenerationRequest, parse_params_json
from spectgan.models.versions import ModelStore, VersionEntry
from spectgan.serving.service import GenerationService, private_results_dir, resolve_cohort, select_models
from spectgan.serving.sessions import SessionStore
from spectgan.serving.settings import (generation_workers_from, is_dicomweb, models_dir_from, pacs_url_from,
                                       session_seconds_from)
from spectgan.serving.uploads import check_id

logger = logging.getLogger(__name__)
LISTED_IMAGE_IDS = 10  # image ids an unknown-image message lists
OUTPUTS = ("all", "json", "image")  # MONAI Label's answer formats that apply (dicom_seg needs a DICOMweb datastore)


def shown_id(image: str) -> str:
    """An image id as an error message may quote it: not a path-like one (the answer names no path)."""
    return repr(image) if len(image) <= 80 and "/" not in image and "\\" not in image else "(a path-like id)"


class SpectganApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        models_dir = models_dir_from(conf)
        names = select_models(conf.get("models"), models_dir)
        self.service = GenerationService(models_dir, names)
        workers = generation_workers_from(conf)
        self.generator = GenerationPool(models_dir, names, workers) if workers else self.service
        self.page_results = ResultStore()  # the spectgan page's results, by id, for its exports
        self.browser_sessions = SessionStore(session_seconds_from(conf))  # logins of the page and OHIF (a token)
        pacs_url = pacs_url_from(conf, studies)
        self.page_export = PageExport(pacs_url, private_results_dir() / "page_exports",
                                      ohif=is_dicomweb(studies) and pacs_url == str(studies).strip().rstrip("/"))
        self.models: Dict[str, SpectganModelConfig] = {}
        for name in names:
            self.models[name] = SpectganModelConfig()
            self.models[name].init(name, str(models_dir), conf, None, service=self.service, generator=self.generator)
        logger.info(f"spectgan models {', '.join(names) or 'none'} (bundles of {models_dir.name}); generation in "
                    f"{f'{workers} worker processes' if workers else 'the request threads'}")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="spectgan",
                         description="Synthetic 123I-IMP brain perfusion SPECT slices, placed on a reference study "
                                     "with hemisphere statistics. Research use only.",
                         version=spectgan.__version__)

    def on_init_complete(self):
        """Serving starts: start the generation workers too (a train task's process never serves, so never does)."""
        super().on_init_complete()
        if isinstance(self.generator, GenerationPool):
            self.generator.start()

    def _init_dicomweb_datastore(self) -> Datastore:
        """``--studies`` is a DICOMweb URL (a PACS): ``lib.datastore.PacsDatastore``, which opens it offline (no
        dcmqi download) and reads the NM reference series as counts with their full geometry."""
        return PacsDatastore(self.studies)

    def init_infers(self) -> Dict[str, InferTask]:
        return {name: config.infer() for name, config in self.models.items()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {name: config.trainer() for name, config in self.models.items()}

    def generation_request(self, model: str, params: str, output: Optional[str]) -> GenerationRequest:
        """The infer request, validated once: unknown model, bad or unknown params or an answer format that does not
        apply raise a domain error naming what is allowed."""
        request = self.service.request(model, parse_params_json(params), strict=True)
        if output is not None and output not in OUTPUTS:
            raise InvalidRequestError(f"output {output!r} is not available here; allowed: {', '.join(OUTPUTS)}")
        return request

    def reference_image(self, image: str, session_id: str, uploaded: Optional[Path]) -> str:
        """The path of the reference study: a checked upload, a session's image, or a datastore object named by its
        id (never a path: NotFoundError listing valid ids)."""
        if uploaded is not None:
            return str(uploaded)
        if session_id:
            sessions = self.sessions()
            session = sessions.get_session(check_id(session_id, "session id")) if sessions else None
            if session is None:
                raise NotFoundError(f"unknown session {shown_id(session_id)}; create one with PUT /session/")
            return session.image
        if not image:
            raise InvalidRequestError(f"image is required: pass ?image=<id> of a reference study; available: "
                                      f"{self._listed_images()}")
        path = self.datastore().get_image_uri(image)
        if not path:
            raise NotFoundError(f"unknown image {shown_id(image)}: an image id names a study of this server's "
                                f"datastore, never a file; available: {self._listed_images()}")
        return path

    def study_ids(self) -> list:
        """The ids of the datastore's reference studies (a folder's files or a DICOMweb server's series)."""
        return sorted(self.datastore().list_images())

    def _listed_images(self) -> str:
        """The first image ids of the datastore, for error messages."""
        available = self.study_ids()
        return ", ".join(available[:LISTED_IMAGE_IDS]) + (" ..." if len(available) > LISTED_IMAGE_IDS else "")

    def check_train_request(self, model: str, params: dict) -> None:
        """A domain error for an unknown model, bad train params or an unknown or unfinished cohort."""
        self._trained(model)
        config = self.models[model]
        resolve_cohort(self.service.train_request(model, params).cohort, config.cohort_dir, config.cohorts_dir)

    def _trained(self, model: str) -> None:
        if model not in self.models:
            raise NotFoundError(f"unknown model {model!r}; this server trains: {', '.join(self.models) or 'none'}")

    def model_versions(self, model: str) -> list[VersionEntry]:
        """The model's served, published and candidate versions with their quality gate verdicts, newest first."""
        self._trained(model)
        return self._store(model).list()

    def rollback(self, model: str, version: str) -> VersionEntry:
        """Serve a published version of the model again (the next request uses it)."""
        self._trained(model)
        return self._store(model).rollback(check_id(str(version), "version"))

    def model_report(self, model: str, version: str) -> str:
        """The evaluation report of a listed version of the model, as an HTML page (figures relative to it)."""
        self._trained(model)
        report = self._store(model).report(check_id(str(version), "version"))
        return report_page(report.read_text(), f"{model} {version}: evaluation report")

    def model_report_figure(self, model: str, version: str, name: str) -> Path:
        """A figure of that report, by its file name."""
        self._trained(model)
        return self._store(model).report_figure(check_id(str(version), "version"), check_id(name, "figure name"))

    def _store(self, model: str) -> ModelStore:
        return ModelStore(self.service.models_dir, model, self.models[model].keep_versions)
