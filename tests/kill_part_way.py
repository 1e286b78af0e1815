"""Kill a spectgan command with SIGKILL (its whole process group, workers included) once it has finished its first
chunk of work: the crash a resumable command must survive."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def kill_after_first_chunk(arguments: list[str], chunks_dir: Path, timeout_s: float = 600) -> None:
    """Run ``python -m spectgan.cli ARGUMENTS`` and SIGKILL it as soon as a ``chunk_*.json`` appears in
    ``chunks_dir``."""
    process = subprocess.Popen([sys.executable, "-m", "spectgan.cli", *arguments], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not list(Path(chunks_dir).glob("chunk_*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no chunk was written"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
