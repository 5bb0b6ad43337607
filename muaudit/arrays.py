"""Per-example arrays of an audit: attack scores, D_f losses and entropies, and thumbnails of D_f images.

They are what the plots of :mod:`muaudit.report` and a researcher's own analyses need, and are too large for the
scorecard JSON: ``muaudit score --out`` writes them as ``arrays.npz`` (every model's full-resolution ROC goes to
``roc.npz``); both load with ``numpy.load(path, allow_pickle=False)``. Keys of ``arrays.npz`` (``ROLE`` is
``unlearned``, ``original`` or ``gold_<j>``; a comparison has ``unlearned:<method>`` for each method):

- ``forget/indices`` (int64, n_f): D_f's positions in the training split; position ``i`` of every D_f array is
  example ``forget/indices[i]``; ``forget/labels`` (int64, n_f): D_f's labels as the original model saw them;
- ``forget/loss/ROLE``, ``forget/entropy/ROLE`` (float64, n_f): each model's cross-entropy (nats) and softmax
  entropy (nats) on every D_f example;
- ``scores/ATTACK/ROLE/members`` (float64) and ``.../nonmembers`` (float64): the attack's scores (higher = member),
  ``.../member_positions`` (int64): the D_f position of each member score;
- ``thumbnails/images`` (uint8, k x H x W x C) and ``thumbnails/positions`` (int64, k): the most exposed D_f
  examples, where the data are images.

``roc.npz`` holds ``ATTACK/ROLE/fpr`` and ``ATTACK/ROLE/tpr`` (float64), from :func:`muaudit.metrics.roc_points`.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

ARRAYS_FILE = "arrays.npz"
ROC_FILE = "roc.npz"


@dataclass(frozen=True)
class Scores:
    """One attack's scores on one model: members (D_f, or the part the attack scored) and non-members."""

    members: np.ndarray
    nonmembers: np.ndarray
    member_positions: np.ndarray

    @classmethod
    def of(cls, members: np.ndarray, nonmembers: np.ndarray, positions: object = None) -> "Scores":
        where = np.arange(len(members)) if positions is None else np.asarray(positions)
        return cls(np.asarray(members, dtype=np.float64), np.asarray(nonmembers, dtype=np.float64),
                   where.astype(np.int64))

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {"members": self.members, "nonmembers": self.nonmembers, "member_positions": self.member_positions}

    def digest(self) -> str:
        """SHA-256 of the three arrays (dtype, shape and bytes): validates a cached copy."""
        return arrays_digest(self.as_arrays())

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (FPR, TPR) point of the ROC curve."""
        from muaudit.metrics import roc_points

        return roc_points(self.members, self.nonmembers)


@dataclass(frozen=True)
class AuditArrays:
    """The per-example arrays of one audit (or of a comparison, with one ``unlearned:<method>`` role per method).

    ``roles`` orders the models: the unlearned model(s), the original, then each gold model (``gold_<j>``).
    """

    roles: tuple[str, ...]
    forget_indices: np.ndarray
    forget_labels: np.ndarray
    loss: Mapping[str, np.ndarray]
    entropy: Mapping[str, np.ndarray]
    scores: Mapping[str, Mapping[str, Scores]]  # attack -> role -> scores
    thumbnails: np.ndarray | None = None
    thumbnail_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def golds(self) -> tuple[str, ...]:
        return tuple(r for r in self.roles if r.startswith("gold_"))

    @property
    def unlearned(self) -> tuple[str, ...]:
        return tuple(r for r in self.roles if r.startswith("unlearned"))

    def thumbnail(self, position: int) -> np.ndarray | None:
        """The image of D_f example ``position`` (H x W x C, uint8), when it was kept."""
        if self.thumbnails is None:
            return None
        hit = np.flatnonzero(self.thumbnail_positions == position)
        return self.thumbnails[hit[0]] if len(hit) else None

    # ------------------------------------------------------------------------------ npz
    def to_npz(self) -> dict[str, np.ndarray]:
        """The ``arrays.npz`` entries (see the module doc)."""
        out = {"roles": np.asarray(self.roles, dtype=str), "forget/indices": self.forget_indices.astype(np.int64),
               "forget/labels": self.forget_labels.astype(np.int64)}
        for role in self.roles:
            out[f"forget/loss/{role}"] = self.loss[role]
            out[f"forget/entropy/{role}"] = self.entropy[role]
        for attack, per_role in self.scores.items():
            for role, scores in per_role.items():
                out.update({f"scores/{attack}/{role}/{k}": v for k, v in scores.as_arrays().items()})
        if self.thumbnails is not None:
            out["thumbnails/images"] = self.thumbnails
            out["thumbnails/positions"] = self.thumbnail_positions.astype(np.int64)
        return out

    def roc_npz(self) -> dict[str, np.ndarray]:
        """The ``roc.npz`` entries: every model's ROC curve at full resolution."""
        out = {}
        for attack, per_role in self.scores.items():
            for role, scores in per_role.items():
                out[f"{attack}/{role}/fpr"], out[f"{attack}/{role}/tpr"] = scores.roc()
        return out

    @classmethod
    def from_npz(cls, raw: Mapping[str, np.ndarray]) -> "AuditArrays":
        """Rebuild from the entries of an ``arrays.npz`` (e.g. ``numpy.load(path, allow_pickle=False)``)."""
        roles = tuple(str(r) for r in raw["roles"])
        scores: dict[str, dict[str, Scores]] = {}
        for key in raw:
            parts = key.split("/")
            if parts[0] == "scores" and len(parts) == 4 and parts[3] == "members":
                prefix = "/".join(parts[:3])
                scores.setdefault(parts[1], {})[parts[2]] = Scores(
                    raw[key], raw[f"{prefix}/nonmembers"], raw[f"{prefix}/member_positions"])
        images = raw["thumbnails/images"] if "thumbnails/images" in raw else None
        positions = raw["thumbnails/positions"] if "thumbnails/positions" in raw else np.zeros(0, dtype=np.int64)
        return cls(roles, raw["forget/indices"], raw["forget/labels"],
                   {r: raw[f"forget/loss/{r}"] for r in roles}, {r: raw[f"forget/entropy/{r}"] for r in roles},
                   scores, images, positions)

    @classmethod
    def load(cls, path: str) -> "AuditArrays":
        with np.load(path, allow_pickle=False) as raw:
            return cls.from_npz({k: raw[k] for k in raw.files})


def merge_for_comparison(named: Iterable[tuple[str, AuditArrays]]) -> AuditArrays | None:
    """One :class:`AuditArrays` for a comparison: each method's unlearned model as ``unlearned:<method>``, and the
    original and gold models (shared by every method) once. ``None`` when no method has arrays."""
    items = [(name, a) for name, a in named if a is not None]
    if not items:
        return None
    first = items[0][1]
    shared = [r for r in first.roles if not r.startswith("unlearned")]
    roles = tuple(f"unlearned:{name}" for name, _ in items) + tuple(shared)

    def merged(get: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {f"unlearned:{n}": getattr(a, get)["unlearned"] for n, a in items}
        return out | {r: getattr(first, get)[r] for r in shared}

    scores = {attack: {f"unlearned:{n}": a.scores[attack]["unlearned"] for n, a in items if attack in a.scores}
              | {r: per_role[r] for r in shared} for attack, per_role in first.scores.items()}
    images, positions = _union_thumbnails([a for _, a in items])
    return AuditArrays(roles, first.forget_indices, first.forget_labels, merged("loss"), merged("entropy"), scores,
                       images, positions)


def _union_thumbnails(arrays: list[AuditArrays]) -> tuple[np.ndarray | None, np.ndarray]:
    kept: dict[int, np.ndarray] = {}
    for a in arrays:
        if a.thumbnails is not None:
            kept.update({int(p): img for p, img in zip(a.thumbnail_positions, a.thumbnails) if int(p) not in kept})
    if not kept:
        return None, np.zeros(0, dtype=np.int64)
    order = sorted(kept)
    return np.stack([kept[p] for p in order]), np.asarray(order, dtype=np.int64)


def thumbnails(x: np.ndarray, positions: Iterable[int]) -> tuple[np.ndarray | None, np.ndarray]:
    """uint8 H x W x C images of D_f examples ``positions`` of ``x`` (N x C x H x W with C = 1 or 3), or ``None``
    when the inputs are not images. Values in [0, 1] are scaled by 255; others are min-max scaled together."""
    picked = np.asarray(sorted(set(int(p) for p in positions)), dtype=np.int64)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or min(x.shape[2:]) < 4 or len(picked) == 0:
        return None, np.zeros(0, dtype=np.int64)
    images = np.asarray(x[picked], dtype=np.float64).transpose(0, 2, 3, 1)
    low, high = min(0.0, float(images.min())), max(1.0, float(images.max()))
    scaled = np.round((images - low) / (high - low) * 255.0)
    return np.clip(scaled, 0, 255).astype(np.uint8), picked


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the named arrays' names, dtypes, shapes and bytes (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The arrays as the bytes of a compressed ``.npz`` file (no pickled objects)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(arrays))
    return buffer.getvalue()
