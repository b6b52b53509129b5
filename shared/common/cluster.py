"""Dask as the engine of sd-generate and cnn-hooks: ``--dask ADDRESS`` or ``--dask local:N``.

The client plans; tasks (batches of records, or blocks of rows) run on the workers and return small
results. Each worker builds its model once, through the same builder the single-process path uses,
and keeps it for the next task with the same settings; models never travel from the client.
``local:N`` starts N worker processes on this machine, one torch thread each and, where there are
GPUs, one GPU each (round robin through ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from synthprobe.common.files import InputError, error_line
from synthprobe.common.progress import progress

log = logging.getLogger("synthprobe")

CONNECT_TIMEOUT_S = 10
INSTALL_HINT = "pip install 'synthprobe[dask]'"
_ADDRESS = re.compile(r"([a-z]+://)?[A-Za-z0-9._\-\[\]:]+:\d+")

# The models a worker process has built: one at a time, keyed by builder and settings.
_worker_models: dict[tuple, object] = {}
# A worker with several threads (dask worker's default) still runs one task at a time: each uses the whole device.
_task_lock = threading.Lock()


def one_at_a_time(func: Callable, *args):
    with _task_lock:
        return func(*args)


def worker_model(builder: Callable, *args):
    """``builder(*args)``, built once per worker process and kept while tasks ask for the same one."""
    key = (builder.__module__, builder.__qualname__, repr(args))
    if key not in _worker_models:
        from synthprobe.common.quiet import quiet_libraries

        quiet_libraries(silent=True)  # a worker's log keeps the libraries' errors only
        _worker_models.clear()  # a worker holds one model: drop the last before building the next
        gc.collect()
        _worker_models[key] = builder(*args)
    return _worker_models[key]


def visible_gpus() -> list[str]:
    """The GPUs local workers share out: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def _local_worker_setup(gpus: list[str], torch_threads: int):
    """A worker plugin (built lazily: distributed is an optional extra) for the workers of ``local:N``."""
    from distributed import WorkerPlugin

    class LocalWorkerSetup(WorkerPlugin):
        name = "synthprobe-local-worker"

        def setup(self, worker):
            # Before the first CUDA call of this process, so torch sees only this worker's GPU as cuda:0.
            if gpus and isinstance(worker.name, int):
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[worker.name % len(gpus)]
            import torch

            torch.set_num_threads(torch_threads)

    return LocalWorkerSetup()


def parse_dask(text: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); a scheduler address (``tcp://host:8786``, ``host:8786``) or a scheduler
    file (``scheduler.json``) -> ("address", text) or ("file", text). A bad value is a ValueError naming it."""
    text = text.strip()
    local = re.fullmatch(r"local:(\d+)", text)
    if local:
        workers = int(local[1])
        if workers < 1:
            raise ValueError(f"{text}: a local cluster needs at least one worker (local:1, local:2, ...)")
        return "local", workers
    if text.endswith(".json"):
        if not Path(text).is_file():
            raise ValueError(f"{text}: no such scheduler file")
        return "file", text
    if not _ADDRESS.fullmatch(text):
        raise ValueError(
            f"{text!r}: expected local:N, a scheduler address such as tcp://host:8786, or a scheduler file"
        )
    return "address", text


class DaskEngine:
    """A Dask client, connected (or its local cluster started) on first use and closed by ``close``."""

    def __init__(self, spec: str):
        self.spec = spec.strip()
        try:
            self.kind, self.target = parse_dask(spec)
        except ValueError as exc:
            raise InputError(f"--dask {exc}") from None
        self.cluster = None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(f"--dask needs dask and distributed: {INSTALL_HINT}") from None
        try:
            # The scheduler of a local cluster runs here: its routine INFO lines would fill the tool's log.
            logging.getLogger("distributed").setLevel(logging.WARNING)
            if self.kind == "local":
                log.info("starting a local Dask cluster of %d worker processes", self.target)
                with warnings.catch_warnings():  # "Port 8787 is already in use": another cluster's dashboard
                    warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
                    self.cluster = LocalCluster(
                        n_workers=self.target,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        memory_limit=0,  # a pipeline loads many GB on the CPU first; no nanny kills for it
                        silence_logs=logging.ERROR,
                    )
                client = Client(self.cluster)
                client.register_plugin(_local_worker_setup(self._local_gpus(), self._local_threads()))
                return client
            if self.kind == "file":
                return Client(scheduler_file=self.target, timeout=f"{CONNECT_TIMEOUT_S}s")
            return Client(self.target, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:  # RuntimeError: a nanny failed to start
            self.close()
            where = "a local cluster" if self.kind == "local" else "the Dask scheduler"
            raise InputError(f"--dask {self.spec}: cannot reach {where} ({error_line(exc)})") from None

    def _local_gpus(self) -> list[str]:
        gpus = visible_gpus()
        if gpus and self.target > len(gpus):
            log.warning(
                "--dask %s: %d workers share %d GPUs, so some GPUs hold two models; local:%d gives one each",
                self.spec,
                self.target,
                len(gpus),
                len(gpus),
            )
        return gpus

    def _local_threads(self) -> int:
        """The machine's cores shared out: N workers must not each use every core."""
        return max(1, (os.cpu_count() or 1) // self.target)

    def as_a_worker_sees_it(self, func: Callable, *args):
        """``func(*args)`` where the workers' view counts (their devices, say): a remote worker may have a GPU where
        the client has none. A local cluster's workers share this machine, so it runs here."""
        if self.kind == "local":
            return func(*args)
        if not self.client.scheduler_info().get("workers"):
            log.info("--dask %s: waiting for the first worker to join (Ctrl-C stops)", self.spec)
        return self.client.submit(func, *args, pure=False).result()

    def run_tasks(
        self, func: Callable, tasks: list[tuple], sizes: list[int], *, desc: str, unit: str, silent: bool
    ) -> Iterator[tuple[int, object]]:
        """Run ``func(*task)`` for every task on the workers; yield (task index, result) as they finish.

        Tasks are submitted in order, a few per worker ahead of the results, so that neither the workers nor
        this process hold more than a window of results; each result is released once yielded. A task that
        raises stops the run (the others are cancelled) with one line. A worker that dies mid-task costs that
        task only: the scheduler runs it again elsewhere.
        """
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        run = uuid.uuid4().hex[:8]
        queued = iter(enumerate(tasks))
        pending: dict = {}  # future -> task index
        finished = as_completed(loop=self.client.loop)  # this client's loop, whichever client is the default

        def top_up() -> None:
            window = self._window()
            for i, task in itertools.islice(queued, max(0, window - len(pending))):
                future = self.client.submit(one_at_a_time, func, *task, key=f"{desc}-{run}-{i}")
                pending[future] = i
                finished.add(future)

        bar = progress(None, total=sum(sizes), desc=desc, unit=unit, silent=silent)
        try:
            top_up()
            for future in finished:
                i = pending.pop(future)
                try:
                    result = future.result()
                except KilledWorker as exc:
                    raise InputError(
                        f"--dask {self.spec}: workers died running task {i} again and again ({error_line(exc)}); "
                        "see the worker logs"
                    ) from None
                except (InputError, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # a worker's own failure (a missing library, a lost scheduler)
                    raise InputError(f"--dask {self.spec}: task {i} failed ({error_line(exc)})") from None
                del future  # the worker frees a result once no future refers to it
                top_up()
                bar.update(sizes[i])
                yield i, result
        finally:
            bar.close()
            self.client.cancel(list(pending))

    def _window(self) -> int:
        """Tasks in flight: two per worker (one running, one ready), at least four while workers join."""
        return max(4, 2 * len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close()
        with contextlib.suppress(Exception):
            if self.cluster is not None:
                self.cluster.close()
        self._client = self.cluster = None
