"""Model outputs, computed once: one inference pass per model per audit, cached on disk for reused models.

Every readout and every attack of an audit derives from one :class:`~muaudit.base.ModelOutputs` per model: the
logits on D_f, on the retain evaluation set (a fixed, seeded sample of D_r, see :func:`retain_sample`) and on the
test split. :class:`OutputStore` memoises them in memory for every model (weakly keyed, so an unlearned model's
outputs go with it) and, for the models an audit reuses (the original and the gold models), on disk in the model
cache, content-addressed by the task hash, the model's state hash and the evaluation sets; a stored entry whose
configuration or tensor digest does not match is recomputed, never used (:class:`~muaudit.cache.TensorCache`).

Inference is :func:`muaudit.training.predict_logits` (a batch size chosen by measurement). :data:`PASSES` counts the passes (tests and ``reports/scripts/bench_audit.py`` read it).
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Any, MutableMapping

import numpy as np
import torch
from torch import nn

from muaudit.base import ModelOutputs
from muaudit.cache import TensorCache
from muaudit.data import Split
from muaudit.training import derive_seed, predict_logits

OUTPUTS_SCHEMA = 1


@dataclass
class PassCounter:
    """How many inference passes (one model on D_f, the retain evaluation set and the test split) ran."""

    total: int = 0


PASSES = PassCounter()


def retain_sample(retain: Split, size: int | None, seed: int) -> tuple[Split, np.ndarray]:
    """A fixed, seeded sample of ``size`` examples of D_r (all of D_r when ``size`` is None or not smaller)."""
    if size is None or size >= len(retain):
        return retain, np.arange(len(retain))
    picked = np.sort(np.random.default_rng(derive_seed(seed, "retain-sample")).choice(len(retain), size, False))
    return retain.subset(picked), picked


class OutputStore:
    """Each model's :class:`ModelOutputs`, computed at most once per audit (and once per cache for reused models)."""

    def __init__(self, cache: TensorCache, device: torch.device) -> None:
        self.cache, self.device = cache, device
        self._memo: MutableMapping[nn.Module, ModelOutputs] = weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, splits: tuple[Split, Split, Split], identity: dict[str, Any] | None
            ) -> ModelOutputs:
        """The outputs of ``model`` on (D_f, retain evaluation set, test); ``identity`` (the model's state hash, the
        task hash and the evaluation sets) makes them persistent in the cache, ``None`` keeps them in memory only."""
        hit = self._memo.get(model)
        if hit is None:
            config = None if identity is None else self.config(identity)
            hit = self._load(config, splits) if config is not None else None
            if hit is None:
                hit = self._compute(model, splits)
                if config is not None:
                    self.cache.put(config, {"forget": hit.forget_logits, "retain": hit.retain_logits,
                                            "test": hit.test_logits})
            self._memo[model] = hit
        return hit

    def forget(self, model: nn.Module) -> None:
        """Drop a model's memoised outputs (e.g. after it was changed in place)."""
        self._memo.pop(model, None)

    def _compute(self, model: nn.Module, splits: tuple[Split, Split, Split]) -> ModelOutputs:
        PASSES.total += 1
        forget, retain, test = splits
        return ModelOutputs(predict_logits(model, forget, self.device), forget.y,
                            predict_logits(model, retain, self.device), retain.y,
                            predict_logits(model, test, self.device), test.y)

    @staticmethod
    def config(identity: dict[str, Any]) -> dict[str, Any]:
        """The cache configuration of the outputs with this identity."""
        return {"role": "outputs", "schema": OUTPUTS_SCHEMA, **identity}

    def _load(self, config: dict[str, Any], splits: tuple[Split, Split, Split]) -> ModelOutputs | None:
        hit = self.cache.get(config)
        if hit is None:
            return None
        tensors, _ = hit
        forget, retain, test = splits
        shapes_ok = all(name in tensors and tensors[name].shape[:1] == (len(split),)
                        for name, split in (("forget", forget), ("retain", retain), ("test", test)))
        if not shapes_ok:
            return None
        return ModelOutputs(tensors["forget"], forget.y, tensors["retain"], retain.y, tensors["test"], test.y)


def indices_digest(indices: np.ndarray) -> str:
    """SHA-256 of an index array (int64, little-endian): names an evaluation set in a cache key."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()
