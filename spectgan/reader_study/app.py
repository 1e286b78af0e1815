"""``spectgan reader-study serve``: the reading page (FastAPI), one secret link per reader, offline.

Routes (TOKEN is a reader's secret; any other value is a 403):

- ``GET /read/TOKEN``: the reading page (static HTML/JS/CSS from this package; no CDN);
- ``GET /api/TOKEN/state``: the reader's progress and the case on screen (never the key, never others' answers);
- ``GET /api/TOKEN/image/ID.png``: a case image, only for ids in this reader's order or the practice block;
- ``POST /api/TOKEN/answer``: one answer (JSON); refused with 403 unless the request is same-origin and carries the
  reader's CSRF token in the ``X-CSRF-Token`` header, matching the SameSite=Strict cookie set with the page.

Answers are appended to the reader's sheet, which is rewritten atomically, so a reload or a restart resumes at the
first unanswered case and a crash loses at most the case on screen.
"""
from __future__ import annotations

import hmac
import signal
import socket
import threading
from dataclasses import dataclass
from hashlib import sha256
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from spectgan.errors import SpectganError
from spectgan.reader_study.study import (IMAGE_DIRS, SECRET_FILE, Answer, Reader, parse_answer, read_info,
                                         read_key, read_readers, read_sheet, write_sheet)

STATIC_DIR = Path(str(files("spectgan.reader_study") / "static"))
CSRF_HEADER = "X-CSRF-Token"
CSRF_COOKIE = "reader_csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
ALLOWED_FETCH_SITES = {"same-origin", "none"}


@dataclass(frozen=True)
class Session:
    """What the server knows about one reader: their link, their case order, the practice order and their CSRF token
    (an HMAC of the link's token with the study's secret, so it stays valid across server restarts)."""

    reader: Reader
    order: list[str]
    practice: list[str]
    csrf: str


class ReaderStudy:
    """The study folder loaded once; answer sheets are read and written per request, one reader at a time."""

    def __init__(self, study_dir: Path):
        self.study_dir = Path(study_dir)
        info = read_info(self.study_dir)
        self.practice_truth = {entry.id: entry.truth for entry in read_key(self.study_dir).values()
                               if entry.block == "practice"}
        secret = (self.study_dir / SECRET_FILE).read_bytes()
        self.sessions = {reader.token: Session(reader, info["orders"][reader.reader], info["practice"],
                                               hmac.new(secret, reader.token.encode(), sha256).hexdigest())
                         for reader in read_readers(self.study_dir)}
        self.locks = {token: threading.Lock() for token in self.sessions}

    def session(self, token: str) -> Session:
        session = self.sessions.get(token)
        if session is None:
            raise HTTPException(403, "unknown reader link: use the link you were given")
        return session

    def state(self, session: Session) -> dict:
        """The reader's progress: ``phase`` (practice | study | done), position, totals and the case on screen."""
        sheet = read_sheet(self.study_dir, session.reader.reader)
        done_practice, done_study = len(sheet["practice"]), len(sheet["study"])
        if done_practice < len(session.practice):
            phase, index, total, case = "practice", done_practice, len(session.practice), session.practice[done_practice]
        elif done_study < len(session.order):
            phase, index, total, case = "study", done_study, len(session.order), session.order[done_study]
        else:
            phase, index, total, case = "done", len(session.order), len(session.order), None
        return {"reader": session.reader.reader, "phase": phase, "index": index, "total": total, "case": case,
                "practice_total": len(session.practice), "csrf": session.csrf}

    def answer(self, session: Session, answer: Answer) -> dict:
        """Record ``answer`` for the case on screen; a repeated or stale answer (another tab) is a 409."""
        with self.locks[session.reader.token]:
            state = self.state(session)
            if answer.case != state["case"]:
                raise HTTPException(409, f"case {answer.case} is not the case on screen ({state['case']}); reload")
            sheet = read_sheet(self.study_dir, session.reader.reader)
            sheet[state["phase"]].append(answer)
            write_sheet(self.study_dir, session.reader.reader, sheet)
        feedback = ({"truth": self.practice_truth[answer.case], "correct": self.practice_truth[answer.case] ==
                     answer.answer} if state["phase"] == "practice" else None)
        return {"feedback": feedback, "state": self.state(session)}

    def image(self, session: Session, case: str) -> bytes:
        """A case's PNG bytes, only for the cases of this reader's order and the practice block."""
        block = "practice" if case in session.practice else "study" if case in session.order else None
        if block is None:
            raise HTTPException(404, "no such case for this reader")
        return (self.study_dir / IMAGE_DIRS[block] / f"{case}.png").read_bytes()


def check_same_origin(request: Request, session: Session) -> None:
    """Refuse cross-site requests (403): a foreign Origin or Sec-Fetch-Site, or a missing or wrong CSRF token."""
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != own:
        raise HTTPException(403, f"cross-origin request refused (Origin {origin})")
    if request.headers.get("sec-fetch-site", "same-origin") not in ALLOWED_FETCH_SITES:
        raise HTTPException(403, "cross-site request refused")
    expected = session.csrf.encode()
    header, cookie = request.headers.get(CSRF_HEADER, ""), request.cookies.get(CSRF_COOKIE, "")
    if not (hmac.compare_digest(header.encode(), expected) and hmac.compare_digest(cookie.encode(), expected)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page from your link")


def create_app(study_dir: Path) -> FastAPI:
    """The reading app for one study folder."""
    study = ReaderStudy(study_dir)
    app = FastAPI(title="spectgan reader study", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    page = (STATIC_DIR / "reader.html").read_text()

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return "<!doctype html><title>Reader study</title><p>Open the personal link you were given.</p>"

    @app.get("/read/{token}", response_class=HTMLResponse)
    def reading_page(token: str) -> HTMLResponse:
        session = study.session(token)
        response = HTMLResponse(page)
        response.set_cookie(CSRF_COOKIE, session.csrf, path=f"/api/{token}", httponly=True, samesite="strict")
        return response

    @app.get("/api/{token}/state")
    def state(token: str) -> dict:
        return study.state(study.session(token))

    @app.get("/api/{token}/image/{case}.png")
    def image(token: str, case: str) -> Response:
        return Response(study.image(study.session(token), case), media_type="image/png")

    @app.post("/api/{token}/answer")
    async def answer(token: str, request: Request) -> JSONResponse:
        session = study.session(token)
        check_same_origin(request, session)
        try:
            parsed = parse_answer(await request.json())
        except ValueError as error:  # includes a body that is not JSON
            raise HTTPException(422, str(error)) from None
        return JSONResponse(await run_in_threadpool(study.answer, session, parsed))

    return app


def serve(study_dir: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Bind ``host:port`` (port 0: a free one), print the URL and serve until interrupted (SIGINT / SIGTERM)."""
    import uvicorn

    app = create_app(study_dir)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)  # connections wait in the queue while uvicorn starts
    except OSError as error:
        raise SpectganError(f"cannot listen on {host}:{port}: {error.strerror}; choose another --port") from None
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"reader study {study_dir} at http://{shown}:{bound}/ (reader links: {study_dir}/readers.csv)", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found: make that a clean exit
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


def _exit_cleanly(signum: int, frame) -> None:
    print("reader study server stopped", flush=True)
    raise SystemExit(0)
