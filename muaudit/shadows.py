"""The shadow-model bank: the one backend that trains, caches and reloads every extra model of an audit.

Shadow-model attacks (LiRA, U-LiRA, shadow classifiers) need many models trained with the task's recipe on
subsets of a *pool*: the training set as the original model saw it (poisoned labels on label-flip tasks)
followed by the test split. A :class:`ModelRequest` names a model by role, seed and the pool indices it trains
on; :class:`ShadowBank` returns the models (cache hits loaded, all misses trained together, vectorised with
:mod:`muaudit.vectorised` when the architecture allows), their logits (memoised in memory), and models derived
from them (e.g. a shadow unlearned by the method under audit), all cached through :class:`TensorCache`.

A model's cache configuration holds the bank schema, the task's content hash, the role, the seed, the count and
SHA-256 of its indices and the trainer (``"vmap"`` or ``"sequential"``: they agree only up to float rounding, so
they are different entries). On load the entry must also pass a strict load into the task's architecture and
carry matching metadata; anything else is retrained, never used.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from muaudit.cache import TensorCache
from muaudit.checkpoint import load_into
from muaudit.data import DataBundle, Split
from muaudit.errors import CheckpointError, PluginValidationError
from muaudit.locks import entry_locks
from muaudit.timing import LOG, log_after_seconds
from muaudit.task import Task
from muaudit.training import check_trained, fresh_model, predict_logits
from muaudit.vectorised import can_vectorise, worth_vectorising

BANK_SCHEMA = 1
VECTORISE_MODES = ("auto", "always", "never")


def _indices_sha256(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def balanced_keep_matrix(n_models: int, n_examples: int, seed: int) -> np.ndarray:
    """Boolean ``(M, N)``: ``keep[m, x]`` if shadow m trains on x; every example is IN for exactly M/2 shadows.

    Follows Carlini et al.'s ``train.py``: ``order = uniform(size=(M, N)).argsort(0); keep = order < M // 2``
    (the ranks of i.i.d. uniforms in a column are a uniform random permutation, so each column has M/2 True).
    """
    if n_models < 2 or n_models % 2:
        raise ValueError(f"a balanced keep matrix needs an even number of models (>= 2), got {n_models}")
    if n_examples < 1:
        raise ValueError(f"a keep matrix needs at least one example, got {n_examples}")
    order = np.random.default_rng(seed).uniform(size=(n_models, n_examples)).argsort(0)
    return order < n_models // 2


@dataclass(frozen=True, eq=False)
class ModelRequest:
    """One bank model: a free ``role`` label, the pool ``indices`` it trains on, and its ``seed``.

    ``indices`` are stored sorted, as a read-only int64 array (so a request cannot drift from its hash; pass
    ``indices.copy()`` to APIs that want a writable array, such as ``Split.subset``); duplicates, negative or
    non-integer indices and empty sets are rejected. Requests compare and hash by :meth:`config`.
    """

    role: str
    indices: np.ndarray
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise ValueError(f"a model request needs a non-empty role string, got {self.role!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"a model request needs an integer seed, got {self.seed!r}")
        raw = np.asarray(self.indices)
        if raw.ndim != 1 or raw.size == 0 or not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"request {self.role!r}: indices must be a non-empty 1-D array of integers")
        indices = np.sort(raw.astype(np.int64))
        if indices[0] < 0 or (np.diff(indices) == 0).any():
            raise ValueError(f"request {self.role!r}: indices must be unique and non-negative")
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "seed", int(self.seed))

    def config(self) -> dict[str, Any]:
        """The JSON-able identity of this request: role, seed, index count and SHA-256 of the index bytes."""
        return {"role": self.role, "seed": self.seed, "count": int(len(self.indices)),
                "indices_sha256": _indices_sha256(self.indices)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelRequest) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.config(), sort_keys=True))


class ShadowBank:
    """Trains, caches and reloads the extra models of one audit (see the module docstring).

    ``vectorise``: ``auto`` trains with vmap when :func:`~muaudit.vectorised.can_vectorise` allows it (no
    BatchNorm, no dropout) and :func:`~muaudit.vectorised.worth_vectorising` expects a speed-up (on the CPU:
    convolution-free models only, since vmapped convolutions measured slower there), else sequentially;
    ``always`` insists on vmap (a ``ValueError`` for architectures that cannot be vectorised); ``never`` always
    trains sequentially. ``chunk`` bounds how many models are trained at once. ``n_trained`` counts the models
    this bank has trained (cache misses).
    """

    def __init__(self, task: Task, data: DataBundle, cache: TensorCache, device: torch.device,
                 progress: bool = False, vectorise: str = "auto", chunk: int = 32, executor: Any = None) -> None:
        if vectorise not in VECTORISE_MODES:
            raise ValueError(f"vectorise must be one of {', '.join(VECTORISE_MODES)}, got {vectorise!r}")
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        # The bank's own copy of the data: an attack that declared "shadows" reaches the bank, and must not be able
        # to reach the audit's data through it.
        self.task, self.data, self.cache, self.device = task, data.clone(), cache, device
        self.progress, self.chunk = progress, chunk
        from muaudit.engine import SequentialExecutor

        self.executor = executor or SequentialExecutor()  # who trains the misses one by one (muaudit.engine)
        from muaudit.engine import training_pool

        self.pool = training_pool(task, data)
        self.n_train = len(task.training_split(data))
        self.task_hash = task.content_hash()
        probe = fresh_model(task, data, 0)
        if vectorise == "always" and not can_vectorise(probe, self.pool.x[:2]):
            raise ValueError(f"architecture {task.model.arch!r} cannot be trained vectorised "
                             "(BatchNorm or dropout layers); use vectorise='auto' or 'never'")
        auto = vectorise == "auto" and worth_vectorising(probe, device) and can_vectorise(probe, self.pool.x[:2])
        self.trainer = "vmap" if vectorise == "always" or auto else "sequential"
        self.n_trained = 0
        self.last_trained: frozenset[str] = frozenset()
        self._logits: dict[tuple[str, str], torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------- indices
    def test_index(self, j: np.ndarray | int) -> np.ndarray:
        """Pool indices of test examples ``j`` (positions in ``data.test``)."""
        array = np.asarray(j, dtype=np.int64)
        n_test = len(self.pool) - self.n_train
        if array.size and (array.min() < 0 or array.max() >= n_test):
            raise ValueError(f"test indices must lie in [0, {n_test})")
        return self.n_train + array

    #: LiRA's balanced IN/OUT assignment (:func:`balanced_keep_matrix`).
    keep_matrix = staticmethod(balanced_keep_matrix)

    # -------------------------------------------------------------------------------------------- models
    def model_config(self, request: ModelRequest, trainer: str | None = None) -> dict[str, Any]:
        """The cache configuration of ``request``'s model under ``trainer`` (default: the bank's)."""
        return {"kind": "shadow-bank", "bank_schema": BANK_SCHEMA, "task_hash": self.task_hash,
                "trainer": trainer or self.trainer, **request.config()}

    def metadata(self, request: ModelRequest, trainer: str | None = None) -> dict[str, Any] | None:
        """The stored metadata of ``request``'s model (``train_seconds``, trainer, ...) or None if not cached."""
        hit = self.cache.get(self.model_config(request, trainer))
        return None if hit is None else hit[1]

    def models(self, requests: Sequence[ModelRequest], trainer: str | None = None) -> list[nn.Module]:
        """The requested models in eval mode on the bank's device; misses are trained together and cached.

        ``trainer="sequential"`` forces one-by-one training (bit-identical to ``train_from_scratch`` and timed per
        model): the audit's original and gold models use it, so that the gold retrain time is a real single
        retrain, the denominator of every method's speed-up.
        """
        trainer = trainer or self.trainer
        if trainer not in ("vmap", "sequential"):
            raise ValueError(f"trainer must be 'vmap' or 'sequential', got {trainer!r}")
        self._check_in_pool(requests)
        found: dict[str, nn.Module] = {}
        misses: dict[str, ModelRequest] = {}
        for request in requests:
            key = self.cache.key(self.model_config(request, trainer))
            if key in found or key in misses:
                continue
            model = self._load(request, trainer)
            if model is None:
                misses[key] = request
            else:
                found[key] = model
        self.last_trained = frozenset()  # keys of the models this call trains (the rest came from the cache)
        if misses:  # another process may be training the same models: wait for it, then reuse its work
            with entry_locks(self.cache.root, misses):
                for key, request in list(misses.items()):
                    model = self._load(request, trainer)
                    if model is not None:
                        found[key] = model
                        del misses[key]
                found.update(zip(misses, self._train(list(misses.values()), trainer)))
                self.last_trained = frozenset(misses)
        out, seen = [], set()
        for request in requests:  # a request given twice gets two independent modules
            key = self.cache.key(self.model_config(request, trainer))
            out.append(found[key] if key not in seen else copy.deepcopy(found[key]))
            seen.add(key)
        return out

    def logits(self, requests: Sequence[ModelRequest], pool_indices: np.ndarray) -> torch.Tensor:
        """``(M, n, K)`` float32 CPU logits of each requested model on pool examples ``pool_indices``."""
        indices = self._pool_indices(pool_indices)
        digest = _indices_sha256(indices)
        keys = [(self.cache.key(self.model_config(r)), digest) for r in requests]
        todo = {k: r for k, r in zip(keys, requests) if k not in self._logits}
        if todo:
            split = self.pool.subset(indices)
            for key, model in zip(todo, self.models(list(todo.values()))):
                self._logits[key] = predict_logits(model, split, self.device)
        if not keys:
            return torch.empty(0, len(indices), self.data.n_classes)
        return torch.stack([self._logits[k] for k in keys])

    # ------------------------------------------------------------------------------------------- derived
    def derived(self, make: Callable[..., nn.Module],
                     items: Sequence[tuple[ModelRequest, Mapping[str, Any], tuple[Any, ...]]]) -> list[nn.Module]:
        """The models derived from bank models by ``make``, one per ``(base, label, args)`` item, cached under
        ``base`` and ``label``. Cache misses are derived together by the bank's executor
        (:meth:`muaudit.engine.SequentialExecutor.derive`): ``make(model, pool, device, *args)`` gets a private
        copy of the base model, and runs on the workers when it is portable (:class:`muaudit.runs.ShadowUnlearner`),
        here otherwise (a closure, say). Each result is checked (architecture, finite weights) before it is
        cached."""
        configs = [self._derived_config(base, label) for base, label, _ in items]
        found: dict[str, nn.Module] = {}
        misses: dict[str, int] = {}
        for i, config in enumerate(configs):
            key = self.cache.key(config)
            if key not in found and key not in misses:
                model = self._load_derived(config)
                if model is None:
                    misses[key] = i
                else:
                    found[key] = model
        if misses:  # another process may be deriving the same models: wait for it, then reuse its work
            with entry_locks(self.cache.root, misses):
                for key, i in list(misses.items()):
                    model = self._load_derived(configs[i])
                    if model is not None:
                        found[key] = model
                        del misses[key]
                found.update(zip(misses, self._derive(make, [items[i] for i in misses.values()])))
        return [found[self.cache.key(config)] for config in configs]

    def derived_logits(self, make: Callable[..., nn.Module],
                            items: Sequence[tuple[ModelRequest, Mapping[str, Any], tuple[Any, ...]]],
                            pool_indices: np.ndarray) -> list[torch.Tensor]:
        """``(n, K)`` float32 CPU logits of each of :meth:`derived`'s models on pool examples
        ``pool_indices`` (memoised; the missing models derived together)."""
        indices = self._pool_indices(pool_indices)
        digest = _indices_sha256(indices)
        keys = [(self.cache.key(self._derived_config(base, label)), digest) for base, label, _ in items]
        todo = {k: item for k, item in zip(keys, items) if k not in self._logits}
        if todo:
            split = self.pool.subset(indices)
            for key, model in zip(todo, self.derived(make, list(todo.values()))):
                self._logits[key] = predict_logits(model, split, self.device)
        return [self._logits[k] for k in keys]

    # ------------------------------------------------------------------------------------------ internals
    def _check_in_pool(self, requests: Sequence[ModelRequest]) -> None:
        for request in requests:
            if not isinstance(request, ModelRequest):
                raise TypeError(f"expected a ModelRequest, got {type(request).__name__}")
            if request.indices[-1] >= len(self.pool):
                raise ValueError(f"request {request.role!r}: index {int(request.indices[-1])} is outside the pool "
                                 f"of {len(self.pool)} examples")

    def _pool_indices(self, pool_indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(pool_indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError("pool_indices must be a 1-D array of integers")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.pool)):
            raise ValueError(f"pool indices must lie in [0, {len(self.pool)})")
        return indices

    def _strict(self, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
        """A fresh model of the task's architecture holding ``state`` (strict load, finite weights)."""
        model = load_into(fresh_model(self.task, self.data, 0), state, source)
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(f"{source}: {name!r} contains NaN or infinite values")
        return model.to(self.device).eval()

    def _load(self, request: ModelRequest, trainer: str) -> nn.Module | None:
        """The cached model of ``request``, or None when absent, corrupt or not matching the request."""
        config = self.model_config(request, trainer)
        hit = self.cache.get(config)
        if hit is None:
            return None
        state, extra = hit
        expected = {"count": int(len(request.indices)), "indices_sha256": _indices_sha256(request.indices),
                    "trainer": trainer}
        if any(extra.get(k) != v for k, v in expected.items()):
            return None
        try:
            return self._strict(state, f"cache entry {self.cache.path(config)}")
        except CheckpointError:
            return None

    def _train(self, requests: list[ModelRequest], trainer: str) -> list[nn.Module]:
        """Train ``requests`` (vectorised together, or one by one) and cache each model.

        ``train_seconds`` is each model's own time when trained one by one, and the batch time divided by the
        number of models when vectorised (``batch_seconds`` and ``batch_models`` record the batch).
        """
        if not requests:
            return []
        from muaudit.engine import TrainRequest

        start = time.perf_counter()
        jobs = [TrainRequest(r.role, r.indices, r.seed) for r in requests]
        if trainer == "vmap":
            trained = self.executor.train_vectorised(self.task, self.data, self.pool, jobs, self.device, self.chunk,
                                                     self.progress)
        else:
            trained = self.executor.train(self.task, self.data, self.pool, jobs, self.device, self.progress)
        models = [t.model if t.model is not None else
                  load_into(fresh_model(self.task, self.data, 0), t.state, f"{r.role} model (seed {r.seed})")
                  for t, r in zip(trained, requests)]
        seconds = [t.seconds for t in trained]
        total = time.perf_counter() - start
        from muaudit.audit import versions  # imported here: muaudit.audit imports this module lazily too

        for request, model, own in zip(requests, models, seconds):
            check_trained(model, self.task, f"{request.role} model (seed {request.seed})")
            self.cache.put(self.model_config(request, trainer), model.state_dict(), {
                "count": int(len(request.indices)), "indices_sha256": _indices_sha256(request.indices),
                "trainer": trainer, "train_seconds": own, "batch_seconds": total,
                "batch_models": len(requests), "versions": versions()})
        self.n_trained += len(requests)
        for request, own in zip(requests, seconds):  # after every check: a diverged model is an error, not progress
            LOG.log(logging.INFO if own >= log_after_seconds() else logging.DEBUG, "trained the %s model (seed %d) in "
                    "%.1f s", request.role, request.seed, own)
        return [model.to(self.device).eval() for model in models]

    def _load_derived(self, config: dict[str, Any]) -> nn.Module | None:
        hit = self.cache.get(config)
        if hit is None:
            return None
        try:
            return self._strict(hit[0], f"cache entry {self.cache.path(config)}")
        except CheckpointError:
            return None  # a mismatched entry is rebuilt

    def _derive(self, make: Callable[..., nn.Module],
                items: Sequence[tuple[ModelRequest, Mapping[str, Any], tuple[Any, ...]]]) -> list[nn.Module]:
        """Derive ``items`` (cache misses) through the executor, check each result and cache it."""
        from muaudit.engine import DeriveRequest, _cpu_state

        bases = self.models([base for base, _, _ in items])
        requests = [DeriveRequest(f"deriving a model from the {base.role} model (seed {base.seed})",
                                  _cpu_state(model), tuple(args)) for (base, _, args), model in zip(items, bases)]
        trained_models = self.executor.derive(self.task, self.data, self.pool, make, requests, self.device)
        derived = []
        for (base, label, _), trained in zip(items, trained_models):
            model = self._validated(trained.state if trained.model is None else _cpu_state(trained.model), label)
            self.cache.put(self._derived_config(base, label), model.state_dict(),
                           {"derive_seconds": trained.seconds, "base": self.model_config(base)})
            derived.append(model)
        return derived

    def _derived_config(self, base: ModelRequest, label: Mapping[str, Any]) -> dict[str, Any]:
        try:
            label_json = json.loads(json.dumps(dict(label), sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a derived model's label must be JSON-serialisable: {exc}") from None
        return {"kind": "shadow-derived", "bank_schema": BANK_SCHEMA, "base": self.model_config(base),
                "label": label_json}

    def _validated(self, state: Mapping[str, torch.Tensor], label: Mapping[str, Any]) -> nn.Module:
        """A ``make``'s result (its CPU state dict; :func:`muaudit.engine.derive_one` checked that it was a module)
        as a fresh model of the task's architecture; a broken result is a plugin error."""
        what = f"derived model {json.dumps(dict(label), sort_keys=True)}"
        try:
            return self._strict(state, what)
        except CheckpointError as exc:
            raise PluginValidationError(str(exc)) from None
