"""A local Orthanc PACS for the demo and the tests: started in the foreground with a generated configuration.

Free ports for DICOM and HTTP, authentication on (a generated user and password), the DICOMweb plugin, storage in
a folder of its own, a dictionary that names Synthetic Data (0008,001C). Any calling AE title may store and query
(C-STORE, C-FIND); the called AE title must be Orthanc's. ``LocalOrthanc`` is a context manager and can be stopped
(or killed) and started again on the same ports and storage, which is what a PACS outage looks like::

    with LocalOrthanc() as pacs:
        os.environ.update(pacs.client_environment())
        export_folder(folder, pacs.dicomweb_url)
"""
from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from spectgan.errors import SpectganError

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# Tags newer than Orthanc 1.10's dictionary, declared so that Orthanc names them (simplified-tags, its explorer):
# Synthetic Data (0008,001C), which every spectgan object carries.
DICTIONARY = {"0008,001c": ["CS", "SyntheticData", 1, 1]}


PORT_ATTEMPTS = 3
PORT_TAKEN = "privileged or already in use"  # what Orthanc logs when it cannot bind a port


class OrthancError(SpectganError):
    """Orthanc is not installed, does not start, or does not answer."""


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on localhost that nothing listens on right now."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class LocalOrthanc:
    """Orthanc on localhost with a generated configuration; ``start()``/``stop()`` or ``with``."""

    def __init__(self, storage_dir: str | Path | None = None, ae_title: str = "SPECTGAN_PACS",
                 username: str = "spectgan", password: str | None = None):
        self.ae_title = ae_title
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.dicom_port, self.http_port = free_ports(2)
        self._own_dir = None if storage_dir else Path(tempfile.mkdtemp(prefix="spectgan-orthanc-"))
        self.work_dir = Path(storage_dir) if storage_dir else self._own_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen | None = None

    @property
    def dicom_url(self) -> str:
        """The ``--pacs`` URL for C-STORE."""
        return f"dicom://{self.ae_title}@{HOST}:{self.dicom_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The ``--pacs`` URL for STOW-RS (and QIDO-RS / WADO-RS)."""
        return f"{self.rest_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    def client_environment(self) -> dict[str, str]:
        """The environment variables that give spectgan this server's credentials."""
        return {"SPECTGAN_PACS_USERNAME": self.username, "SPECTGAN_PACS_PASSWORD": self.password}

    def configuration(self) -> dict:
        storage = str(self.work_dir / "storage")
        return {
            "Name": "spectgan-orthanc", "StorageDirectory": storage, "IndexDirectory": storage,
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowEcho": True, "SaveJobs": False,
            "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "Dictionary": DICTIONARY,
        }

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "LocalOrthanc":
        """Start Orthanc and wait until its HTTP and DICOM ports answer. Orthanc binds its ports itself, so a port
        found free may be taken by another process first: then it starts again on other ports (at most
        ``PORT_ATTEMPTS`` times)."""
        if self.running:
            return self
        for path in (ORTHANC_BINARY, DICOMWEB_PLUGIN):
            if not Path(path).exists():
                raise OrthancError(f"{path} is missing: install the Debian packages orthanc and orthanc-dicomweb")
        for attempt in range(1, PORT_ATTEMPTS + 1):
            config_path = self.work_dir / "orthanc.json"
            config_path.write_text(json.dumps(self.configuration(), indent=2))
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen([ORTHANC_BINARY, str(config_path)], stdout=log,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                self._wait_until_ready()
                return self
            except OrthancError:
                taken = PORT_TAKEN in self.log_path.read_bytes()[log_start:].decode(errors="replace")
                if not taken or attempt == PORT_ATTEMPTS:
                    raise
                self.dicom_port, self.http_port = free_ports(2)
        return self

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after a grace period); the storage stays."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill Orthanc at once (SIGKILL), as a crash would; the storage stays."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def close(self) -> None:
        """Stop Orthanc and delete the folder it made for itself."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> "LocalOrthanc":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()

    def get(self, path: str) -> object:
        """GET a JSON resource of Orthanc's REST API, e.g. ``/instances``."""
        response = requests.get(f"{self.rest_url}{path}", auth=(self.username, self.password), timeout=10)
        response.raise_for_status()
        return response.json()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OrthancError(f"Orthanc exited with status {self._process.returncode} at start-up:\n"
                                   f"{self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{self._log_tail()}")

    def _answers(self) -> bool:
        try:
            self.get("/system")
            with socket.create_connection((HOST, self.dicom_port), timeout=1):
                return True
        except (requests.RequestException, OSError):
            return False

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
