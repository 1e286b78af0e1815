"""Train task of one bundle: retrains it on the cohort and publishes the next version (``spectgan.serving.service.retrain``).

MONAI Label runs it in a subprocess whose output lines are the task's progress (``GET /train/``); stopping the task
(``DELETE /train/``) kills that subprocess before it publishes, so the previous bundle stays in place.
"""
from pathlib import Path

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from spectgan.serving.service import MODELS, TRAIN_PARAMS, GenerationService, retrain, train_client_config


class SpectganTrain(TrainTask):
    def __init__(self, name: str, service: GenerationService, cohort_dir: Path):
        super().__init__(f"Retrain {name}: {MODELS[name].description}")
        self.name, self.service, self.cohort_dir = name, service, cohort_dir

    def config(self):
        return {**train_client_config(self.name), "cohort": self.cohort_dir.name}

    def stats(self):
        return self.service.describe(self.name)["bundle"] or {}

    def __call__(self, request, datastore: Datastore):
        params = {key: request[key] for key in TRAIN_PARAMS if key in request}
        return retrain(self.name, self.service.models_dir, self.cohort_dir, params, report=print_progress)


def print_progress(line: str) -> None:
    """One progress line on stdout, which MONAI Label collects into the train task's details."""
    print(line, flush=True)
