"""The app's ASGI entry point: MONAI Label's own FastAPI app, with three changes (start the server with
``--uvicorn_app monai_app.asgi:app``).

- ``POST /infer/{model}`` checks the request (model, params, image id: a 4xx naming what is allowed), then runs
  MONAI Label's own ``run_inference`` in a worker thread, so one inference no longer stalls ``/info/`` or other
  requests (the stock route runs it on the event loop).
- ``POST /train/{model}`` checks the train params and the cohort before MONAI Label starts the task.
- Errors of spectgan and MONAI Label become 4xx answers with their message instead of a bare 500.

It also sets torch's intra-op threads for serving (``spectgan.serving.service.use_server_threads``: parallel requests, one
thread each).
"""
import tempfile
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from monailabel.app import app
from monailabel.config import RBAC_ADMIN, RBAC_USER, settings
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.exception import (ImageNotFoundException, LabelNotFoundException, MONAILabelError,
                                            MONAILabelException)
from monailabel.interfaces.utils.app import app_instance
from starlette.concurrency import run_in_threadpool

from spectgan.errors import SpectganError
from spectgan.serving.service import (NOT_FOUND, REPOSITORY_ROOT, UNPROCESSABLE, ServiceError, use_server_threads,
                                     without_folder)

router = APIRouter()


def _checked_inference(background_tasks, model, image, session_id, params, file, label, output):
    app_instance().check_infer_request(model, image, params, output.value if output else None,
                                       uploaded=bool(file or session_id))
    return run_inference(background_tasks, model, image, session_id, params, file, label, output)


@router.post("/infer/{model}", summary=f"{RBAC_USER}Run Inference for supported model")
async def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    return await run_in_threadpool(_checked_inference, background_tasks, model, image, session_id, params, file,
                                   label, output)


@router.post("/train/{model}", summary=f"{RBAC_ADMIN} Run Training Task for specific model")
async def train(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
):
    app_instance().check_train_request(model, params or {})
    return await run_in_threadpool(run_model, model, params, run_sync, enqueue)


def public_message(message: str) -> str:
    """An error message as answered: the server's own folders (repository, studies, models, temporary folder, home)
    named by their last part, so that no answer shows a path of the server (the messages avoid them; this is the
    net under them)."""
    folders = [REPOSITORY_ROOT, Path(settings.MONAI_LABEL_STUDIES or "."), Path(tempfile.gettempdir()), Path.home()]
    instance = app_instance()
    if instance is not None and hasattr(instance, "service"):
        folders.append(instance.service.models_dir)
    for folder in sorted(folders, key=lambda path: len(str(path)), reverse=True):
        if str(folder) != "/":
            message = without_folder(message, folder)
    return message


async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content={"detail": public_message(str(error))})


async def _spectgan_error(request: Request, error: SpectganError) -> JSONResponse:
    return JSONResponse(status_code=UNPROCESSABLE, content={"detail": public_message(str(error))})


async def _monailabel_error(request: Request, error: MONAILabelException) -> JSONResponse:
    if isinstance(error, (ImageNotFoundException, LabelNotFoundException)):
        status = NOT_FOUND
    elif error.error is MONAILabelError.INVALID_INPUT:
        status = UNPROCESSABLE
    else:
        status = 500
    return JSONResponse(status_code=status, content={"detail": public_message(error.msg), "error": error.error.value})


def _ahead_of_stock_routes(router: APIRouter) -> None:
    """Add the router's routes in front of MONAI Label's, so that they answer their paths first."""
    app.include_router(router, prefix=settings.MONAI_LABEL_API_STR)
    added = len(router.routes)
    app.router.routes[:] = app.router.routes[-added:] + app.router.routes[:-added]


use_server_threads()
_ahead_of_stock_routes(router)
app.add_exception_handler(ServiceError, _service_error)
app.add_exception_handler(SpectganError, _spectgan_error)
app.add_exception_handler(MONAILabelException, _monailabel_error)
