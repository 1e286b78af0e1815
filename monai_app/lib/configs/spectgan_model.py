"""What every spectgan model config does: an infer task and a train task for its bundle."""
from abc import abstractmethod
from typing import Any, Dict

from lib.infers import SpectganInfer
from lib.trainers import SpectganTrain
from monailabel.interfaces.config import TaskConfig

from spectgan.serving.settings import cohort_dir_from


class SpectganModelConfig(TaskConfig):
    """Config of one bundle in the models folder; a subclass names it with ``model_name``.

    ``init`` takes the app's ``service`` (a ``spectgan.serving.service.GenerationService``) and ``generator`` (what runs
    the generation: a ``spectgan.serving.generation_pool.GenerationPool`` or the service) as keyword arguments.
    """

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Bundle folder name, which is also the infer and train task name."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.service, self.generator = kwargs["service"], kwargs["generator"]
        self.cohort_dir = cohort_dir_from(conf)

    def infer(self) -> SpectganInfer:
        return SpectganInfer(self.model_name, self.service, self.generator)

    def trainer(self) -> SpectganTrain:
        return SpectganTrain(self.model_name, self.service, self.cohort_dir)
