"""The spectgan MONAI Label app: one infer task and one train task per model bundle (``--conf models all``).

Thin: ``spectgan.serving.service`` does the work. App conf: ``models`` (``all`` or comma-separated names), ``models_dir``
(default $SPECTGAN_MODELS_DIR, else <repository>/models), ``cohort`` (training cohort; default $SPECTGAN_COHORT,
else sample_data/cohorts/default), ``generation_workers`` (processes that generate; default
$SPECTGAN_GENERATION_WORKERS, else one per core; 0: in the server's request threads).
"""
import importlib
import logging
from typing import Dict, Optional

import lib.configs
from lib.configs.spectgan_model import SpectganModelConfig
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.class_utils import get_class_names

import spectgan
from spectgan.serving.generation_pool import GenerationPool
from spectgan.serving.service import (NOT_FOUND, UNPROCESSABLE, GenerationService, ServiceError, check_cohort,
                                     parse_params_json, parse_train_params, select_models)
from spectgan.serving.settings import generation_workers_from, models_dir_from

logger = logging.getLogger(__name__)
LISTED_IMAGE_IDS = 10  # image ids an unknown-image message lists
OUTPUTS = ("all", "json", "image")  # MONAI Label's answer formats that apply (dicom_seg needs a DICOMweb datastore)


def shown_id(image: str) -> str:
    """An image id as an error message may quote it: not a path-like one (the answer names no path)."""
    return repr(image) if len(image) <= 80 and "/" not in image and "\\" not in image else "(a path-like id)"


def _model_configs() -> Dict[str, type]:
    """Config classes in lib/configs by the model they serve."""
    configs = {}
    for class_path in get_class_names(lib.configs, SpectganModelConfig.__name__):
        module_name, class_name = class_path.rsplit(".", 1)
        config = getattr(importlib.import_module(module_name), class_name)
        configs[config.model_name] = config
    return configs


class SpectganApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        names = select_models(conf.get("models"))
        self.service = GenerationService(models_dir_from(conf), names)
        workers = generation_workers_from(conf)
        self.generator = GenerationPool(self.service.models_dir, names, workers) if workers else self.service
        configs = _model_configs()
        self.models: Dict[str, SpectganModelConfig] = {}
        for name in names:
            self.models[name] = configs[name]()
            self.models[name].init(name, str(self.service.models_dir), conf, None, service=self.service,
                                   generator=self.generator)
        logger.info(f"spectgan models {', '.join(names)} from {self.service.models_dir}; generation in "
                    f"{f'{workers} worker processes' if workers else 'the request threads'}")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="spectgan",
                         description="Synthetic 123I-IMP brain perfusion SPECT slices (conditional FastGAN), placed "
                                     "on a reference study with hemisphere statistics. Research use only.",
                         version=spectgan.__version__)

    def on_init_complete(self):
        """Serving starts: start the generation workers too (a train task's process never serves, so never does)."""
        super().on_init_complete()
        if isinstance(self.generator, GenerationPool):
            self.generator.start()

    def init_infers(self) -> Dict[str, InferTask]:
        return {name: config.infer() for name, config in self.models.items()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {name: config.trainer() for name, config in self.models.items()}

    def check_infer_request(self, model: str, image: str, params: str, output: Optional[str], uploaded: bool
                            ) -> None:
        """ServiceError (4xx) for an unknown model, bad params, an unknown image id or an answer format that does not
        apply, before any work is done. ``uploaded``: the image comes as a file or a session instead of an id.
        """
        self.service.check_params(model, parse_params_json(params))
        if output is not None and output not in OUTPUTS:
            raise ServiceError(UNPROCESSABLE, f"output {output!r} is not available here; allowed: "
                                              f"{', '.join(OUTPUTS)}")
        if uploaded:
            return
        if not image:
            raise ServiceError(UNPROCESSABLE, f"image is required: pass ?image=<id> of a reference study; available: "
                                              f"{self._listed_images()}")
        if not self.datastore().get_image_uri(image):
            raise ServiceError(NOT_FOUND, f"unknown image {shown_id(image)}: an image id names a study of this "
                                          f"server's datastore, never a file; available: {self._listed_images()}")

    def _listed_images(self) -> str:
        """The first image ids of the datastore, for error messages."""
        available = sorted(self.datastore().list_images())
        return ", ".join(available[:LISTED_IMAGE_IDS]) + (" ..." if len(available) > LISTED_IMAGE_IDS else "")

    def check_train_request(self, model: str, params: dict) -> None:
        """ServiceError (4xx) for an unknown model, bad train params or a missing cohort."""
        if model not in self.models:
            raise ServiceError(NOT_FOUND, f"unknown model {model!r}; this server trains: {', '.join(self.models)}")
        parse_train_params(model, params)
        check_cohort(self.models[model].cohort_dir)
