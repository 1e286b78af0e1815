"""Infer task of one bundle: a synthetic slice on the reference study's level plane (``GenerationService.generate``)."""
from typing import Any, Dict, Tuple, Union

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from spectgan.serving.generation_pool import GenerationPool
from spectgan.serving.request import GENERATION_REQUEST
from spectgan.serving.service import GenerationService


class SpectganInfer(InferTask):
    """Answers a float32 NIfTI in counts (the generated slice placed in the reference's physical space) and the
    JSON result: condition, seed, bundle version and sha256, hemisphere statistics, geometry, timings.

    ``/info/`` shows the bundle, the params with their allowed values and the valid conditions; ``config`` holds the
    client defaults in MONAI Label's convention (a list offers choices, the first is the default). ``generator``
    does the work: the app's ``GenerationPool`` of worker processes, or the ``service`` itself (in this thread).
    """

    def __init__(self, name: str, service: GenerationService, generator: Union[GenerationPool, GenerationService]):
        super().__init__(type=InferType.OTHERS, labels=None, dimension=3,
                         description=service.describe(name)["description"])
        self.name, self.service, self.generator = name, service, generator

    def config(self) -> Dict[str, Any]:
        return self.service.describe(self.name)["config"]

    def info(self) -> Dict[str, Any]:
        description = self.service.describe(self.name)
        return {"type": self.type, "labels": self.labels, "dimension": self.dimension, **description}

    def is_valid(self) -> bool:
        return self.service.has_bundle(self.name)

    def __call__(self, request) -> Tuple[str, Dict]:
        """``request[GENERATION_REQUEST]``: the request the app's route checked; from another caller of MONAI Label's
        ``infer`` (batch inference), the params in ``request`` are checked here."""
        generation = request.get(GENERATION_REQUEST) or self.service.request(self.name, request)
        path, result = self.generator.generate_file(generation, request["image"])
        return str(path), result
