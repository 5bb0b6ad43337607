"""Executors: how the models a shadow bank is missing get trained (issue 15, first part).

Every model muaudit trains from scratch one by one (the original, gold models, shadows) goes through
:meth:`muaudit.shadows.ShadowBank.models`, which hands the cache misses to its executor:

- :class:`SequentialExecutor` (the default): in this process, one after the other, exactly as before.
- :class:`ProcessExecutor`: ``workers`` local processes, one torch thread each (on this project's 2-core CPU one
  CNN trains about 2.5x faster with one thread than with two, so one process per core is the way to use the
  machine). Each worker receives the task and its data once (the pool initialiser), then trains the requests it
  is given (indices, seed) with the same code as the sequential path and returns the state dict and its training
  time; the driver checks each model (finite weights) and writes the cache. On the CPU a model trained in a worker
  is bit-identical to the same request trained in process with one torch thread (tested).

A worker that dies (killed, out of memory) breaks the pool: the run fails with one clear error naming the model,
and nothing of that model reaches the cache (only the driver writes entries, atomically, after the checks).
Ray is not implemented yet (see the project's issue 15).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from muaudit.data import DataBundle, Split
from muaudit.errors import ConfigurationError, MuauditError
from muaudit.task import Task

EXECUTORS = ("sequential", "processes")


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


class SequentialExecutor:
    """Train in this process, one model after the other (the default)."""

    name = "sequential"
    workers = 1

    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        from muaudit.training import train_from_scratch

        out = []
        for r in requests:
            start = time.perf_counter()
            model = train_from_scratch(task, data, pool.subset(r.indices.copy()), r.seed, device,
                                       f"{r.role} seed {r.seed}" if progress else None)
            out.append(Trained(model.state_dict(), time.perf_counter() - start, model))
        return out


class ProcessExecutor:
    """Train on ``workers`` local processes, one torch thread each (module docstring)."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"--workers must be at least 1, got {workers!r}")
        self.workers = count

    def train(self, task: Task, data: DataBundle, pool: Split, requests: Sequence[TrainRequest],
              device: torch.device, progress: bool = False) -> list[Trained]:
        if len(requests) <= 1 or self.workers == 1:
            return SequentialExecutor().train(task, data, pool, requests, device, progress)
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        workers = min(self.workers, len(requests))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(task, data, str(device))) as executor:
            futures = [executor.submit(_train_one, r.indices, r.seed) for r in requests]
            return [_result(f, r) for f, r in zip(futures, requests)]


def _result(future: Any, request: TrainRequest) -> Trained:
    try:
        state, seconds = future.result()
    except BrokenProcessPool:
        raise MuauditError(f"a training worker died while training the {request.role} model (seed "
                           f"{request.seed}); nothing of it was cached: run again, or use --executor sequential"
                           ) from None
    return Trained(state, seconds)


_WORKER: dict[str, Any] = {}


def _init_worker(task: Task, data: DataBundle, device: str) -> None:
    """Once per worker: one torch thread, the task, its data and the training pool (as the bank builds it)."""
    torch.set_num_threads(1)
    train = task.training_split(data)
    fine = None if train.fine is None or data.test.fine is None else torch.cat([train.fine, data.test.fine])
    _WORKER.update(task=task, data=data, device=torch.device(device),
                   pool=Split(torch.cat([train.x, data.test.x]), torch.cat([train.y, data.test.y]), fine))


def _train_one(indices: np.ndarray, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    from muaudit.training import train_from_scratch

    start = time.perf_counter()
    model = train_from_scratch(_WORKER["task"], _WORKER["data"], _WORKER["pool"].subset(indices.copy()), seed,
                               _WORKER["device"])
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, time.perf_counter() - start


def make_executor(name: str = "sequential", workers: int | None = None) -> SequentialExecutor | ProcessExecutor:
    """The executor called ``name`` (``sequential`` or ``processes``)."""
    if name == "sequential":
        return SequentialExecutor()
    if name == "processes":
        return ProcessExecutor(workers)
    raise ConfigurationError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
