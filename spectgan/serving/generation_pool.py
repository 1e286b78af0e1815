"""Generation in worker processes, so that concurrent requests use every core of the server machine.

The MONAI Label server is one Python process whose request threads share one interpreter lock; a request is partly
Python (parameter checks, hemisphere statistics, the result's JSON), so requests served by threads scale poorly
(measured on 2 cores with the shipped 64 px model A: 4 clients got 1.6-1.75 x one client's throughput with threads,
1.95 x with two separate server processes). ``GenerationPool`` runs ``GenerationService.generate_file`` in
``workers`` spawned processes while the server process keeps MONAI Label's one app (datastore, train tasks,
sessions). Each worker has its own ``GenerationService``: bundles reloaded when a retrained version lands, and a
registration cache (a study is registered once per worker).

A request thread takes an idle worker and talks to it over that worker's own pipe: one message there, one back
(measured: 0.4 ms per request beyond the work itself; ``concurrent.futures.ProcessPoolExecutor``, whose manager and
feeder threads hand each call on, took 1.3 ms).
"""
from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Sequence

from spectgan.errors import SpectganError, UnavailableError
from spectgan.serving.request import GenerationRequest
from spectgan.serving.service import GenerationService, use_server_threads

STOP_TIMEOUT_S = 10.0


def _portable_error(error: Exception) -> Exception:
    """An exception that survives the trip to the server process: a spectgan error as it is (the server answers it
    as in its own threads: a domain error keeps its kind), anything else as a RuntimeError with the worker's
    traceback (an exception of another library may not unpickle)."""
    if isinstance(error, SpectganError):
        return error
    return RuntimeError(f"generation failed in a worker process:\n{''.join(traceback.format_exception(error))}")


def _serve(connection: Connection, models_dir: str, model_names: tuple[str, ...]) -> None:
    """A worker process: load the bundles, then answer (GenerationRequest, image path) with (True, (path, result))
    or (False, exception) until the server closes the pipe. The request arrives validated: nothing is parsed here."""
    use_server_threads()
    service = GenerationService(models_dir, model_names)
    for name in model_names:  # loaded now rather than by the first request (a missing one is that request's 503)
        try:
            service.synthesizer(name)
        except SpectganError:
            pass
    while True:
        try:
            request, image_path = connection.recv()
        except (EOFError, OSError):  # the server closed the pipe or went away
            return
        try:
            path, result = service.generate_file(request, image_path)
            reply = (True, (str(path), result))
        except Exception as error:  # every failure goes back to the request that caused it
            reply = (False, _portable_error(error))
        connection.send(reply)


class _Worker:
    """One worker process and the server's end of its pipe."""

    def __init__(self, models_dir: Path, model_names: tuple[str, ...]):
        self.connection, worker_end = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(worker_end, str(models_dir), model_names), name="spectgan-generation", daemon=True)
        self.process.start()
        worker_end.close()

    def stop(self) -> None:
        self.connection.close()  # the worker's recv ends: it returns
        self.process.join(STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class GenerationPool:
    """``generate_file`` of ``GenerationService``, run by ``workers`` worker processes (thread-safe).

    ``start`` starts the processes (the server calls it once it serves; a pool that was never started starts on its
    first request); each loads the bundles at once. A request waits for an idle worker. A worker that dies (killed,
    out of memory) fails its request with UnavailableError and is replaced for the next ones.
    """

    def __init__(self, models_dir: str | Path, model_names: Sequence[str], workers: int):
        if workers < 1:
            raise ValueError(f"a generation pool needs at least one worker process, got {workers}")
        self.models_dir, self.model_names, self.workers = Path(models_dir), tuple(model_names), workers
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (started ones)."""
        with self._lock:
            return [worker.process.pid for worker in self._all]

    def start(self) -> None:
        """Start the worker processes that do not run."""
        with self._lock:
            while len(self._all) < self.workers:
                worker = _Worker(self.models_dir, self.model_names)
                self._all.append(worker)
                self._idle.put(worker)

    def generate_file(self, request: GenerationRequest, image_path: str | Path) -> tuple[Path, dict]:
        """Like ``GenerationService.generate_file``, in a worker process (the request object crosses as it is)."""
        self.start()
        worker = self._idle.get()
        try:
            worker.connection.send((request, str(image_path)))
            succeeded, payload = worker.connection.recv()
        except (EOFError, OSError):
            with self._lock:
                self._all.remove(worker)
            worker.stop()
            self.start()
            raise UnavailableError(f"the generation worker process serving this request ended (exit code "
                                   f"{worker.process.exitcode}: killed, out of memory, or it could not start; the "
                                   "server log says more) and was replaced: send the request again") from None
        self._idle.put(worker)
        if not succeeded:
            raise payload
        path, result = payload
        return Path(path), result

    def close(self) -> None:
        """Stop the worker processes (call it when no request runs); ``start`` starts new ones."""
        with self._lock:
            workers, self._all = self._all, []
        self._idle = queue.Queue()
        for worker in workers:
            worker.stop()
