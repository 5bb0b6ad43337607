"""Bring your own checkpoint: map a state dict's keys onto muaudit's model, and declare its normalisation.

muaudit's models are ``ZooModel(normalize, net)``: the keys are ``net.<layer keys>`` plus the normalisation buffers
``normalize.mean``/``normalize.std``. A state dict saved from a user's own training code usually differs. A
:class:`StateAdapter` rewrites it, in this order:

1. ``strip_prefix``: remove each prefix (e.g. ``module.`` left by ``DataParallel``);
2. ``key_map``: rename keys, either a built-in map (:data:`BUILTIN_KEY_MAPS`, e.g. ``kuangliu-resnet18``), a
   JSON file ``{"rename": {"old": "new"}, "patterns": [["regex", "replacement"], ...]}`` (exact renames first,
   then each pattern with :func:`re.sub`, in order), or ``order``: the i-th tensor of the checkpoint becomes the
   i-th tensor of the model, which is accepted only when every shape matches (e.g. an MLP saved without the zoo's
   leading ``Flatten``, whose layer indices are shifted by one);
3. the ``net.`` prefix is added when the keys carry none and every key then belongs to the model;
4. ``normalize``: the normalisation the model was trained with, when the checkpoint holds no ``normalize.*``
   buffers: ``"none"`` (inputs used as they are: mean 0, std 1), ``"data"`` (what muaudit's own models of the
   task use: the training-set statistics, or none when the task's ``model.normalize`` is ``"none"``), or explicit
   per-channel ``(mean, std)``. It is never guessed: a model trained on raw inputs and one trained on standardised
   inputs need different values. A task whose ``[model]`` says ``normalize = "none"`` declares it for the
   original *and* the gold models, which is what a model trained on raw inputs needs: with ``--normalize none``
   alone, the gold models would still be trained on standardised inputs.

Every step taken is recorded (:attr:`AdaptedState.notes`) and goes into the scorecard's provenance. When the keys
still do not match, :func:`suggest` names the options that would make them match.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from muaudit.errors import CheckpointError

#: Key maps for common public layouts (keys after any ``strip_prefix``).
BUILTIN_KEY_MAPS: dict[str, dict[str, Any]] = {
    # torchvision's ResNet-18 names its layers as the zoo does: only muaudit's "net." prefix is missing (use
    # the zoo option stem="imagenet" for torchvision's 7x7 stem and max-pool).
    "torchvision-resnet18": {"patterns": [["^", "net."]]},
    # github.com/kuangliu/pytorch-cifar: shortcut -> downsample, linear -> fc.
    "kuangliu-resnet18": {"patterns": [[r"\.shortcut\.", ".downsample."], [r"^linear\.", "fc."], ["^", "net."]]},
}
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")


@dataclass(frozen=True)
class StateAdapter:
    """How to read a foreign state dict (see the module docstring)."""

    strip_prefix: tuple[str, ...] = ()
    key_map: str | None = None  # a built-in name, "order", or a JSON file path
    normalize: str | tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if self.key_map is not None and self.key_map != "order" and self.key_map not in BUILTIN_KEY_MAPS:
            _read_key_map(self.key_map)  # a missing or malformed file fails before any work

    @property
    def active(self) -> bool:
        return bool(self.strip_prefix) or self.key_map is not None or self.normalize is not None

    def describe(self) -> dict[str, Any]:
        normalize = self.normalize if isinstance(self.normalize, str) or self.normalize is None else \
            {"mean": list(self.normalize[0]), "std": list(self.normalize[1])}
        return {"strip_prefix": list(self.strip_prefix), "key_map": self.key_map, "normalize": normalize}


@dataclass(frozen=True)
class AdaptedState:
    """A state dict rewritten for the model, and the steps that were taken."""

    state: dict[str, torch.Tensor]
    notes: tuple[str, ...]


def parse_normalize(text: str) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """``none``, ``data`` or ``MEAN[,MEAN...]/STD[,STD...]`` (one value per channel)."""
    if text in ("none", "data"):
        return text
    mean, sep, std = text.partition("/")
    try:
        values = tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError:
        values = None
    if not sep or values is None or len(values[0]) != len(values[1]) or not all(s > 0 for s in values[1]):
        raise CheckpointError(f"--normalize must be 'none', 'data' or MEAN[,MEAN...]/STD[,STD...] with positive "
                              f"std values, got {text!r}")
    return values


def adapt(state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor], adapter: StateAdapter,
          source: str) -> AdaptedState:
    """Rewrite ``state`` for a model whose own state dict is ``template`` (module docstring)."""
    notes: list[str] = []
    out = dict(state)
    for prefix in adapter.strip_prefix:
        if any(k.startswith(prefix) for k in out):
            out = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in out.items()}
            notes.append(f"stripped prefix {prefix!r}")
    if adapter.key_map is not None:
        out = _apply_key_map(out, template, adapter.key_map, source)
        notes.append(f"key map {adapter.key_map!r}")
    if out and not any(k.startswith("net.") for k in out):
        prefixed = {f"net.{k}": v for k, v in out.items() if not k.startswith("normalize.")}
        if set(prefixed) <= set(template):
            out = {**{k: v for k, v in out.items() if k.startswith("normalize.")}, **prefixed}
            notes.append("added muaudit's 'net.' prefix")
    missing_norm = [k for k in NORMALIZE_KEYS if k in template and k not in out]
    network_matches = {k for k in out if not k.startswith("normalize.")} == \
        {k for k in template if not k.startswith("normalize.")}
    if missing_norm and network_matches:  # otherwise the key mismatch is the error to report
        if adapter.normalize is None:
            raise CheckpointError(f"{source}: holds no normalisation buffers ({', '.join(missing_norm)}); declare "
                                  f"how its inputs were normalised with --normalize none|data|MEAN/STD")
        filled = _normalisation(adapter.normalize, template)
        out.update(filled)
        notes.append(f"normalisation declared: {_describe_norm(adapter.normalize)} (mean "
                     f"{[round(v, 4) for v in filled['normalize.mean'].flatten().tolist()]}, std "
                     f"{[round(v, 4) for v in filled['normalize.std'].flatten().tolist()]})")
    return AdaptedState(out, tuple(notes))


def _apply_key_map(state: dict[str, torch.Tensor], template: Mapping[str, torch.Tensor], key_map: str,
                   source: str) -> dict[str, torch.Tensor]:
    if key_map == "order":
        return _by_order(state, template, source)
    spec = BUILTIN_KEY_MAPS.get(key_map) or _read_key_map(key_map)
    renames: Mapping[str, str] = spec.get("rename", {})
    out = {renames.get(k, k): v for k, v in state.items()}
    for pattern, replacement in spec.get("patterns", []):
        out = {re.sub(pattern, replacement, k, count=1): v for k, v in out.items()}
    return out


def _read_key_map(path: str) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"--key-map {path}: no such file, and not a built-in map (built-in: "
                              f"{', '.join([*BUILTIN_KEY_MAPS, 'order'])})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"--key-map {path}: cannot be read as JSON: {exc}") from None
    ok = isinstance(raw, dict) and set(raw) <= {"rename", "patterns"} and \
        isinstance(raw.get("rename", {}), dict) and isinstance(raw.get("patterns", []), list) and \
        all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in raw.get("patterns", []))
    if not ok:
        raise CheckpointError(f"--key-map {path}: expected {{\"rename\": {{old: new}}, \"patterns\": "
                              f"[[regex, replacement], ...]}}")
    for pattern, _ in raw.get("patterns", []):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CheckpointError(f"--key-map {path}: invalid pattern {pattern!r}: {exc}") from None
    return raw


def _by_order(state: dict[str, torch.Tensor], template: Mapping[str, torch.Tensor], source: str
              ) -> dict[str, torch.Tensor]:
    """The i-th tensor of ``state`` named as the i-th tensor of the model (normalisation buffers aside)."""
    targets = [k for k in template if not k.startswith("normalize.")]
    given = [(k, v) for k, v in state.items() if not k.startswith("normalize.")]
    shapes_match = len(given) == len(targets) and all(
        tuple(v.shape) == tuple(template[t].shape) for (_, v), t in zip(given, targets))
    if not shapes_match:
        raise CheckpointError(f"{source}: --key-map order needs the same number of tensors with the same shapes in "
                              f"the same order ({len(given)} given, {len(targets)} expected)")
    kept = {k: v for k, v in state.items() if k.startswith("normalize.")}
    return {**kept, **{t: v for (_, v), t in zip(given, targets)}}


def _normalisation(normalize: str | tuple[tuple[float, ...], tuple[float, ...]],
                   template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mean_t, std_t = template["normalize.mean"], template["normalize.std"]
    if normalize == "data":
        return {"normalize.mean": mean_t.clone(), "normalize.std": std_t.clone()}
    if normalize == "none":
        return {"normalize.mean": torch.zeros_like(mean_t), "normalize.std": torch.ones_like(std_t)}
    mean, std = normalize
    channels = mean_t.numel()
    if len(mean) not in (1, channels):
        raise CheckpointError(f"--normalize gives {len(mean)} value(s) per statistic; the inputs have {channels} "
                              f"channel(s)")
    fill = (lambda v: v * channels) if len(mean) == 1 else (lambda v: v)
    return {"normalize.mean": torch.tensor(fill(mean), dtype=mean_t.dtype).reshape(mean_t.shape),
            "normalize.std": torch.tensor(fill(std), dtype=std_t.dtype).reshape(std_t.shape)}


def _describe_norm(normalize: str | tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    return {"data": "the task's", "none": "none"}.get(normalize, "explicit") if isinstance(normalize, str) \
        else "explicit"


def suggest(state: Mapping[str, torch.Tensor], template: Mapping[str, torch.Tensor]) -> str | None:
    """An adapter setting under which ``state``'s keys would match the model, as CLI options, or ``None``."""
    candidates: list[tuple[str, StateAdapter]] = [("", StateAdapter())]
    if any(k.startswith("module.") for k in state):
        candidates.append(("--strip-prefix module.", StateAdapter(("module.",))))
    candidates += [(f"--key-map {name}", StateAdapter(key_map=name)) for name in BUILTIN_KEY_MAPS]
    candidates += [("--key-map order", StateAdapter(key_map="order"))]
    wanted = {k for k in template if not k.startswith("normalize.")}
    for options, adapter in candidates:
        try:
            mapped = adapt(state, template, StateAdapter(adapter.strip_prefix, adapter.key_map, "data"), "")
        except CheckpointError:
            continue
        if {k for k in mapped.state if not k.startswith("normalize.")} == wanted and all(
                tuple(mapped.state[k].shape) == tuple(template[k].shape) for k in wanted):
            needs_norm = not any(k in state for k in NORMALIZE_KEYS)
            text = " ".join(filter(None, [options, "--normalize none|data|MEAN/STD" if needs_norm else ""]))
            return text or None
    return None


def key_differences(state: Sequence[str], template: Sequence[str]) -> str:
    """A short account of the first missing and unexpected keys."""
    missing = sorted(set(template) - set(state))[:2]
    unexpected = sorted(set(state) - set(template))[:2]
    return f"e.g. missing {missing}, unexpected {unexpected}"
