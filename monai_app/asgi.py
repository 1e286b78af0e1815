"""The app's ASGI entry point: MONAI Label's own FastAPI app, with these changes (start the server with
``--uvicorn_app monai_app.asgi:app``).

- ``EdgeGuard``, in front of every route (MONAI Label's own included): the optional bearer token
  (``SPECTGAN_API_TOKEN`` or conf ``api_token``) or, from a browser, a session cookie it got by logging in with
  that token on the spectgan page (``/spectgan/api/login``; the page and OHIF's DICOMweb calls through
  ``/proxy/dicom/`` then carry it), plain ids on every datastore write, the upload size limit.
- ``POST /infer/{model}`` turns the request into one typed ``GenerationRequest`` and a reference image path (a 4xx
  naming what is allowed otherwise), then has MONAI Label's app run the infer task with that object, in a worker
  thread, so one inference no longer stalls ``/info/`` or other requests (the stock route runs it on the event
  loop); MONAI Label's ``send_response`` answers it as the stock route would.
- ``PUT /datastore/`` and ``/datastore/image`` accept NIfTI or DICOM only, under a plain id.
- ``POST /train/{model}`` checks the train params and the cohort before MONAI Label starts the task.
- ``GET /models/{model}/versions`` lists a model's versions with their quality gate verdicts; ``POST
  /models/{model}/rollback`` (admin, JSON ``{"version": ...}``) serves a published one again
  (``spectgan.models.versions``); ``GET /models/{model}/versions/{version}/report/`` shows a listed version's
  evaluation report (the quality gate's, else its fidelity report) as HTML, its figures under ``figures/``.
- ``/spectgan/``: the spectgan page (static files of ``spectgan.workstation_page``) and its API under
  ``/spectgan/api/``: the datastore's studies, a generation answered as JSON with the slice as the page draws it
  (``spectgan.serving.page.slice_view``; the same checks and infer task as ``/infer``), the export of chosen
  results to the server's PACS, the latest training's state (``training``: MONAI Label's train task in short) and the
  browser's login and logout on a server with a token.
- ``error_response``: the one place where errors of spectgan and MONAI Label become HTTP answers (a 4xx with their
  message instead of a bare 500; no server path in it).

It also sets torch's intra-op threads for serving (``spectgan.serving.service.use_server_threads``: parallel
requests, one thread each).
"""
import hmac
import shutil
import tempfile
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from monailabel.app import app
from monailabel.config import RBAC_ADMIN, RBAC_ANNOTATOR, RBAC_USER, settings
from monailabel.endpoints.datastore import add_image
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.endpoints.train import run_model
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.exception import (ImageNotFoundException, LabelNotFoundException, MONAILabelError,
                                            MONAILabelException)
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.async_tasks.task import AsyncTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser

from spectgan.errors import (AuthenticationError, InvalidRequestError, MalformedRequestError, NotFoundError,
                             SpectganError, TooLargeError, UnavailableError)
from spectgan.geometry.roi import read_image
from spectgan.results import GenerationResult
from spectgan.serving.page import describe_page, parse_export_request, slice_view, training_state
from spectgan.serving.request import GENERATION_REQUEST
from spectgan.serving.service import private_results_dir, use_server_threads, without_folder
from spectgan.serving.sessions import SessionStore
from spectgan.serving.settings import API_TOKEN_ENV, REPOSITORY_ROOT, api_token_from, max_upload_bytes_from
from spectgan.serving.uploads import check_id, check_size, check_upload

API = settings.MONAI_LABEL_API_STR
DATASTORE_ID_PARAMS = ("image", "id", "tag")  # query params of MONAI Label's datastore routes that name objects
MULTIPART_ALLOWANCE_BYTES = 1024 * 1024  # a request body may exceed the upload limit by its form fields
# The one mapping from spectgan's domain errors to HTTP statuses (first match wins).
STATUS_OF_ERROR = ((TooLargeError, 413), (MalformedRequestError, 400), (InvalidRequestError, 422),
                   (NotFoundError, 404), (UnavailableError, 503), (SpectganError, 422))

# A browser's login on a server with a token: an opaque session id in this cookie (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "spectgan_session"
PAGE_PATH = "/spectgan/"
# What a browser reaches without the token or a session: the page (it shows the login form) and its login routes.
PUBLIC_PATHS = frozenset({PAGE_PATH.rstrip("/"), PAGE_PATH, f"{PAGE_PATH}api/session", f"{PAGE_PATH}api/login",
                          f"{PAGE_PATH}api/logout"})
PUBLIC_PREFIXES = (f"{PAGE_PATH}static/",)
OHIF_PREFIX = "/ohif/"  # a browser that opens OHIF without a session is sent to the page's login first
PROXY_PREFIX = f"{API}/proxy/"  # MONAI Label's DICOMweb proxy: forwards request headers to the PACS
CREDENTIAL_HEADERS = (b"authorization", b"cookie")  # what never goes on to the PACS

router = APIRouter()
page_router = APIRouter(prefix="/spectgan")
PAGE_DIR = Path(str(files("spectgan.workstation_page") / "static"))
PAGE_HEADERS = {  # the page loads nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


# ---------------------------------------------------------------------------------------------------- errors

def public_message(message: str) -> str:
    """An error message or report as answered: the server's own folders (repository, studies, models, cohorts,
    temporary folder, home) named by their last part, so that no answer shows a path of the server (the messages
    avoid them; this is the net under them; an evaluation report names its cohort's folder)."""
    folders = [REPOSITORY_ROOT, Path(settings.MONAI_LABEL_STUDIES or "."), Path(tempfile.gettempdir()), Path.home()]
    instance = app_instance()
    if instance is not None and hasattr(instance, "service"):
        folders.append(instance.service.models_dir)
        for config in instance.models.values():
            folders += [Path(config.cohort_dir).parent, Path(config.cohorts_dir)]
    for folder in sorted(folders, key=lambda path: len(str(path)), reverse=True):
        if str(folder) != "/":
            message = without_folder(message, folder)
    return message


def error_response(error: Exception) -> JSONResponse:
    """The HTTP answer to an error: 401 for a missing or wrong token; spectgan's domain errors by
    ``STATUS_OF_ERROR``; MONAI Label's by kind (unknown image or label 404, invalid input 422, else 500)."""
    headers, extra = None, {}
    if isinstance(error, AuthenticationError):
        status, message, headers = 401, str(error), {"WWW-Authenticate": "Bearer"}
    elif isinstance(error, SpectganError):
        status, message = next(code for kind, code in STATUS_OF_ERROR if isinstance(error, kind)), str(error)
    elif isinstance(error, MONAILabelException):
        if isinstance(error, (ImageNotFoundException, LabelNotFoundException)):
            status = 404
        else:
            status = 422 if error.error is MONAILabelError.INVALID_INPUT else 500
        message, extra = error.msg, {"error": error.error.value}
    else:
        raise TypeError(f"no HTTP answer is defined for {type(error).__name__}")
    return JSONResponse(status_code=status, content={"detail": public_message(message), **extra}, headers=headers)


async def _error_handler(request: Request, error: Exception) -> JSONResponse:
    return error_response(error)


# ------------------------------------------------------------------------------------------------------ edge

def is_token(given: str, expected: str) -> bool:
    """True when ``given`` is the server's token (compared in constant time)."""
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def check_token(headers: dict, expected: Optional[str]) -> None:
    """AuthenticationError unless the request carries ``Authorization: Bearer <expected>`` (nothing to check when the
    server has no token). Neither token appears in the message."""
    if expected is None:
        return
    scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise AuthenticationError(f"this server requires an API token: send the header 'Authorization: Bearer "
                                  f"<token>' (spectgan: --token or ${API_TOKEN_ENV}; MONAI Label's client: "
                                  "update_auth({'token_type': 'Bearer', 'access_token': <token>}); a browser logs "
                                  f"in on the spectgan page {PAGE_PATH})")
    if not is_token(given, expected):
        raise AuthenticationError("the API token sent is not this server's token (a 'Bearer' token was sent and "
                                  "refused); ask the server's administrator for the token")


def session_of(headers: dict) -> Optional[str]:
    """The browser session id a request's cookies carry, if any."""
    return cookie_parser(headers.get(b"cookie", b"").decode("latin-1")).get(SESSION_COOKIE) or None


def browser_sessions() -> SessionStore:
    return app_instance().browser_sessions


def check_access(path: str, headers: dict, expected: Optional[str]) -> None:
    """AuthenticationError unless the server has no token, the path is public (``PUBLIC_PATHS``), or the request
    carries the token (``check_token``) or, without an Authorization header, an open browser session."""
    if expected is None or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return
    session = session_of(headers)
    if b"authorization" not in headers and session is not None:
        if browser_sessions().is_open(session):
            return
        raise AuthenticationError(f"this browser's session has expired or was ended: log in again on the spectgan "
                                  f"page {PAGE_PATH}")
    check_token(headers, expected)


def to_login(scope) -> Optional[RedirectResponse]:
    """A browser opening OHIF without a session: sent to the page's login, which returns it there (``next``)."""
    accepts_html = b"text/html" in dict(scope["headers"]).get(b"accept", b"")
    if scope["method"] != "GET" or not accepts_html or not scope["path"].startswith(OHIF_PREFIX):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return RedirectResponse(f"{PAGE_PATH}?next={quote(target, safe='')}", status_code=303)


def without_credentials(scope) -> dict:
    """The scope of a request to MONAI Label's DICOMweb proxy without its Authorization and Cookie headers: the proxy
    forwards a request's headers to the PACS, and neither the token nor a session goes beyond this server."""
    if not scope["path"].startswith(PROXY_PREFIX):
        return scope
    return {**scope, "headers": [(name, value) for name, value in scope["headers"]
                                 if name.lower() not in CREDENTIAL_HEADERS]}


def check_datastore_request(method: str, path: str, query: bytes) -> None:
    """Every id named by a datastore write (PUT, POST, DELETE under /datastore) is a plain id (``check_id``)."""
    if method in ("GET", "HEAD", "OPTIONS") or not path.startswith(f"{API}/datastore"):
        return
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key in DATASTORE_ID_PARAMS:
            check_id(value, f"datastore {key}")


class EdgeGuard:
    """ASGI middleware in front of every route: token or browser session, datastore ids and declared body size,
    before any work.

    A pure ASGI class rather than Starlette's BaseHTTPMiddleware, which would copy every answer through a stream.
    CORS preflight requests (OPTIONS) pass without a token, as browsers send none with them.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        conf = settings.MONAI_LABEL_APP_CONF
        headers = dict(scope["headers"])
        try:
            if scope["method"] != "OPTIONS":
                check_access(scope["path"], headers, api_token_from(conf))
            check_datastore_request(scope["method"], scope["path"], scope.get("query_string", b""))
            length = headers.get(b"content-length", b"0").decode("latin-1")
            if length.isdecimal():
                check_size(max(0, int(length) - MULTIPART_ALLOWANCE_BYTES), max_upload_bytes_from(conf))
        except SpectganError as error:
            redirect = to_login(scope) if isinstance(error, AuthenticationError) else None
            return await (redirect or error_response(error))(scope, receive, send)
        return await self.app(without_credentials(scope), receive, send)


def _checked_upload(file: UploadFile) -> None:
    check_upload(file.filename or "", file.file, max_upload_bytes_from(settings.MONAI_LABEL_APP_CONF))


def _saved_upload(file: UploadFile, background_tasks: BackgroundTasks) -> Path:
    """A checked upload saved into this process's private folder (removed after the answer); returns its path."""
    _checked_upload(file)
    kind_suffix = "".join(Path(file.filename or "").suffixes[-2:]).lower() or ".nii.gz"
    handle, path = tempfile.mkstemp(prefix="upload_", suffix=kind_suffix, dir=private_results_dir())
    with open(handle, "wb") as saved:
        shutil.copyfileobj(file.file, saved)
    background_tasks.add_task(Path(path).unlink, missing_ok=True)
    return Path(path)


def _file_stem(filename: str) -> str:
    name = Path(filename.replace("\\", "/")).name
    return name[:len(name) - len("".join(Path(name).suffixes))]


# ---------------------------------------------------------------------------------------------------- routes

def _inference(background_tasks: BackgroundTasks, model: str, image: str, session_id: str, params: str,
               file: Optional[UploadFile], output: Optional[ResultType]):
    """Check everything at once (request, then reference image), run the infer task with the typed request, answer
    as MONAI Label does."""
    instance = app_instance()
    request = instance.generation_request(model, params, output.value if output else None)
    uploaded = _saved_upload(file, background_tasks) if file else None
    reference = instance.reference_image(image, session_id, uploaded)
    result = instance.infer({"model": model, "image": reference, GENERATION_REQUEST: request})
    return send_response(instance.datastore(), result, output, background_tasks)


@router.post("/infer/{model}", summary=f"{RBAC_USER}Run Inference for supported model")
async def infer(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    return await run_in_threadpool(_inference, background_tasks, model, image, session_id, params, file, output)


def _checked_add_image(background_tasks, image, params, file, username):
    image_id = check_id(image or _file_stem(file.filename or ""))
    _checked_upload(file)
    return add_image(background_tasks, image_id, params, file, username)


@router.put("/datastore/", summary=f"{RBAC_ANNOTATOR}Upload new Image", include_in_schema=False, deprecated=True)
@router.put("/datastore/image", summary=f"{RBAC_ANNOTATOR}Upload new Image (NIfTI or DICOM, a plain id)")
async def upload_image(
    background_tasks: BackgroundTasks,
    image: Optional[str] = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    return await run_in_threadpool(_checked_add_image, background_tasks, image, params, file, user.username)


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


@router.get("/models/{model}/versions", summary=f"{RBAC_USER}A model's versions with their quality gate verdicts")
async def model_versions(model: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    versions = await run_in_threadpool(app_instance().model_versions, model)
    return {"model": model, "versions": [version.to_dict() for version in versions]}


@router.post("/models/{model}/rollback", summary=f"{RBAC_ADMIN}Serve a published version of a model again")
async def model_rollback(model: str, request: Request,
                         user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))):
    body = await json_body(request, "rollback", '{"version": "1.0.1"}')
    if not isinstance(body, dict) or not isinstance(body.get("version"), str):
        raise MalformedRequestError('send {"version": "<a published version>"} (GET .../versions lists them)')
    return (await run_in_threadpool(app_instance().rollback, model, body["version"])).to_dict()


@router.get("/models/{model}/versions/{version}/report/", response_class=HTMLResponse,
            summary=f"{RBAC_USER}A version's evaluation report (the quality gate's, else its fidelity report)")
async def model_report(model: str, version: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    report = await run_in_threadpool(app_instance().model_report, model, version)
    return HTMLResponse(public_message(report), headers=PAGE_HEADERS)


@router.get("/models/{model}/versions/{version}/report/figures/{name}", summary=f"{RBAC_USER}A figure of that report")
async def model_report_figure(model: str, version: str, name: str,
                              user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    figure = await run_in_threadpool(app_instance().model_report_figure, model, version, name)
    return FileResponse(figure, media_type="image/png", headers=PAGE_HEADERS)


# ------------------------------------------------------------------------------------------------- the page

def _page_generation(model: str, image: str, params: str) -> dict:
    """One slice for the page: the checks and infer task of ``/infer``; answers the id under which the result is
    kept for export, the JSON result and the slice view."""
    instance = app_instance()
    request = instance.generation_request(model, params, None)
    if request.output_space != "slice":
        raise InvalidRequestError("the page shows one-slice results: leave output_space empty or send slice")
    result = instance.infer({"model": model, "image": instance.reference_image(image, "", None),
                             GENERATION_REQUEST: request})
    try:
        image_result = read_image(result["file"])
    finally:
        Path(result["file"]).unlink(missing_ok=True)
    kept = instance.page_results.add(replace(GenerationResult.from_json(result["params"], image_result),
                                             reference=image))  # the study named by its id
    return {"id": kept.result_id, "result": kept.to_json(), "view": slice_view(kept)}


def _page_export(body) -> dict:
    ids, run = parse_export_request(body)
    instance = app_instance()
    return instance.page_export.export(instance.page_results.get(ids), run)


@page_router.get("/", include_in_schema=False)
async def page(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@page_router.get("/api/studies", summary=f"{RBAC_USER}The datastore's reference studies (ids)")
async def page_studies(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    return {"studies": await run_in_threadpool(app_instance().study_ids)}


@page_router.get("/api/config", summary=f"{RBAC_USER}What the page may offer (export, OHIF)")
async def page_config(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    return describe_page(app_instance().page_export)


@page_router.get("/api/training", summary=f"{RBAC_USER}The latest train task's state, in short")
async def page_training(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    state = training_state(AsyncTask.status("train")[0])
    return replace(state, latest=public_message(state.latest)).to_dict()


@page_router.post("/api/generate/{model}", summary=f"{RBAC_USER}One slice as the spectgan page draws it")
async def page_generate(model: str, image: str = "", params: str = Form("{}"),
                        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    return await run_in_threadpool(_page_generation, model, image, params)


async def json_body(request: Request, what: str, example: str):
    """The JSON body of a page request; MalformedRequestError showing ``example`` otherwise. JSON only: no form of
    another site can send it (scripts of other sites: MONAI Label's CORS setting)."""
    try:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ValueError
        return await request.json()
    except ValueError:
        raise MalformedRequestError(f"the {what} request is not JSON; send {example} with "
                                    "Content-Type: application/json") from None


@page_router.post("/api/export", summary=f"{RBAC_USER}Export results of the page to the server's PACS")
async def export_from_page(request: Request, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    body = await json_body(request, "export", '{"results": [result ids]}')
    return await run_in_threadpool(_page_export, body)


def _session_answer(required: bool, logged_in: bool, **extra) -> JSONResponse:
    return JSONResponse({"token_required": required, "logged_in": logged_in, **extra},
                        headers={"Cache-Control": "no-store"})


@page_router.get("/api/session", summary="Whether this server wants a login (a token) and whether this browser has one")
async def page_session(request: Request):
    required = api_token_from(settings.MONAI_LABEL_APP_CONF) is not None
    return _session_answer(required, not required or browser_sessions().is_open(request.cookies.get(SESSION_COOKIE)))


@page_router.post("/api/login", summary="A browser logs in with the server's API token (JSON body {\"token\": ...}): "
                                        "a session cookie")
async def page_login(request: Request):
    body = await json_body(request, "login", '{"token": "<the server\'s API token>"}')
    given = body.get("token") if isinstance(body, dict) else None
    expected = api_token_from(settings.MONAI_LABEL_APP_CONF)
    if expected is None:
        return _session_answer(False, True)
    if not isinstance(given, str) or not given.strip():
        raise InvalidRequestError('the login needs the server\'s API token: send {"token": "<token>"}')
    if not is_token(given, expected):
        return error_response(AuthenticationError("that is not this server's API token: check it, or ask the "
                                                  "server's administrator for it"))
    session = browser_sessions().open()
    answer = _session_answer(True, True, expires_in_s=session.lifetime_s)
    answer.set_cookie(SESSION_COOKIE, session.id, max_age=session.lifetime_s, path="/", httponly=True,
                      samesite="strict", secure=request.url.scheme == "https")
    return answer


@page_router.post("/api/logout", summary="A browser ends its session")
async def page_logout(request: Request):
    browser_sessions().end(request.cookies.get(SESSION_COOKIE))
    answer = _session_answer(api_token_from(settings.MONAI_LABEL_APP_CONF) is not None, False)
    answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                         secure=request.url.scheme == "https")
    return answer


def _ahead_of_stock_routes(router: APIRouter) -> None:
    """Add the router's routes in front of MONAI Label's, so that they answer their paths first."""
    app.include_router(router, prefix=API)
    added = len(router.routes)
    app.router.routes[:] = app.router.routes[-added:] + app.router.routes[:-added]


use_server_threads()
_ahead_of_stock_routes(router)
app.include_router(page_router)
app.mount("/spectgan/static", StaticFiles(directory=PAGE_DIR), name="spectgan-page")
app.add_middleware(EdgeGuard)
app.add_exception_handler(SpectganError, _error_handler)
app.add_exception_handler(MONAILabelException, _error_handler)
