"""Executors: who trains the models a shadow bank is missing (issue 15).

Every model muaudit trains from scratch (the original, gold models, shadows, unlearned shadows' bases) goes
through :meth:`muaudit.shadows.ShadowBank.models`, which hands the cache misses to its executor, either one model
per job (:meth:`train`) or whole vmap chunks per job (:meth:`train_vectorised`, MLP banks):

- :class:`SequentialExecutor` (the default): in this process, one after the other, exactly as before.
- :class:`ProcessExecutor`: ``workers`` local processes, one torch thread each (on this project's 2-core CPU one
  CNN trains about 2.5x faster with one thread than with two, so one process per core is the way to use the
  machine). The pool persists across calls (closed by ``close()``, at exit, or when a worker dies), so a command
  starts its workers once; each call's task and data reach each worker once, as a private copy.
- :class:`RayExecutor`: Ray tasks (``pip install 'muaudit[ray]'``), on a Ray started here (``workers`` CPUs) or
  on a running cluster (``address``: ``auto``, ``host:port`` or ``ray://host:port``), with ``cpus`` and
  ``gpus`` (fractions allowed) per model. The task and data go to the object store once per call.

Workers train with the same code as the sequential path (:func:`muaudit.training.train_from_scratch`, or
:func:`muaudit.vectorised.train_vectorised` on the bank's own chunks, so a chunk holds the same models wherever it
is trained) and return state dicts and their training time; the driver checks each model (finite weights) and
is the only writer of the cache, atomically, after the checks. On the CPU with one torch thread per model the
results are bit-identical to the sequential executor (tested for each executor).

Method runs (:meth:`run_methods`): the extra runs of ``--method-seeds`` go through the executor too. A worker
rebuilds the original from its weights (:class:`MethodSetup`) and runs :func:`muaudit.runs.run_method` exactly as
the driver would (same sealing, same declared data); it returns the unlearned weights and the run's record
(:class:`MethodOutcome`). A plugin class that a worker cannot import (defined in ``__main__`` or a notebook) runs
in the driver. :meth:`run_grid` is the general form (any ``(params, seed)`` jobs; errors of chosen types come back
as :class:`RunFailure` values instead of stopping the others): tuning runs its configurations through it.

Derived models (:meth:`derive`): U-LiRA's unlearned shadows (the audited method applied to each shadow) are
derived from trained shadows by a portable ``make`` (:class:`muaudit.runs.ShadowUnlearner`), sent to each worker
once, with each shadow's indices as the job's arguments; the driver validates and caches the results as it does
trained models.

Failures: a process worker that dies (killed, out of memory) breaks its pool, and the run fails with one clear
error naming the model; a Ray worker that dies is retried (``retries`` times, Ray's own task retry) and the run
fails the same way when the retries are spent. Either way nothing of a failed model reaches the cache. An error
raised by the training or the method in a worker is raised in the driver as itself.
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from muaudit.data import DataBundle, Split
from muaudit.errors import ConfigurationError, MuauditError, PluginValidationError
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


def _flatten(parts: list[list[Any]]) -> list[Any]:
    return [t for part in parts for t in part]


# ------------------------------------------------------------------------------------- method runs
@dataclass(frozen=True)
class MethodSetup:
    """What a worker needs to run a method as :func:`muaudit.runs.run_method` runs it in the driver: the task,
    its data, the original model's weights and provenance, the device and the model cache (train statistics)."""

    task: Task
    data: DataBundle
    original_state: dict[str, torch.Tensor]
    original_source: dict[str, Any]
    device: str
    cache_root: str
    retain_sample_size: int | None

    @classmethod
    def of(cls, setup: Any) -> "MethodSetup":
        return cls(setup.task, setup.data, _cpu_state(setup.original), dict(setup.original_source),
                   str(setup.device), str(setup.cache.root), setup.retain_sample_size)

    def rebuild(self) -> Any:
        from muaudit.cache import TensorCache
        from muaudit.checkpoint import load_into
        from muaudit.models import AuditSetup
        from muaudit.training import fresh_model

        device = torch.device(self.device)
        original = load_into(fresh_model(self.task, self.data, 0), self.original_state, "original model")
        return AuditSetup(self.task, self.data, original.to(device).eval(), dict(self.original_source), [], device,
                          TensorCache(self.cache_root), retain_sample_size=self.retain_sample_size)


@dataclass(frozen=True)
class MethodOutcome:
    """A method run done elsewhere: the unlearned weights and the run's record (:class:`muaudit.runs.MethodRun`
    without the model and plugin objects)."""

    state: dict[str, torch.Tensor]
    params: dict[str, Any]
    seed: int
    seconds: float
    stats_seconds: float
    preset: dict[str, Any] | None
    diagnostics: dict[str, Any] | None

    @classmethod
    def of(cls, run: Any) -> "MethodOutcome":
        return cls(_cpu_state(run.model), run.params, run.seed, run.seconds, run.stats_seconds, run.preset,
                   run.diagnostics)

    def run(self, setup: Any, plugin: Any) -> Any:
        """The :class:`~muaudit.runs.MethodRun` in the driver: the weights in a copy of the original's module."""
        import copy

        from muaudit.runs import MethodRun

        model = copy.deepcopy(setup.original)
        model.load_state_dict(self.state)
        return MethodRun(model.to(setup.device).eval(), plugin, self.params, self.seed, self.seconds,
                         self.stats_seconds, self.preset, diagnostics=self.diagnostics)


@dataclass(frozen=True)
class RunFailure:
    """A method run that raised one of the error types its caller keeps (tuning scores such a configuration as
    failed and goes on): the error's type name and first line, picklable whatever the error was."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> "RunFailure":
        text = str(exc)
        return cls(type(exc).__name__, text.splitlines()[0] if text else "")

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self.message}"


MethodJob = tuple[dict[str, Any], int]  # (parameters, seed) of one method run


def _run_kept(setup: Any, plugin: Any, params: dict[str, Any], seed: int,
              keep: tuple[type[BaseException], ...]) -> Any:
    """:func:`muaudit.runs.run_method`, with an error of a ``keep`` type returned as a :class:`RunFailure`."""
    from muaudit.runs import run_method

    try:
        return run_method(setup, plugin, params, seed)
    except keep as exc:
        return RunFailure.of(exc)


def _outcome(result: Any) -> Any:
    return result if isinstance(result, RunFailure) else MethodOutcome.of(result)


def _in_driver(result: Any, setup: Any, plugin: Any) -> Any:
    return result if isinstance(result, RunFailure) else result.run(setup, plugin)


@dataclass(frozen=True)
class DeriveRequest:
    """One model derived from a trained one by the call's ``make`` (U-LiRA's unlearned shadows): ``subject``
    names it in errors, ``base`` is the trained model's CPU state dict, ``args`` the request's own arguments.

    ``make(model, pool, device, *args)`` returns the derived model from a private copy of the base model, with
    the worker's training pool and device. It goes to each worker once per call (not once per model); a ``make``
    whose ``portable`` attribute is not True (a closure, a class a worker cannot import) runs in this process
    whatever the executor."""

    subject: str
    base: dict[str, torch.Tensor]
    args: tuple[Any, ...] = ()


Make = Callable[..., torch.nn.Module]


def derive_one(task: Task, data: DataBundle, pool: Split, make: Make, request: DeriveRequest,
               device: torch.device) -> Trained:
    """``request``'s derived model and the time ``make`` took."""
    from muaudit.checkpoint import load_into
    from muaudit.training import fresh_model

    model = load_into(fresh_model(task, data, 0), request.base, request.subject).to(device)
    start = time.perf_counter()
    derived = make(model, pool, device, *request.args)
    if not isinstance(derived, torch.nn.Module):
        raise PluginValidationError(f"{request.subject}: expected an nn.Module, got {type(derived).__name__}")
    return Trained(derived.state_dict(), time.perf_counter() - start, derived)


def portable(make: Make) -> bool:
    """Whether ``make`` declares that a worker can run it (its ``portable`` attribute is True)."""
    return getattr(make, "portable", False) is True


def importable(cls: type) -> bool:
    """Whether a worker process can import ``cls`` by its module and qualified name."""
    import importlib

    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return False
    try:
        target: Any = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return False
    return target is cls


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

    def run_methods(self, setup: Any, plugin: Any, params: dict[str, Any], seeds: Sequence[int]) -> list[Any]:
        """The method run once per seed (:func:`muaudit.runs.run_method`), in this process."""
        return self.run_grid(setup, plugin, [(params, seed) for seed in seeds])

    def run_grid(self, setup: Any, plugin: Any, jobs: Sequence[MethodJob],
                 keep: tuple[type[BaseException], ...] = ()) -> list[Any]:
        """One :class:`~muaudit.runs.MethodRun` per ``(params, seed)`` job, in order; an error of a ``keep`` type
        is returned as a :class:`RunFailure` in the job's place, any other is raised."""
        return [_run_kept(setup, plugin, dict(params), seed, keep) for params, seed in jobs]

    def derive(self, task: Task, data: DataBundle, pool: Split, make: Make, requests: Sequence[DeriveRequest],
               device: torch.device) -> list[Trained]:
        """Each request's model derived by ``make`` (:class:`DeriveRequest`), in this process."""
        return [derive_one(task, data, pool, make, r, device) for r in requests]


class ProcessExecutor:
    """Train on ``workers`` local processes, one torch thread each (module docstring).

    The pool persists across calls (started on first use, closed by :meth:`close`, at exit, or when a worker
    dies), so the workers start, import torch and warm up once per command, not once per call: tuning, golds then
    shadows then unlearned shadows are many calls. Each call's payload (task and data, or a method's set-up)
    goes to the workers once, through a file the driver writes (:func:`_private`); a worker loads it on its first
    job of the call and keeps it for the call's other jobs.
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _worker_count(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._spool: tempfile.TemporaryDirectory[str] | None = None
        self._calls = 0

    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        if len(requests) <= 1 or self.workers == 1:
            return SequentialExecutor().train(task, data, pool, requests, device, progress)
        jobs = [(_process_one, (r.indices, r.seed)) for r in requests]
        return self._run(("train", (task, data, str(device), None)), jobs, [_training(r) for r in requests])

    def train_vectorised(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
                         device: torch.device, chunk: int, progress: bool = False) -> list[Trained]:
        chunks = _chunks(requests, chunk)
        if len(chunks) <= 1 or self.workers == 1:
            return SequentialExecutor().train_vectorised(task, data, pool, requests, device, chunk, progress)
        jobs = [(_process_chunk, ([r.indices for r in c], [r.seed for r in c], chunk)) for c in chunks]
        return _flatten(self._run(("train", (task, data, str(device), None)), jobs,
                                  [_training(c[0]) for c in chunks]))

    def run_methods(self, setup: Any, plugin: Any, params: dict[str, Any], seeds: Sequence[int]) -> list[Any]:
        """The method run once per seed, one run per worker process (in this process when its class cannot be
        imported by a worker, e.g. one defined in ``__main__``)."""
        return self.run_grid(setup, plugin, [(params, seed) for seed in seeds])

    def run_grid(self, setup: Any, plugin: Any, jobs: Sequence[MethodJob],
                 keep: tuple[type[BaseException], ...] = ()) -> list[Any]:
        """:meth:`SequentialExecutor.run_grid`, one run per worker process at a time."""
        if len(jobs) <= 1 or self.workers == 1 or not importable(plugin.cls):
            return SequentialExecutor().run_grid(setup, plugin, jobs, keep)
        calls = [(_process_method, (plugin, dict(params), seed, keep)) for params, seed in jobs]
        outcomes = self._run(("method", MethodSetup.of(setup)), calls, [_running(plugin, seed) for _, seed in jobs])
        return [_in_driver(outcome, setup, plugin) for outcome in outcomes]

    def derive(self, task: Task, data: DataBundle, pool: Split, make: Make, requests: Sequence[DeriveRequest],
               device: torch.device) -> list[Trained]:
        """:meth:`SequentialExecutor.derive`, one model per worker process at a time (in this process when
        ``make`` is not portable)."""
        if len(requests) <= 1 or self.workers == 1 or not portable(make):
            return SequentialExecutor().derive(task, data, pool, make, requests, device)
        jobs = [(_process_derive, (r,)) for r in requests]
        return self._run(("train", (task, data, str(device), make)), jobs, [r.subject for r in requests])

    def close(self) -> None:
        """Stop the workers and remove the payload files (the next call starts a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.cleanup()

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _executor(self) -> tuple[ProcessPoolExecutor, Path]:
        """The pool (started here on first use) and the folder of its payload files."""
        if self._pool is None or self._spool is None:
            import multiprocessing

            self.close()
            context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker)
            self._spool = tempfile.TemporaryDirectory(prefix="muaudit-workers-")
        return self._pool, Path(self._spool.name)

    def _run(self, payload: tuple[str, Any], jobs: list[tuple[Callable, tuple]], subjects: list[str]) -> list[Any]:
        """Run ``jobs`` on the pool, each after its worker has loaded this call's ``payload``. A dead worker breaks
        the pool: it is closed (the next call starts a new one) and the run fails naming the job."""
        executor, spool = self._executor()
        self._calls += 1
        path = spool / f"call-{self._calls}.pkl"
        path.write_bytes(_private(payload))
        futures: list[Any] = []
        try:
            futures = [executor.submit(_with_payload, str(path), fn, args) for fn, args in jobs]
            results = []
            for future, subject in zip(futures, subjects):
                try:
                    results.append(future.result())
                except BrokenProcessPool:
                    self.close()
                    raise _died(subject, "a worker died") from None
            return results
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            path.unlink(missing_ok=True)


def _training(request: TrainRequest) -> str:
    """How a failed training job is named in its error (its first model, for a vmap chunk)."""
    return f"training the {request.role} model (seed {request.seed})"


def _running(plugin: Any, seed: int) -> str:
    return f"running {plugin.spec.describe()} (seed {seed})"


def _died(subject: str, what: str) -> MuauditError:
    return MuauditError(f"{what} while {subject}; nothing of it was cached: run again, or use --executor sequential")


_WORKER: dict[str, Any] = {}


def _private(payload: Any) -> bytes:
    """``payload`` as plain pickle bytes, so that each worker unpickles its own private copy of the tensors.

    Why: passed as they are, tensors reach a pool worker through torch's multiprocessing reduction, which moves
    them into shared memory; measured on this project's 2-core machine (Fashion-MNIST CNN, 2 epochs, 2 workers),
    models trained 5.0-6.0 s each in workers holding shared-memory data and 3.6-3.9 s in workers holding a private
    copy, the same as in a process of their own (``reports/engine/cpu.md``). The copy costs one unpickling per
    worker and call (the data once, not once per model).
    """
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def _init_worker() -> None:
    """Once per worker process: one torch thread."""
    torch.set_num_threads(1)


def _with_payload(path: str, fn: Callable, args: tuple) -> Any:
    """``fn(*args)`` after loading the call's payload from ``path``, unless this worker already holds it."""
    if _WORKER.get("payload") != path:
        _WORKER.clear()
        kind, payload = pickle.loads(Path(path).read_bytes())
        if kind == "method":
            _WORKER["setup"] = payload.rebuild()
        else:
            task, data, device, make = payload
            _WORKER.update(task=task, data=data, device=torch.device(device), pool=training_pool(task, data),
                           make=make)
        _WORKER["payload"] = path
    return fn(*args)


def _process_one(indices: np.ndarray, seed: int) -> Trained:
    t = train_one(_WORKER["task"], _WORKER["data"], _WORKER["pool"], indices, seed, _WORKER["device"])
    return Trained(_cpu_state(t.model), t.seconds)


def _process_chunk(indices: list[np.ndarray], seeds: list[int], chunk: int) -> list[Trained]:
    out = train_chunk(_WORKER["task"], _WORKER["data"], _WORKER["pool"], indices, seeds, _WORKER["device"], chunk)
    return [Trained(_cpu_state(t.model), t.seconds) for t in out]


def _process_method(plugin: Any, params: dict[str, Any], seed: int, keep: tuple[type[BaseException], ...]) -> Any:
    return _outcome(_run_kept(_WORKER["setup"], plugin, params, seed, keep))


def _process_derive(request: DeriveRequest) -> Trained:
    t = derive_one(_WORKER["task"], _WORKER["data"], _WORKER["pool"], _WORKER["make"], request, _WORKER["device"])
    return Trained(_cpu_state(t.model), t.seconds)


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
            # address "local": a new Ray here even where a cluster is recorded (RAY_ADDRESS, or the file a `ray
            # start` leaves behind, stale once that cluster is gone); joining one is what address="auto" asks.
            kwargs.update(address="local", num_cpus=self.workers or (os.cpu_count() or 1),
                          _system_config={"worker_niceness": 0})
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

    def run_methods(self, setup: Any, plugin: Any, params: dict[str, Any], seeds: Sequence[int]) -> list[Any]:
        """The method run once per seed as Ray tasks (in this process when its class cannot be imported by a
        worker). The runs use this process's device when it is the CPU, and CUDA only with ``gpus``."""
        return self.run_grid(setup, plugin, [(params, seed) for seed in seeds])

    def run_grid(self, setup: Any, plugin: Any, jobs: Sequence[MethodJob],
                 keep: tuple[type[BaseException], ...] = ()) -> list[Any]:
        """:meth:`SequentialExecutor.run_grid` as Ray tasks (devices as in :meth:`run_methods`)."""
        if len(jobs) <= 1 or not importable(plugin.cls):
            return SequentialExecutor().run_grid(setup, plugin, jobs, keep)
        self.connect()
        method_setup = MethodSetup.of(setup)
        payload = self.ray.put(replace(method_setup, device=self._device))
        remote = self._options(self.ray.remote(_ray_method))
        outcomes = self._submit([(_running(plugin, seed), lambda params=params, seed=seed: remote.remote(
            payload, plugin, dict(params), seed, self._threads, keep)) for params, seed in jobs])
        return [_in_driver(outcome, setup, plugin) for outcome in outcomes]

    def derive(self, task: Task, data: DataBundle, pool: Split, make: Make, requests: Sequence[DeriveRequest],
               device: torch.device) -> list[Trained]:
        """:meth:`SequentialExecutor.derive` as Ray tasks (in this process when ``make`` is not portable)."""
        if not requests or not portable(make):
            return SequentialExecutor().derive(task, data, pool, make, requests, device)
        self.connect()
        payload = self.ray.put((task, data, make))
        remote = self._options(self.ray.remote(_ray_derive))
        states = self._submit([(r.subject, lambda r=r: remote.remote(payload, r, self._device, self._threads))
                               for r in requests])
        return [Trained(state, seconds) for state, seconds in states]

    @property
    def _device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"

    @property
    def _threads(self) -> int:
        return max(1, int(self.cpus))

    def _run(self, task: Task, data: DataBundle, groups: list[list[TrainRequest]], vectorised: bool,
             chunk: int) -> list[Trained]:
        if not groups:
            return []
        self.connect()
        payload = self.ray.put((task, data))
        remote = self._options(self._remote_fn())
        states = self._submit([(_training(group[0]), lambda group=group: remote.remote(
            payload, [r.indices for r in group], [r.seed for r in group], vectorised, chunk, self._device,
            self._threads)) for group in groups])
        return [Trained(state, seconds) for state, seconds in states]

    def _options(self, remote: Any) -> Any:
        return remote.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
                              runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})

    def _submit(self, jobs: list[tuple[str, Callable[[], Any]]]) -> list[Any]:
        """Submit each (subject, submit) job, at most ``workers`` in flight; the jobs' results in order,
        flattened (a job returns a list); ``subject`` names the job in its error."""
        pending: dict[Any, int] = {}
        results: dict[int, list[Any]] = {}
        subjects = [subject for subject, _ in jobs]
        window = self.workers or len(jobs)
        for index, (_, submit) in enumerate(jobs):
            if len(pending) >= window:
                self._collect(pending, results, subjects)
            pending[submit()] = index
        while pending:
            self._collect(pending, results, subjects)
        return _flatten([results[i] for i in range(len(jobs))])

    def _collect(self, pending: dict[Any, int], results: dict[int, list[Any]], subjects: list[str]) -> None:
        """Wait for one job; store its models, or fail (cancelling the rest) when its worker died for good."""
        done, _ = self.ray.wait(list(pending), num_returns=1)
        for ref in done:
            index = pending.pop(ref)
            try:
                states = self.ray.get(ref)
            except (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError) as exc:
                self._cancel(pending)
                raise _died(subjects[index], f"a Ray worker died {self.retries + 1} time(s) ({type(exc).__name__})"
                            ) from None
            except self.ray.exceptions.RayTaskError as exc:  # the training itself raised: that error, as raised here
                self._cancel(pending)
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else MuauditError(_first_line(exc))) from None
            results[index] = list(states)

    def _cancel(self, pending: dict[Any, int]) -> None:
        for ref in pending:
            self.ray.cancel(ref, force=True)

    def _remote_fn(self) -> Any:
        if self._remote is None:
            self._remote = self.ray.remote(_ray_job)
        return self._remote


def _ray_method(payload: MethodSetup, plugin: Any, params: dict[str, Any], seed: int, threads: int,
                keep: tuple[type[BaseException], ...] = ()) -> list[Any]:
    """A Ray task: one method run on the original model rebuilt from the object store."""
    torch.set_num_threads(threads)
    setup = (payload if payload.device == "cpu" or torch.cuda.is_available()
             else replace(payload, device="cpu")).rebuild()
    return [_outcome(_run_kept(setup, plugin, params, seed, keep))]


def _ray_derive(payload: tuple[Task, DataBundle, Make], request: DeriveRequest, device: str, threads: int
                ) -> list[tuple[dict[str, torch.Tensor], float]]:
    """A Ray task: one derived model, from the task, data and ``make`` in the object store."""
    torch.set_num_threads(threads)
    task, data, make = payload
    where = torch.device(device if device == "cpu" or torch.cuda.is_available() else "cpu")
    t = derive_one(task, data, training_pool(task, data), make, request, where)
    return [(_cpu_state(t.model), t.seconds)]


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
def executor_of(setup: Any) -> Any:
    """The executor of ``setup``'s model bank (the one its audit was prepared with), or the sequential one."""
    return getattr(getattr(setup, "_bank", None), "executor", None) or SequentialExecutor()



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
