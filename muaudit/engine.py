"""Executors: who trains the models a shadow bank is missing (issue 15).

Every model muaudit trains from scratch (the original, gold models, shadows, unlearned shadows' bases) goes
through :meth:`muaudit.shadows.ShadowBank.models`, which hands the cache misses to its executor, either one model
per job (:meth:`train`) or whole vmap chunks per job (:meth:`train_vectorised`, MLP banks):

- :class:`SequentialExecutor` (the default): in this process, one after the other, exactly as before.
- :class:`ProcessExecutor`: ``workers`` local processes, one torch thread each (on this project's 2-core CPU one
  CNN trains about 2.5x faster with one thread than with two, so one process per core is the way to use the
  machine). Each worker receives the task and its data once (the pool initialiser).
- :class:`RayExecutor`: Ray tasks (``pip install 'muaudit[ray]'``), on a Ray started here (``workers`` CPUs) or
  on a running cluster (``address``: ``auto``, ``host:port`` or ``ray://host:port``), with ``cpus`` and
  ``gpus`` (fractions allowed) per model. The task and data go to the object store once per call.

Workers train with the same code as the sequential path (:func:`muaudit.training.train_from_scratch`, or
:func:`muaudit.vectorised.train_vectorised` on the bank's own chunks, so a chunk holds the same models wherever it
is trained) and return state dicts and their training time; the driver checks each model (finite weights) and
is the only writer of the cache, atomically, after the checks. On the CPU with one torch thread per model the
results are bit-identical to the sequential executor (tested for each executor).

Failures: a process worker that dies (killed, out of memory) breaks its pool, and the run fails with one clear
error naming the model; a Ray worker that dies is retried (``retries`` times, Ray's own task retry) and the run
fails the same way when the retries are spent. Either way nothing of a failed model reaches the cache.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from muaudit.data import DataBundle, Split
from muaudit.errors import ConfigurationError, MuauditError
from muaudit.rayconnect import check_ray_address, import_ray
from muaudit.task import Task

EXECUTORS = ("sequential", "processes", "ray")


@dataclass(frozen=True)
class TrainRequest:
    """One model to train from scratch: its role (for messages), training-pool indices and seed."""

    role: str
    indices: np.ndarray
    seed: int


@dataclass(frozen=True)
class Trained:
    """A trained model's state dict and its own training time (and the module itself when trained here)."""

    state: dict[str, torch.Tensor]
    seconds: float
    model: torch.nn.Module | None = None


# ------------------------------------------------------------------------------------------ the jobs
def training_pool(task: Task, data: DataBundle) -> Split:
    """The pool a bank's indices point into: the task's training split followed by the test split."""
    train = task.training_split(data)
    fine = None if train.fine is None or data.test.fine is None else torch.cat([train.fine, data.test.fine])
    return Split(torch.cat([train.x, data.test.x]), torch.cat([train.y, data.test.y]), fine)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def train_one(task: Task, data: DataBundle, pool: Split, indices: np.ndarray, seed: int, device: torch.device,
              label: str | None = None) -> Trained:
    """One model from scratch, exactly as :func:`~muaudit.training.train_from_scratch` trains it, and its time."""
    from muaudit.training import train_from_scratch

    start = time.perf_counter()
    model = train_from_scratch(task, data, pool.subset(indices.copy()), seed, device, label)
    return Trained(model.state_dict(), time.perf_counter() - start, model)


def train_chunk(task: Task, data: DataBundle, pool: Split, indices: Sequence[np.ndarray], seeds: Sequence[int],
                device: torch.device, chunk: int, label: str | None = None) -> list[Trained]:
    """Models trained together with vmap (:func:`~muaudit.vectorised.train_vectorised`); each gets an equal share
    of the batch time."""
    from muaudit.vectorised import train_vectorised

    start = time.perf_counter()
    models = train_vectorised(task, data, pool, list(indices), list(seeds), device, chunk, label)
    share = (time.perf_counter() - start) / len(models)
    return [Trained(m.state_dict(), share, m) for m in models]


def _chunks(requests: Sequence[TrainRequest], chunk: int) -> list[list[TrainRequest]]:
    return [list(requests[i:i + chunk]) for i in range(0, len(requests), chunk)]


def _flatten(parts: list[list[Trained]]) -> list[Trained]:
    return [t for part in parts for t in part]


# ------------------------------------------------------------------------------------------ executors
class SequentialExecutor:
    """Train in this process, one model (or one vmap chunk) after the other (the default)."""

    name = "sequential"
    workers = 1

    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        return [train_one(task, data, pool, r.indices, r.seed, device, f"{r.role} seed {r.seed}" if progress else None)
                for r in requests]

    def train_vectorised(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
                         device: torch.device, chunk: int, progress: bool = False) -> list[Trained]:
        label = f"shadows x{len(requests)}" if progress else None
        return train_chunk(task, data, pool, [r.indices for r in requests], [r.seed for r in requests], device,
                           chunk, label)


class ProcessExecutor:
    """Train on ``workers`` local processes, one torch thread each (module docstring)."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _worker_count(workers)

    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        if len(requests) <= 1 or self.workers == 1:
            return SequentialExecutor().train(task, data, pool, requests, device, progress)
        jobs = [(_process_one, (r.indices, r.seed)) for r in requests]
        return self._run(task, data, device, jobs, [[r] for r in requests])

    def train_vectorised(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
                         device: torch.device, chunk: int, progress: bool = False) -> list[Trained]:
        chunks = _chunks(requests, chunk)
        if len(chunks) <= 1 or self.workers == 1:
            return SequentialExecutor().train_vectorised(task, data, pool, requests, device, chunk, progress)
        jobs = [(_process_chunk, ([r.indices for r in c], [r.seed for r in c], chunk)) for c in chunks]
        return _flatten(self._run(task, data, device, jobs, chunks))

    def _run(self, task: Task, data: DataBundle, device: torch.device, jobs: list[tuple[Callable, tuple]],
             owners: list[list[TrainRequest]]) -> list[Any]:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=context, initializer=_init_worker,
                                 initargs=(task, data, str(device))) as executor:
            futures = [executor.submit(fn, *args) for fn, args in jobs]
            return [_process_result(f, owner) for f, owner in zip(futures, owners)]


def _process_result(future: Any, owner: list[TrainRequest]) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise _died(owner[0], "a training worker died") from None


def _died(request: TrainRequest, what: str) -> MuauditError:
    return MuauditError(f"{what} while training the {request.role} model (seed {request.seed}); nothing of it was "
                        "cached: run again, or use --executor sequential")


_WORKER: dict[str, Any] = {}


def _init_worker(task: Task, data: DataBundle, device: str) -> None:
    """Once per worker process: one torch thread, the task, its data and the training pool."""
    torch.set_num_threads(1)
    _WORKER.update(task=task, data=data, device=torch.device(device), pool=training_pool(task, data))


def _process_one(indices: np.ndarray, seed: int) -> Trained:
    t = train_one(_WORKER["task"], _WORKER["data"], _WORKER["pool"], indices, seed, _WORKER["device"])
    return Trained(_cpu_state(t.model), t.seconds)


def _process_chunk(indices: list[np.ndarray], seeds: list[int], chunk: int) -> list[Trained]:
    out = train_chunk(_WORKER["task"], _WORKER["data"], _WORKER["pool"], indices, seeds, _WORKER["device"], chunk)
    return [Trained(_cpu_state(t.model), t.seconds) for t in out]


def _worker_count(workers: int | None) -> int:
    count = (os.cpu_count() or 1) if workers is None else workers
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {workers!r}")
    return count


# ------------------------------------------------------------------------------------------------- Ray
class RayExecutor:
    """Train as Ray tasks, here or on a cluster (module docstring).

    ``address``: None starts a local Ray with ``workers`` CPUs (default: the CPU count), or uses the Ray this
    process already initialised; ``auto`` joins the running local cluster; ``host:port`` or ``ray://host:port``
    a remote one (it must answer within :data:`muaudit.rayconnect.RAY_CONNECT_TIMEOUT_S` seconds).
    ``workers`` also caps the models in flight. ``cpus`` per model is also the worker's torch thread count;
    ``gpus`` per model may be a fraction (models then train on that worker's CUDA device; without GPUs they
    train on the CPU, whatever the driver's device). ``retries``: how often Ray retries a model whose worker
    died. Workers must be able to import muaudit and any architecture factory (they get this process's
    ``sys.path``). A Ray started here stays up until this process exits, for the next call.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus: float = 1.0,
                 gpus: float = 0.0, retries: int = 2) -> None:
        self.ray = import_ray()
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigurationError(f"--ray-address must be auto, host:port or ray://host:port, got {address!r}")
        if not cpus > 0 or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
            raise ConfigurationError(f"Ray resources per model must be > 0 CPUs and >= 0 GPUs (fractions up to 1 "
                                     f"or whole numbers), got cpus={cpus}, gpus={gpus}")
        self.address, self.cpus, self.gpus, self.retries = address, float(cpus), float(gpus), int(retries)
        self.workers = _worker_count(workers) if workers is not None else None
        self._remote: Any = None

    # -- connection
    def connect(self) -> None:
        """Start or join Ray (once); a one-line :class:`ConfigurationError` when that is impossible."""
        if self.ray.is_initialized():
            return
        if self.address not in (None, "auto"):
            check_ray_address(self.address)
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        if self.address is None:
            # Ray runs its workers at nice 15 by default; a Ray started here trains at this process's priority, as
            # the other executors do. Measured here beside two busy nice-10 processes: the first digits MLP took
            # 18.5 s with nice-15 workers and 4.7 s at nice 0, worker start included.
            kwargs.update(num_cpus=self.workers or (os.cpu_count() or 1), _system_config={"worker_niceness": 0})
        else:
            kwargs["address"] = self.address
        try:
            self.ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            raise ConfigurationError(f"cannot start or join Ray at {self.address or 'a new local instance'}: "
                                     f"{_first_line(exc)}") from None

    # -- training
    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        return self._run(task, data, [[r] for r in requests], vectorised=False, chunk=1)

    def train_vectorised(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
                         device: torch.device, chunk: int, progress: bool = False) -> list[Trained]:
        return self._run(task, data, _chunks(requests, chunk), vectorised=True, chunk=chunk)

    def _run(self, task: Task, data: DataBundle, groups: list[list[TrainRequest]], vectorised: bool,
             chunk: int) -> list[Trained]:
        if not groups:
            return []
        self.connect()
        ray = self.ray
        payload = ray.put((task, data))
        remote = self._remote_fn().options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
        device = "cuda" if self.gpus > 0 else "cpu"
        threads = max(1, int(self.cpus))
        pending: dict[Any, int] = {}
        results: dict[int, list[Trained]] = {}
        window = self.workers or len(groups)
        for index, group in enumerate(groups):
            if len(pending) >= window:
                self._collect(pending, results, groups)
            ref = remote.remote(payload, [r.indices for r in group], [r.seed for r in group], vectorised, chunk,
                                device, threads)
            pending[ref] = index
        while pending:
            self._collect(pending, results, groups)
        return _flatten([results[i] for i in range(len(groups))])

    def _collect(self, pending: dict[Any, int], results: dict[int, list[Trained]],
                 groups: list[list[TrainRequest]]) -> None:
        """Wait for one job; store its models, or fail (cancelling the rest) when its worker died for good."""
        done, _ = self.ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            try:
                states = self.ray.get(ref)
            except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError) as exc:
                self._cancel(pending)
                raise _died(groups[index][0], f"a Ray worker died {self.retries + 1} time(s) ({type(exc).__name__})"
                            ) from None
            except self.ray.exceptions.RayTaskError as exc:  # the training itself raised: that error, as raised here
                self._cancel(pending)
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else MuauditError(_first_line(exc))) from None
            results[index] = [Trained(state, seconds) for state, seconds in states]

    def _cancel(self, pending: dict[Any, int]) -> None:
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def _remote_fn(self) -> Any:
        if self._remote is None:
            self._remote = self.ray.remote(_ray_job)
        return self._remote


def _ray_job(payload: tuple[Task, DataBundle], indices: list[np.ndarray], seeds: list[int], vectorised: bool,
             chunk: int, device: str, threads: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """A Ray task: one model, or one vmap chunk, from the task and data in the object store."""
    torch.set_num_threads(threads)
    task, data = payload
    pool = training_pool(task, data)
    where = torch.device(device if device == "cpu" or torch.cuda.is_available() else "cpu")
    if vectorised:
        trained = train_chunk(task, data, pool, indices, seeds, where, chunk)
    else:
        trained = [train_one(task, data, pool, i, s, where) for i, s in zip(indices, seeds)]
    return [(_cpu_state(t.model), t.seconds) for t in trained]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -------------------------------------------------------------------------------------------- factory
def make_executor(name: str = "sequential", workers: int | None = None, ray_address: str | None = None,
                  ray_cpus: float = 1.0, ray_gpus: float = 0.0) -> Any:
    """The executor called ``name`` (``sequential``, ``processes`` or ``ray``)."""
    if name == "sequential":
        return SequentialExecutor()
    if name == "processes":
        return ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(ray_address, workers, ray_cpus, ray_gpus)
    raise ConfigurationError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
