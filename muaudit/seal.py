"""Sealed plugin calls: a plugin cannot change what the audit uses afterwards, and a failing plugin is blamed by name.

Python cannot make a tensor read-only, so muaudit hands every plugin *private copies* of what it declared (the
forget, retain and validation splits, the training statistics, the outputs an attack scores) and compares each copy
with the audit's own value when the plugin returns: a plugin that modified its inputs in place violated the
contract and is reported (:class:`~muaudit.errors.PluginValidationError`, exit 3), although the audit itself was
protected by the copy. State a plugin can reach only through declared services (the shadow bank of a shadow-model
attack) is fingerprinted before and after the call (:class:`AuditFingerprint`).

:func:`plugin_call` runs one hook (``__init__``, ``unlearn``, ``compute_train_stats``, ``score``) and turns anything
it raises, including ``SystemExit`` (plugin code must not be able to end the audit, let alone as a success), into a
:class:`~muaudit.errors.PluginFailure` that names the plugin, its distribution and the hook. ``KeyboardInterrupt``
passes through: the user, not the plugin, stopped the run. So does a :class:`~muaudit.errors.ParameterError` from
a method's constructor, preset resolution or ``unlearn``: it is the documented way to reject a value the user gave
(e.g. EU-k's ``k`` larger than the model), so it stays the user's error (exit 2).
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import torch

from muaudit.base import ModelOutputs
from muaudit.data import Split
from muaudit.errors import MuauditError, PluginError, PluginFailure, PluginValidationError


# ----------------------------------------------------------------------------------------- copies
def clone_tensors(mapping: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in mapping.items()}


def clone_outputs(outputs: ModelOutputs) -> ModelOutputs:
    return ModelOutputs(*(getattr(outputs, f).clone() for f in ModelOutputs.__dataclass_fields__))


# -------------------------------------------------------------------------------------- comparisons
def split_changes(label: str, given: Split, reference: Split) -> list[str]:
    """Names of the fields of ``given`` that no longer equal ``reference`` (e.g. ``data.forget.x``)."""
    fields = [("x", given.x, reference.x), ("y", given.y, reference.y)]
    if reference.fine is not None:
        fields.append(("fine", given.fine, reference.fine))
    return [f"{label}.{name}" for name, a, b in fields if not _same(a, b)]


def tensors_changes(label: str, given: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> list[str]:
    if set(given) != set(reference):
        return [f"{label} (keys)"]
    return [f"{label}[{k!r}]" for k in reference if not _same(given[k], reference[k])]


def outputs_changes(label: str, given: ModelOutputs, reference: ModelOutputs) -> list[str]:
    return [f"{label}.{f}" for f in ModelOutputs.__dataclass_fields__
            if not _same(getattr(given, f), getattr(reference, f))]


def _same(a: Any, b: torch.Tensor) -> bool:
    """Equal shape, dtype and values (NaN equal to NaN: a NaN the audit itself holds is no mutation)."""
    if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a, b)) or (a.is_floating_point() and bool(torch.equal(a.nan_to_num(), b.nan_to_num())))


def report_mutation(where: str, changed: Iterable[str]) -> None:
    """Raise :class:`PluginValidationError` if any input was modified in place."""
    changed = list(changed)
    if changed:
        raise PluginValidationError(f"{where} modified its input {', '.join(changed)} in place; plugins must not "
                                    f"modify what they are given (the audit used its own copy)")


# ------------------------------------------------------------------------------------- fingerprints
@dataclass(frozen=True)
class AuditFingerprint:
    """SHA-256 digests of the audit's own tensors (data splits, original and gold weights), to detect a plugin
    that reached them through a declared service and changed them."""

    digests: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, named: Iterable[tuple[str, torch.Tensor]]) -> "AuditFingerprint":
        return cls(tuple((name, _digest(t)) for name, t in named))

    def changed(self, named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
        now = dict(AuditFingerprint.of(named).digests)
        return [name for name, digest in self.digests if now.get(name) != digest]


def audit_tensors(setup: Any) -> list[tuple[str, torch.Tensor]]:
    """The audit's own tensors (of an :class:`~muaudit.models.AuditSetup`): the data splits, D_f and D_r, and the
    original's and every gold model's weights; what no plugin may change."""
    named: list[tuple[str, torch.Tensor]] = []
    for label, part in (("data.train", setup.data.train), ("data.val", setup.data.val),
                        ("data.test", setup.data.test), ("forget", setup.forget), ("retain", setup.retain)):
        named += [(f"{label}.x", part.x), (f"{label}.y", part.y)]
    models = [("original", setup.original), *((f"gold {j}", g.model) for j, g in enumerate(setup.golds))]
    for label, model in models:
        named += [(f"{label} {k}", v) for k, v in model.state_dict().items()]
    return named


def _digest(tensor: torch.Tensor) -> str:
    array = tensor.detach().cpu().contiguous().numpy()
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8)).hexdigest()


# ------------------------------------------------------------------------------------------ guards
@contextmanager
def plugin_call(where: str, hook: str, passthrough: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Run one plugin hook; whatever it raises becomes a :class:`PluginFailure` naming ``where`` and ``hook``.

    ``where`` is the plugin's description (:meth:`muaudit.plugins.PluginSpec.describe`: kind, name, distribution
    and version). muaudit's own plugin errors (an undeclared need, a contract violation) keep their message and
    gain the hook; any other muaudit error raised inside plugin code (e.g. a ``TaskError``) is the plugin's
    failure, not the user's task's. Exceptions of the ``passthrough`` types (e.g. a ``ParameterError`` for a value
    the user gave) are re-raised unchanged.
    """
    try:
        yield
    except KeyboardInterrupt:
        raise
    except passthrough:
        raise
    except PluginError as exc:
        raise _with_hook(exc, where, hook) from None
    except SystemExit as exc:
        raise PluginFailure(f"{where} called sys.exit({exc.code!r}) in {hook}; plugin code cannot end the audit"
                            ) from None
    except MuauditError as exc:
        raise PluginFailure(f"{where} failed in {hook}: {_one_line(exc)}") from None
    except BaseException as exc:  # noqa: B036 - any exception from plugin code is the plugin's failure
        raise PluginFailure(f"{where} raised {type(exc).__name__} in {hook}: {_one_line(exc)}") from None


def _with_hook(exc: PluginError, where: str, hook: str) -> PluginError:
    message = str(exc)
    if where not in message:
        message = f"{where} in {hook}: {message}"
    return type(exc)(message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "(no message)")[:300]
