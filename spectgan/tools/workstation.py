"""``spectgan workstation``: the embedded default a new user starts with, a browser workstation on 127.0.0.1.

It starts a local Orthanc (``spectgan.export.orthanc.LocalOrthanc``) that keeps its storage in the data folder
(default ``workstation_data/``), loads the sample reference studies into it as NM DICOM on the first run (a marker
file records that they were loaded), starts the MONAI Label app with that Orthanc as its datastore
(``spectgan.tools.server.ServerProcess``, ``--studies <Orthanc>/dicom-web``) and prints three URLs, one per line::

    page: http://127.0.0.1:PORT/spectgan/
    ohif: http://127.0.0.1:PORT/ohif/
    orthanc: http://127.0.0.1:OPORT/

It runs until Ctrl-C (SIGINT) or SIGTERM, then stops the server's process group and Orthanc, and exits 0. Orthanc asks
for a login (user ``spectgan``, the password in ``<data>/orthanc-password``, made on the first run); the server
reaches Orthanc with it, and OHIF through the server's proxy. Other messages go to stderr; the server's log is
``<data>/server.log``, Orthanc's ``<data>/orthanc/orthanc.log``. With $SPECTGAN_API_TOKEN set, the server wants that
token: the page asks for it once and logs the browser in for the page and OHIF.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from spectgan.errors import SpectganError
from spectgan.export.dicom import REFERENCE_FRAMES, SyntheticRun, encode_reference, write_series
from spectgan.export.orthanc import LocalOrthanc
from spectgan.export.pacs import export_folder
from spectgan.geometry.roi import read_image
from spectgan.serving.settings import SAMPLE_STUDIES_DIR, api_token_from, models_dir_from
from spectgan.tools.server import ServerProcess

DEFAULT_PORT = 8000
DEFAULT_DATA_DIR = Path("workstation_data")
HOST = "127.0.0.1"
ORTHANC_USER = "spectgan"
PASSWORD_FILE = "orthanc-password"
LOADED_MARKER = "sample-studies-loaded.json"  # in the data folder: the sample studies' series, once loaded
# The sample studies' run: a fixed id, so that they get the same UIDs whenever they are written.
SAMPLE_RUN_ID = "20260101T000000-000000"
DICOMWEB_CACHE_EXPIRY_S = 30  # how long the server reuses its listing of the PACS's series
CHILD_POLL_S = 1.0


def sample_study_names() -> list[str]:
    """The ids of the sample reference studies (``sample_data/studies/*.nii.gz``)."""
    return sorted(path.name[:-len(".nii.gz")] for path in SAMPLE_STUDIES_DIR.glob("*.nii.gz"))


def write_sample_studies(folder: Path, frames: tuple[str, ...] = ("multi",)) -> dict[str, dict[str, str]]:
    """Write each sample reference study as NM series into ``folder/<id>/<frames>/`` (``encode_reference``: one
    multi-frame instance and/or one instance per slice); returns {study id: {frames: SeriesInstanceUID}}."""
    run = SyntheticRun(SAMPLE_RUN_ID)
    series: dict[str, dict[str, str]] = {}
    for name in sample_study_names():
        volume = read_image(SAMPLE_STUDIES_DIR / f"{name}.nii.gz")
        for kind in frames:
            datasets = encode_reference(volume, run.study(name), name, kind)
            target = folder / name / kind
            target.mkdir(parents=True, exist_ok=True)
            write_series(datasets, target)
            series.setdefault(name, {})[kind] = str(datasets[0].SeriesInstanceUID)
    return series


def load_sample_studies(folder: Path, dicomweb_url: str,
                        frames: tuple[str, ...] = ("multi",)) -> dict[str, dict[str, str]]:
    """Write the sample studies as NM DICOM into ``folder`` and store them in the PACS at ``dicomweb_url``
    (STOW-RS with the credentials of ``spectgan.export.pacs``'s environment; returns once the PACS has confirmed
    every instance); the series as ``write_sample_studies`` returns them."""
    unknown = sorted(set(frames) - set(REFERENCE_FRAMES))
    if unknown:
        raise SpectganError(f"frames {', '.join(unknown)} unknown; allowed: {', '.join(REFERENCE_FRAMES)}")
    series = write_sample_studies(folder, frames)
    export_folder(folder, dicomweb_url)
    return series


def pacs_server_environment(orthanc: LocalOrthanc, cache_dir: Path) -> dict[str, str]:
    """The environment that gives the app ``orthanc`` as its datastore (MONAI Label's DICOMweb settings): its
    login, the NM search filter and the cache folder of fetched series."""
    return {"MONAI_LABEL_DICOMWEB_USERNAME": orthanc.username, "MONAI_LABEL_DICOMWEB_PASSWORD": orthanc.password,
            "MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "NM"}),
            "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(cache_dir),
            "MONAI_LABEL_DICOMWEB_CACHE_EXPIRY": str(DICOMWEB_CACHE_EXPIRY_S)}


def check_port_free(port: int) -> None:
    """SpectganError naming ``port`` when something on this machine already listens on it (127.0.0.1). Probed as
    the server binds it (SO_REUSEADDR): connections of a stopped server still closing do not count."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise SpectganError(f"port {port} of {HOST} is taken by another program: stop it, or start the "
                                f"workstation on another port with --port") from None


def stored_password(data_dir: Path) -> str:
    """Orthanc's password: read from ``<data>/orthanc-password``, made (readable by the owner only) on first use."""
    path = data_dir / PASSWORD_FILE
    if not path.exists():
        path.write_text(secrets.token_urlsafe(16))
        path.chmod(0o600)
    return path.read_text().strip()


def urls(port: int, orthanc: LocalOrthanc) -> list[str]:
    """The three lines the workstation prints."""
    return [f"page: http://{HOST}:{port}/spectgan/", f"ohif: http://{HOST}:{port}/ohif/",
            f"orthanc: {orthanc.rest_url}/"]


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_workstation(port: int, data_dir: Path, models_dir: Path | None = None) -> int:
    """Start Orthanc and the server, print the URLs, wait for SIGINT / SIGTERM, stop both; 0 after a stop request.
    SpectganError when the port is taken or a part stops by itself."""
    check_port_free(port)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # Orthanc's configuration holds its password
    previous = {number: signal.signal(number, _interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    stack = ExitStack()
    try:
        orthanc = stack.enter_context(LocalOrthanc(storage_dir=data_dir / "orthanc", username=ORTHANC_USER,
                                                   password=stored_password(data_dir)))
        os.environ.update(orthanc.client_environment())  # spectgan.export.pacs's login, the server's too
        marker = data_dir / LOADED_MARKER
        if not marker.exists():
            series = load_sample_studies(data_dir / "sample_studies", orthanc.dicomweb_url)
            marker.write_text(json.dumps(series, indent=2))
            print(f"loaded {len(series)} sample reference studies into Orthanc as NM DICOM", file=sys.stderr)
        server = stack.enter_context(ServerProcess(
            orthanc.dicomweb_url, models_dir or models_dir_from(), data_dir / "server.log", port=port,
            environment=pacs_server_environment(orthanc, data_dir / "cache"), token=api_token_from()))
        print("\n".join(urls(port, orthanc)), flush=True)
        print(f"Orthanc login: user {orthanc.username}, password in {data_dir / PASSWORD_FILE}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(CHILD_POLL_S)
            if server.process.poll() is not None or not orthanc.running:
                raise SpectganError(f"{'the server' if orthanc.running else 'Orthanc'} stopped by itself; see "
                                    f"{data_dir / 'server.log'} and {orthanc.log_path}")
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def add_workstation_command(subparsers) -> None:
    parser = subparsers.add_parser("workstation", help="start the browser workstation: a local Orthanc with the "
                                                       "sample studies and the spectgan server (Ctrl-C stops)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the server's port (default %(default)s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder of Orthanc's storage, the server's cache and logs (default %(default)s)")
    parser.add_argument("--models-dir", type=Path, help="folder of the model bundles (default: models/, or "
                                                        "$SPECTGAN_MODELS_DIR)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    return run_workstation(args.port, args.data.resolve(), args.models_dir.resolve() if args.models_dir else None)
