"""What every spectgan model config does: an infer task and a train task for its bundle."""
from typing import Any, Dict

from lib.infers import SpectganInfer
from lib.trainers import SpectganTrain
from monailabel.interfaces.config import TaskConfig

from spectgan.serving.settings import cohort_dir_from, cohorts_dir_from, keep_versions_from


class SpectganModelConfig(TaskConfig):
    """Config of one bundle in the models folder (``name``: its folder name, also the infer and train task name).

    ``init`` takes the app's ``service`` (a ``spectgan.serving.service.GenerationService``) and ``generator`` (what
    runs the generation: a ``spectgan.serving.generation_pool.GenerationPool`` or the service) as keyword arguments.
    """

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.service, self.generator = kwargs["service"], kwargs["generator"]
        self.cohort_dir, self.cohorts_dir = cohort_dir_from(conf), cohorts_dir_from(conf)
        self.keep_versions = keep_versions_from(conf)

    def infer(self) -> SpectganInfer:
        return SpectganInfer(self.name, self.service, self.generator)

    def trainer(self) -> SpectganTrain:
        return SpectganTrain(self.name, self.service, self.cohort_dir, self.cohorts_dir, self.keep_versions)
