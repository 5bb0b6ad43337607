"""Task -> models: the data, the original model and the gold retrains of an audit, shared by its methods.

:func:`prepare` builds an :class:`AuditSetup` (task, data, original model, gold models) that several methods can
share (``muaudit compare``). Every model comes from the task's :class:`~muaudit.shadows.ShadowBank`, which trains
each one with the task's recipe and caches it content-addressed.
"""
from __future__ import annotations

import platform
from pathlib import Path
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from muaudit.adapt import StateAdapter, adapt, suggest
from muaudit.base import MembershipAttack, ModelOutputs
from muaudit.cache import TensorCache
from muaudit.checkpoint import Checkpoint, load_checkpoint, load_into, state_dict_sha256
from muaudit.data import DataBundle, Split
from muaudit.errors import CheckpointError, TaskError
from muaudit.presets import TaskProfile, profile_of
from muaudit.shadows import ModelRequest, ShadowBank
from muaudit.task import ModelSpec, Task, spec_key
from muaudit.timing import PhaseTimer
from muaudit.defaults import DEFAULT_RETAIN_SAMPLE
from muaudit.outputs import OutputStore, indices_digest, retain_sample
from muaudit.training import derive_seed, fresh_model
from muaudit.zoo import check_statistics


@dataclass(frozen=True)
class TrainedModel:
    """A model trained by muaudit with its seed and how long its training took."""

    model: nn.Module
    seed: int
    train_seconds: float
    from_cache: bool


@dataclass
class AuditSetup:
    """Everything shared by the methods audited on one task: data, original and gold models, cached logits."""

    task: Task
    data: DataBundle
    original: nn.Module
    original_source: dict[str, Any]
    golds: list[TrainedModel]
    device: torch.device
    cache: TensorCache
    progress: bool = False
    retain_sample_size: int | None = DEFAULT_RETAIN_SAMPLE
    phases: PhaseTimer = field(default_factory=PhaseTimer, repr=False)
    _outputs: OutputStore | None = field(default=None, repr=False)
    _attack_memo: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    _attack_instances: dict[tuple[str, str], MembershipAttack] = field(default_factory=dict, repr=False)
    _bank: Any = field(default=None, repr=False)

    @cached_property
    def train(self) -> Split:
        """D as the original model saw it (flipped labels on a label-flip poisoning task)."""
        return self.task.training_split(self.data)

    @cached_property
    def profile(self) -> TaskProfile:
        """The task's scale, from which methods' ``preset="auto"`` defaults are resolved."""
        return profile_of(self.task, self.data)

    @cached_property
    def forget(self) -> Split:
        return self.train.subset(list(self.task.forget_indices or ()))

    @cached_property
    def retain(self) -> Split:
        mask = np.ones(len(self.train), dtype=bool)
        mask[list(self.task.forget_indices or ())] = False
        return self.train.subset(np.flatnonzero(mask))

    @cached_property
    def _retain_eval(self) -> tuple[Split, np.ndarray]:
        return retain_sample(self.retain, self.retain_sample_size, self.task.seed)

    @property
    def retain_eval(self) -> Split:
        """The retain evaluation set of readouts and attacks: a fixed, seeded sample of D_r (all of D_r when it is
        smaller than ``retain_sample_size`` or that is ``None``); methods always get all of D_r."""
        return self._retain_eval[0]

    @property
    def retain_sampled(self) -> bool:
        return len(self.retain_eval) < len(self.retain)

    def outputs(self, model: nn.Module) -> ModelOutputs:
        """Logits of ``model`` on D_f, the retain evaluation set and the test split: one inference pass per model
        per audit, and none for an original or gold model whose outputs the cache already holds."""
        if self._outputs is None:
            self._outputs = OutputStore(self.cache, self.device)
        splits = (self.forget, self.retain_eval, self.data.test)
        reused = model is self.original or any(model is g.model for g in self.golds)
        return self._outputs.get(model, splits, self.outputs_identity(model) if reused else None)

    def _outputs_identity(self) -> dict[str, Any]:
        return {"task_hash": self.task.content_hash(), "retain_eval": indices_digest(self._retain_eval[1]),
                "retain_eval_count": len(self.retain_eval)}

    def outputs_identity(self, model: nn.Module) -> dict[str, Any]:
        """What a model's outputs on this set-up's evaluation sets are a function of (a cache key part)."""
        return {"state_sha256": state_dict_sha256(model.state_dict()), **self._outputs_identity()}


# ---------------------------------------------------------------------------------- model sources
def versions() -> dict[str, str]:
    """Versions of Python and the numerical stack, for provenance."""
    import scipy
    import sklearn

    from muaudit import __version__

    return {"muaudit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}


def checkpoint_metadata(task: Task, role: str, seed: int, train_seconds: float) -> dict[str, Any]:
    return {"role": role, "task": task.to_dict(), "task_hash": task.content_hash(), "arch": task.model.arch,
            "seed": seed, "train_seconds": train_seconds, "versions": versions()}


def _train_cached(bank: ShadowBank, indices: np.ndarray, role: str, seed: int) -> TrainedModel:
    """One model through the shadow bank, trained one by one (bit-identical to ``train_from_scratch``, timed)."""
    request = ModelRequest(role, indices, seed)
    trained_before = bank.n_trained
    model = bank.models([request], trainer="sequential")[0]
    meta = bank.metadata(request, trainer="sequential") or {}
    return TrainedModel(model, seed, float(meta.get("train_seconds", float("nan"))), bank.n_trained == trained_before)


def train_original(bank: ShadowBank) -> TrainedModel:
    """The original model: the task's recipe on the whole training set D (cached in the bank)."""
    return _train_cached(bank, np.arange(bank.n_train), "original", derive_seed(bank.task.seed, "original"))


def gold_seeds(task: Task, count: int) -> list[int]:
    return [derive_seed(task.seed, "gold", j) for j in range(count)]


def train_golds(bank: ShadowBank, count: int) -> list[TrainedModel]:
    """``count`` gold models: fresh initialisation of every layer, the same recipe, on D_r only (cached)."""
    if count < 1:
        raise TaskError("at least one gold model is needed (--gold-seeds >= 1)")
    forget = np.asarray(bank.task.forget_indices or (), dtype=np.int64)
    retain = np.setdiff1d(np.arange(bank.n_train), forget)
    requests = [ModelRequest("gold", retain, s) for s in gold_seeds(bank.task, count)]
    models = bank.models(requests, trainer="sequential")  # the misses together: an executor may spread them
    out = []
    for request, model in zip(requests, models):
        meta = bank.metadata(request, trainer="sequential") or {}
        hit = bank.cache.key(bank.model_config(request, "sequential")) not in bank.last_trained
        out.append(TrainedModel(model, request.seed, float(meta.get("train_seconds", float("nan"))), hit))
    return out


def original_from_checkpoint(ckpt: Checkpoint, task: Task | None, arch: str | None,
                             data_root: str | None) -> tuple[Task, dict[str, Any]]:
    """Resolve the task of a checkpoint: its own metadata, or ``task``/``arch`` for a bare state dict.

    The recorded source names the file and its SHA-256, not the path as typed, so the scorecard does not depend
    on the working directory."""
    record = {"kind": "checkpoint", "file": Path(ckpt.path).name, "sha256": ckpt.sha256}
    if ckpt.metadata is not None and "task" in ckpt.metadata:
        own = _checkpoint_task(ckpt).with_data_root(data_root)
        if task is not None and spec_key(task) != spec_key(own):
            raise TaskError(f"{ckpt.path} was trained on task {own.name!r}, which differs from the --task given")
        if arch is not None and arch != own.model.arch:
            raise CheckpointError(f"{ckpt.path} holds a {own.model.arch!r} model, not {arch!r}")
        return own, {**record, "bare": False}
    if task is None:
        raise CheckpointError(f"{ckpt.path} is a bare state dict without muaudit metadata: pass --task (and --arch)")
    if arch is not None:
        task = replace(task, model=ModelSpec(arch, task.model.options, task.model.normalize))
    return task.with_data_root(data_root), {**record, "bare": True}


def _checkpoint_task(ckpt: Checkpoint) -> Task:
    """The task in a checkpoint's metadata, valid and matching the metadata's ``task_hash`` (when recorded)."""
    meta = ckpt.metadata or {}
    try:
        task = Task.from_dict(meta["task"])
    except TaskError as exc:
        raise CheckpointError(f"{ckpt.path}: the task in its metadata is invalid: {exc}") from None
    if "task_hash" not in meta:
        return task
    recorded = meta["task_hash"]
    if not isinstance(recorded, str):
        raise CheckpointError(f"{ckpt.path}: metadata task_hash must be a string, got {type(recorded).__name__}")
    if not task.is_materialised:
        raise CheckpointError(f"{ckpt.path}: metadata records a task_hash but its task has no forget indices "
                              "and data fingerprint to hash")
    actual = task.content_hash()
    if recorded != actual:
        raise CheckpointError(f"{ckpt.path}: metadata task_hash {recorded[:12]} does not match the hash of its "
                              f"task ({actual[:12]}); the metadata was altered or is corrupt")
    return task


def _load_original(task: Task, data: DataBundle, ckpt: Checkpoint, adapter: StateAdapter
                   ) -> tuple[nn.Module, tuple[str, ...]]:
    """The checkpoint's weights in the task's architecture, through ``adapter`` (:mod:`muaudit.adapt`); a key
    mismatch names the options that would fix it."""
    model = fresh_model(task, data, 0)
    template = model.state_dict()
    if adapter.normalize is None and task.model.normalize == "none":  # the task declares raw inputs
        adapter = replace(adapter, normalize="data")
    adapted = adapt(ckpt.state_dict, template, adapter, ckpt.path)
    try:
        load_into(model, adapted.state, ckpt.path)
    except CheckpointError as exc:
        hint = suggest(ckpt.state_dict, template)
        raise CheckpointError(f"{exc}; {'try ' + hint if hint else 'see --strip-prefix, --key-map, --arch-factory'}"
                              ) from None
    check_statistics(model, ckpt.path)
    return model, adapted.notes


def prepare(task: Task | None, checkpoint: str | Path | Checkpoint | None = None, arch: str | None = None,
            data_root: str | None = None, gold_count: int = 2, cache: TensorCache | None = None,
            device: torch.device | None = None, progress: bool = False,
            retain_sample_size: int | None = DEFAULT_RETAIN_SAMPLE, adapter: StateAdapter | None = None,
            executor: Any = None) -> AuditSetup:
    """Load data, the original model and the gold models.

    The original comes from ``checkpoint`` (whose metadata names its task; a bare state dict needs ``task``) or,
    without one, is trained (and cached) from ``task``, which defaults to the named ``digits`` task.
    ``gold_count=0`` prepares everything but the gold models (``muaudit tune`` must never see them).
    ``retain_sample_size`` bounds the retain evaluation set of readouts and attacks (``None``: all of D_r).
    ``checkpoint`` may also be an in-memory :class:`~muaudit.checkpoint.Checkpoint`; ``adapter`` says how to read
    a foreign state dict (:mod:`muaudit.adapt`; the steps taken are recorded in ``original_source["adapted"]``).
    ``executor`` trains the bank's missing models (:mod:`muaudit.engine`; default: in this process).
    """
    from muaudit.task import NAMED_TASKS

    cache, device, timer = cache or TensorCache(), device or torch.device("cpu"), PhaseTimer()
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else (load_checkpoint(checkpoint) if checkpoint else None)
    source: dict[str, Any] = {"kind": "trained"}
    if ckpt is not None:
        task, source = original_from_checkpoint(ckpt, task, arch, data_root)
    else:
        task = (task or NAMED_TASKS["digits"]).with_data_root(data_root)
    with timer("data_load"):
        data = task.dataset.load()
        task = task.materialise(data)
    bank = ShadowBank(task, data, cache, device, progress=progress, executor=executor)
    with timer("original"):
        if ckpt is not None:
            original, notes = _load_original(task, data, ckpt, adapter or StateAdapter())
            if notes:
                source["adapted"] = list(notes)
            original = original.to(device).eval()
        else:
            trained = train_original(bank)
            original = trained.model
            source["train_seconds"] = trained.train_seconds
    source["state_sha256"] = state_dict_sha256(original.state_dict())
    setup = AuditSetup(task, data, original, source, [], device, cache, progress, retain_sample_size,
                       phases=timer, _bank=bank)
    return add_golds(setup, gold_count) if gold_count else setup


def add_golds(setup: AuditSetup, count: int) -> AuditSetup:
    """Train (or load) the gold models of a set-up prepared without them (``prepare(..., gold_count=0)``), e.g.
    after ``muaudit tune``, which must run before the audited forget set's gold models exist."""
    with setup.phases("golds"):
        setup.golds = train_golds(shadow_bank(setup), count)
    return setup


def shadow_bank(setup: AuditSetup) -> ShadowBank:
    """The audit's :class:`~muaudit.shadows.ShadowBank`: it trained the original and gold models and serves
    every extra model (shadows, challenge golds, unlearned shadows)."""
    if setup._bank is None:
        setup._bank = ShadowBank(setup.task, setup.data, setup.cache, setup.device, progress=setup.progress)
    return setup._bank
