"""A real ``monailabel start_server`` process of the app, for tests, the demo and the server benchmark (never
imported by the server itself)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import requests

from spectgan.errors import SpectganError
from spectgan.serving.settings import API_TOKEN_ENV, COHORT_ENV, MODELS_DIR_ENV, REPOSITORY_ROOT, is_dicomweb

PORT_ATTEMPTS = 3  # a port found free may be taken by another process before the server binds it: try another
PORT_TAKEN = "address already in use"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it itself; ``ServerProcess`` retries when it was taken)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def server_command(studies: Path | str, port: int, models: str = "all", host: str = "127.0.0.1",
                   tls: tuple[Path, Path] | None = None, conf: Mapping[str, str] | None = None) -> list[str]:
    """The documented start command of the app (run from the repository root); ``studies``: a folder, or a PACS's
    DICOMweb URL; ``tls``: (key file, certificate file) to serve HTTPS; ``conf``: more app conf settings
    (``spectgan.serving.settings``)."""
    monailabel = Path(sys.executable).with_name("monailabel")
    command = [str(monailabel), "start_server", "--app", "monai_app", "--studies", str(studies), "--conf", "models",
               models, "--uvicorn_app", "monai_app.asgi:app", "--host", host, "--port", str(port)]
    for key, value in (conf or {}).items():
        command += ["--conf", key, str(value)]
    if tls:
        command += ["--ssl_keyfile", str(tls[0]), "--ssl_certfile", str(tls[1])]
    return command


class ServerProcess:
    """A real ``monailabel start_server`` process of the app on 127.0.0.1, in its own process group.

    A context manager: entering starts it and waits until ``/info/`` answers; leaving stops the whole process group
    (the server and any training task it started). Its output goes to ``log_path``. ``token``: the server's API token
    (given to it through its environment, never its command line); ``tls``: (key file, certificate file) to serve
    HTTPS, with ``verify`` what requests trusts (the certificate file); ``conf``: more app conf settings;
    ``environment``: more environment variables.
    """

    def __init__(self, studies: Path | str, models_dir: Path, log_path: Path, models: str = "all",
                 cohort_dir: Path | None = None, start_timeout_s: float = 240.0, token: str | None = None,
                 tls: tuple[Path, Path] | None = None, conf: Mapping[str, str] | None = None,
                 environment: Mapping[str, str] | None = None, port: int | None = None):
        self.studies = str(studies) if is_dicomweb(str(studies)) else Path(studies)  # a folder or a DICOMweb URL
        self.models, self.tls, self.conf, self.fixed_port = models, tls, dict(conf or {}), port
        self.scheme = "https" if tls else "http"
        self.verify: str | bool = str(tls[1]) if tls else True
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        inherited = {key: value for key, value in os.environ.items() if key != API_TOKEN_ENV}
        self.environment = {**inherited, MODELS_DIR_ENV: str(models_dir), "MONAILABEL_PYEXE": sys.executable,
                            **({COHORT_ENV: str(cohort_dir)} if cohort_dir else {}),
                            **({API_TOKEN_ENV: token} if token else {}), **(environment or {})}
        self.log_path, self.start_timeout_s = Path(log_path), start_timeout_s
        self.process: subprocess.Popen | None = None
        self.port, self.url = 0, ""

    def __enter__(self) -> "ServerProcess":
        attempts = 0
        while True:
            attempts += 1
            self.port = self.fixed_port or free_port()
            self.url = f"{self.scheme}://127.0.0.1:{self.port}"
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start()
                return self
            except BaseException as error:
                self.stop()
                taken = isinstance(error, SpectganError) and PORT_TAKEN in self.log_path.read_text(
                    errors="replace")[log_start:].lower()
                if taken and self.fixed_port:
                    raise SpectganError(f"port {self.port} of 127.0.0.1 is taken by another program: stop it or "
                                        "choose another port") from None
                if not taken or attempts >= PORT_ATTEMPTS:
                    raise

    def _start(self) -> None:
        """Start the process on ``self.port`` and wait for ``/info/``; SpectganError when it exits or stays silent."""
        command = server_command(self.studies, self.port, self.models, tls=self.tls, conf=self.conf)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=self.environment, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SpectganError(f"the server exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", headers=self.headers, verify=self.verify,
                                timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise SpectganError(f"the server did not answer within {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def generation_worker_pids(self) -> set[int]:
        """Process ids of the server's generation workers (spawned processes in its process group; Linux /proc)."""
        pids = set()
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdecimal() and os.getpgid(int(entry.name)) == self.process.pid and \
                        b"spawn_main" in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except (OSError, ProcessLookupError):
                pass
        return pids

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Terminate the process group, then kill whatever is left of it (a training task the server started)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None
