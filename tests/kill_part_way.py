"""Kill a spectgan command with SIGKILL (its whole process group, workers included) part way through its work: the
crash a resumable command must survive."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

POLL_S = 0.01


def kill_when(arguments: list[str], ready: Callable[[], bool], timeout_s: float = 600) -> None:
    """Run ``python -m spectgan.cli ARGUMENTS`` (this process's environment) and SIGKILL it as soon as ``ready()``
    is true; fails the test when the command ends or ``timeout_s`` passes before that."""
    process = subprocess.Popen([sys.executable, "-m", "spectgan.cli", *arguments], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            assert process.poll() is None, f"spectgan {arguments[0]} ended (code {process.returncode}) before the kill"
            assert time.monotonic() < deadline, f"spectgan {arguments[0]} did not get far enough in {timeout_s} s"
            time.sleep(POLL_S)
        assert process.poll() is None, f"spectgan {arguments[0]} finished before it could be killed"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def kill_after_first_chunk(arguments: list[str], chunks_dir: Path, timeout_s: float = 600) -> None:
    """``kill_when`` a ``chunk_*.json`` appears in ``chunks_dir``."""
    kill_when(arguments, lambda: any(Path(chunks_dir).glob("chunk_*.json")), timeout_s)
