"""``spectgan workstation`` as a user runs it: a real subprocess (Orthanc, the sample studies, the server with the
shipped bundles), its three URLs, the studies listed as NM by the server, Ctrl-C (SIGINT) stopping every process it
started and freeing the ports, a second start on the same data that loads nothing again (stopped by SIGTERM), and a
taken port."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from spectgan.serving.settings import REPOSITORY_ROOT
from spectgan.tools.server import free_port
from spectgan.tools.workstation import LOADED_MARKER, PASSWORD_FILE, sample_study_names

LINE_WAIT_S = 400.0  # the first start writes the studies and starts the server on a shared 2-core machine
STOP_WAIT_S = 60.0
URL_KEYS = ("page", "ohif", "orthanc")


class Workstation:
    """``python -m spectgan.cli workstation`` in its own session; stdout read line by line, stderr in a file."""

    def __init__(self, port: int, data: Path, log: Path):
        self.log = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spectgan.cli", "workstation", "--port", str(port), "--data", str(data)],
                cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def urls(self) -> dict[str, str]:
        """The three printed lines as {key: URL}; fails when the command ends or prints something else first."""
        urls = {}
        for key in URL_KEYS:
            try:
                line = self.lines.get(timeout=LINE_WAIT_S)
            except queue.Empty:
                line = None
            assert line is not None, f"the workstation printed no '{key}:' line:\n{self.log.read_text()[-3000:]}"
            printed_key, _, url = line.partition(": ")
            assert printed_key == key and url.startswith("http://127.0.0.1:"), line
            urls[key] = url
        return urls

    def descendants(self) -> set[int]:
        """The ids of every process started below the workstation (Linux /proc)."""
        parents = {}
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdecimal():
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
        found, frontier = set(), {self.process.pid}
        while frontier:
            frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found

    def interrupt(self, number: int = signal.SIGINT) -> int:
        """Ctrl-C (SIGINT), or another signal, to the workstation; its exit code."""
        self.process.send_signal(number)
        return self.process.wait(timeout=STOP_WAIT_S)

    def kill(self) -> None:
        """After a failed test: kill the workstation and everything it started."""
        if self.process.poll() is None:
            for pid in self.descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def _port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections still closing, in TIME_WAIT, do not count: SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _orthanc_series(url: str, data: Path) -> list[str]:
    login = ("spectgan", (data / PASSWORD_FILE).read_text().strip())
    return requests.get(f"{url}series", auth=login, timeout=30).json()


def test_the_workstation_serves_the_sample_studies_and_stops_cleanly_on_ctrl_c(tmp_path):
    data, port = tmp_path / "data", free_port()
    workstation = Workstation(port, data, tmp_path / "workstation.log")
    try:
        urls = workstation.urls()
        server = f"http://127.0.0.1:{port}"
        assert urls == {"page": f"{server}/spectgan/", "ohif": f"{server}/ohif/", "orthanc": urls["orthanc"]}
        assert requests.get(f"{server}/info/", timeout=60).status_code == 200
        ohif = requests.get(urls["ohif"], timeout=60)
        assert ohif.status_code == 200 and "text/html" in ohif.headers["content-type"] and "<html" in ohif.text.lower()
        login = ("spectgan", (data / PASSWORD_FILE).read_text().strip())
        assert requests.get(f"{urls['orthanc']}system", auth=login, timeout=30).status_code == 200
        assert requests.get(f"{urls['orthanc']}system", timeout=30).status_code == 401  # Orthanc asks for a login
        listed = requests.get(f"{server}/datastore/?output=all", timeout=60).json()["objects"]
        described = sorted(entry["image"]["info"]["SeriesDescription"] for entry in listed.values())
        assert described == [f"SYNTHETIC reference {name}" for name in sample_study_names()]
        assert {entry["image"]["info"]["Modality"] for entry in listed.values()} == {"NM"}
        assert "loaded 6 sample reference studies" in workstation.log.read_text()
        series = sorted(_orthanc_series(urls["orthanc"], data))
        started = workstation.descendants()
        assert len(started) >= 2  # Orthanc, the server (and its generation workers)
        assert workstation.interrupt() == 0
        assert not [pid for pid in started if _alive(pid)]
        assert _port_is_free(port) and _port_is_free(_port_of(urls["orthanc"]))
        marker = (data / LOADED_MARKER).read_text()
        assert set(json.loads(marker)) == set(sample_study_names())

        again = Workstation(port, data, tmp_path / "again.log")
        try:
            second = again.urls()
            assert sorted(_orthanc_series(second["orthanc"], data)) == series  # the same storage, nothing added
            assert "loaded" not in again.log.read_text() and (data / LOADED_MARKER).read_text() == marker
            started = again.descendants()
            assert again.interrupt(signal.SIGTERM) == 0
            assert not [pid for pid in started if _alive(pid)]
        finally:
            again.kill()
    finally:
        workstation.kill()


def test_a_taken_port_is_a_clear_error_naming_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        workstation = Workstation(port, tmp_path / "data", tmp_path / "workstation.log")
        try:
            assert workstation.process.wait(timeout=STOP_WAIT_S) == 2
        finally:
            workstation.kill()
    message = workstation.log.read_text()
    assert f"port {port} of 127.0.0.1 is taken" in message and "--port" in message and "Traceback" not in message
    assert not (tmp_path / "data").exists()
