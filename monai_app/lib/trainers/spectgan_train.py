"""Train task of one bundle: retrains it on a cohort with the served bundle's recipe and publishes the next version
if it passes the quality gate (``spectgan.serving.service.retrain``).

MONAI Label runs it in a subprocess whose output lines are the task's progress (``GET /train/``); stopping the task
(``DELETE /train/``) kills that subprocess before it publishes, so the previous bundle stays in place.
"""
import json
from pathlib import Path

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from spectgan.errors import SpectganError
from spectgan.serving.request import TRAIN_PARAMS, TrainRequest
from spectgan.serving.service import GenerationService, resolve_cohort, retrain


class SpectganTrain(TrainTask):
    def __init__(self, name: str, service: GenerationService, cohort_dir: Path, cohorts_dir: Path, keep_versions: int):
        super().__init__(f"Retrain {name} on a cohort; published only if it passes the quality gate")
        self.name, self.service, self.cohort_dir, self.cohorts_dir = name, service, cohort_dir, cohorts_dir
        self.keep_versions = keep_versions

    def config(self):
        try:
            request = self.service.train_request(self.name, {})
        except SpectganError as error:  # a bundle of a family this server lacks: /info/ says so instead of failing
            return {"cohort": self.cohort_dir.name, "unavailable": str(error)}
        return {"iterations": request.iterations, "batch": request.batch_size,
                "levels": ",".join(level.value for level in request.levels), "cohort": self.cohort_dir.name,
                "init": request.init, "force": request.force}

    def stats(self):
        return self.service.describe(self.name)["bundle"] or {}

    def cohort(self, request: TrainRequest) -> Path:
        """The folder of the cohort a checked request names by id."""
        return resolve_cohort(request.cohort, self.cohort_dir, self.cohorts_dir)

    def __call__(self, request, datastore: Datastore):
        """Runs in MONAI Label's train subprocess, which gets the request as JSON: the params are checked again there
        (the app's route checked them before starting it)."""
        params = {key: request[key] for key in TRAIN_PARAMS if key in request}
        checked = self.service.train_request(self.name, params)
        return retrain(self.name, self.service.models_dir, self.cohort(checked), checked,
                       command=f"monailabel train {self.name} {json.dumps(params, default=str)}",
                       report=print_progress, keep_versions=self.keep_versions)


def print_progress(line: str) -> None:
    """One progress line on stdout, which MONAI Label collects into the train task's details."""
    print(line, flush=True)
