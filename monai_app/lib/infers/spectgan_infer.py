"""Infer task of one bundle: a synthetic slice on the reference study's level plane (``GenerationService.generate``)."""
from typing import Any, Dict, Tuple

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from spectgan.service import INFER_PARAMS, MODELS, GenerationService, ServiceError, write_result_image


class SpectganInfer(InferTask):
    """Answers a float32 NIfTI in counts (the generated slice placed in the reference's physical space) and the
    JSON result: condition, seed, bundle version and sha256, hemisphere statistics, geometry, timings.

    ``/info/`` shows the bundle, the params with their allowed values and the valid conditions; ``config`` holds the
    client defaults in MONAI Label's convention (a list offers choices, the first is the default).
    """

    def __init__(self, name: str, service: GenerationService):
        super().__init__(type=InferType.OTHERS, labels=None, dimension=3, description=MODELS[name].description)
        self.name, self.service = name, service

    def config(self) -> Dict[str, Any]:
        return self.service.describe(self.name)["config"]

    def info(self) -> Dict[str, Any]:
        description = self.service.describe(self.name)
        return {"type": self.type, "labels": self.labels, "dimension": self.dimension,
                "description": self.description, **description}

    def is_valid(self) -> bool:
        return self.service.has_bundle(self.name)

    def __call__(self, request) -> Tuple[str, Dict]:
        params = {key: request[key] for key in INFER_PARAMS if key in request}
        try:
            outcome = self.service.generate(self.name, request.get("image"), params)
        except ServiceError as error:
            raise HTTPException(status_code=error.status, detail=str(error)) from None
        return str(write_result_image(outcome.image)), outcome.result
