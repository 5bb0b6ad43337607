"""The bad-input catalogue: every hostile or broken input gets one clear line and its documented exit code.

Each case runs ``muaudit.cli.main`` in-process and asserts: exactly one stderr line, starting ``muaudit: error:``
and naming the problem; exit code 2 (user error) or 3 (plugin error); no traceback; nothing written where
``--out`` points. Inputs are small files generated per case. One tiny digits model (an MLP with 16 hidden units
trained for one epoch) is trained per module, so the whole catalogue runs in seconds.

Groups: checkpoints, checkpoint metadata, task files, ``.npz`` data, command-line options and environment.
A few cases also run as a subprocess, where warnings are not captured by pytest, to show that nothing but the
one line reaches stderr.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from muaudit.checkpoint import META_KEY
from muaudit.cli import main

# ------------------------------------------------------------------------------------------------ inputs
TINY_TASK: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "digits"},
    "forget": {"kind": "random", "fraction": 0.1},
    "model": {"arch": "mlp", "options": {"hidden": 16}},
    "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05},
}
TINY_POISON = {**TINY_TASK, "name": "tiny-poison",
               "forget": {"kind": "label-flip", "cls": 3, "count": 10, "target": 8}}


@dataclass(frozen=True)
class Env:
    """What a case builds its inputs from: a private folder, the shared cache and two trained checkpoints."""

    folder: Path
    cache: Path
    original: Path
    poison: Path


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def to_toml(task: dict[str, Any]) -> str:
    """A TOML rendering of a task dictionary (scalars first, then one table per section)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in task.items() if not isinstance(v, dict)]
    for section, values in task.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def edited(base: dict[str, Any], section: str | None, /, **changes: Any) -> dict[str, Any]:
    """``base`` with ``changes`` applied at the top level or inside ``section`` (``None`` values delete)."""
    task = json.loads(json.dumps(base))
    target = task if section is None else task.setdefault(section, {})
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return task


def write_task(env: Env, task: dict[str, Any], suffix: str = ".toml") -> Path:
    path = env.folder / f"task{suffix}"
    path.write_text(to_toml(task) if suffix == ".toml" else json.dumps(task))
    return path


def raw_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return dict(raw["state_dict"]), json.loads(raw[META_KEY])


def save_raw(env: Env, state: dict[str, torch.Tensor], meta: dict[str, Any] | None, name: str = "ckpt.pt"
             ) -> Path:
    path = env.folder / name
    torch.save(state if meta is None else {"state_dict": state, META_KEY: json.dumps(meta)}, path)
    return path


def rehash(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its ``task_hash`` recomputed, so that only the deliberate defect remains."""
    from muaudit.task import Task

    meta["task_hash"] = Task.from_dict(meta["task"]).content_hash()
    return meta


# ------------------------------------------------------------------------------------------ checkpoints
class Payload:
    """Pickles as a call that creates a marker file: loading it with plain pickle would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


MARKER = "PAYLOAD_RAN"
NO_CACHE_DIR = "<no --cache-dir>"


def ckpt_pickle_payload(env: Env) -> Path:
    path = env.folder / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": Payload(env.folder / MARKER)}}, handle)
    return path


def ckpt_torch_payload(env: Env) -> Path:
    path = env.folder / "evil2.pt"
    torch.save({"state_dict": {"w": Payload(env.folder / MARKER)}, META_KEY: "{}"}, path)
    return path


def ckpt_truncated(env: Env, fraction: float, suffix: str = ".pt") -> Path:
    source = env.original if suffix == ".pt" else ckpt_safetensors(env)
    data = source.read_bytes()
    path = env.folder / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def ckpt_safetensors(env: Env, change: Callable[[dict[str, torch.Tensor]], None] | None = None,
                     meta_text: str | None = None) -> Path:
    from safetensors.torch import save_file

    state, meta = raw_checkpoint(env.original)
    if change is not None:
        change(state)
    path = env.folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path),
              metadata={META_KEY: json.dumps(meta) if meta_text is None else meta_text})
    return path


def ckpt_state(env: Env, change: Callable[[dict[str, torch.Tensor]], None], bare: bool = False) -> Path:
    state, meta = raw_checkpoint(env.original)
    change(state)
    return save_raw(env, state, None if bare else meta)


def first_weight(state: dict[str, torch.Tensor]) -> str:
    return next(k for k in state if k.endswith("weight"))


def set_value(value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        key = first_weight(state)
        state[key] = state[key].clone()
        state[key][0, 0] = value
    return change


def cast(dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        key = first_weight(state)
        state[key] = state[key].to(dtype)
    return change


def drop(prefix: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
    return change


def add_key(state: dict[str, torch.Tensor]) -> None:
    state["net.extra.weight"] = torch.zeros(3)


def reshape_weight(state: dict[str, torch.Tensor]) -> None:
    key = first_weight(state)
    state[key] = state[key][:, :-1].contiguous()


def set_buffer(name: str, value: float) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[name] = torch.full_like(state[name], value)
    return change


def write_bytes(name: str, data: bytes) -> Callable[[Env], Path]:
    def make(env: Env) -> Path:
        path = env.folder / name
        path.write_bytes(data)
        return path
    return make


def torch_object(obj: Any, name: str = "obj.pt") -> Callable[[Env], Path]:
    def make(env: Env) -> Path:
        path = env.folder / name
        torch.save(obj, path)
        return path
    return make


def not_a_zip_of_tensors(env: Env) -> Path:
    path = env.folder / "zip.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"garbage")
    return path


Maker = Callable[[Env], Path]

#: ``--model`` inputs: (how to make the file, extra arguments, expected code, fragment of the message).
CHECKPOINTS: dict[str, tuple[Maker, list[str], int, str]] = {
    "missing file": (lambda e: e.folder / "nope.pt", [], 2, "checkpoint not found"),
    "a directory": (lambda e: e.folder, [], 2, "checkpoint not found"),
    "empty .pt": (write_bytes("empty.pt", b""), [], 2, "not a readable PyTorch checkpoint"),
    "empty .safetensors": (write_bytes("empty.safetensors", b""), [], 2, "not a readable safetensors file"),
    "text .pt": (write_bytes("notes.pt", b"not a checkpoint\n"), [], 2, "refused to load"),
    "text .safetensors": (write_bytes("notes.safetensors", b"not a checkpoint\n"), [], 2,
                          "not a readable safetensors"),
    "random bytes": (write_bytes("noise.pt", bytes(range(256)) * 40), [], 2, "noise.pt"),
    "json .pt": (write_bytes("j.pt", b'{"state_dict": {}}'), [], 2, "j.pt"),
    "zip without tensors": (not_a_zip_of_tensors, [], 2, "not a readable PyTorch checkpoint"),
    "truncated to half": (lambda e: ckpt_truncated(e, 0.5), [], 2, "not a readable PyTorch checkpoint"),
    "truncated to 10%": (lambda e: ckpt_truncated(e, 0.1), [], 2, "not a readable PyTorch checkpoint"),
    "truncated to 99%": (lambda e: ckpt_truncated(e, 0.99), [], 2, "not a readable PyTorch checkpoint"),
    "truncated safetensors": (lambda e: ckpt_truncated(e, 0.5, ".safetensors"), [], 2,
                              "not a readable safetensors"),
    "pickle payload": (ckpt_pickle_payload, [], 2, "refused to load"),
    "pickle payload in torch zip": (ckpt_torch_payload, [], 2, "refused to load"),
    "a tensor, not a dict": (torch_object(torch.zeros(3)), [], 2, "expected a state dict, found Tensor"),
    "a list of tensors": (torch_object([torch.zeros(3)]), [], 2, "expected a state dict, found list"),
    "empty state dict": (torch_object({}), [], 2, "the state dict is empty"),
    "non-tensor entry": (torch_object({"w": [1, 2, 3]}), [], 2, "not a state dict of tensors"),
    "nested dict entry": (torch_object({"state_dict": {"w": {"v": torch.zeros(1)}}}), [], 2,
                          "not a state dict of tensors"),
    "bare state dict without --task": (lambda e: ckpt_state(e, lambda s: None, bare=True), [], 2,
                                       "bare state dict without muaudit metadata"),
    "bare state dict of another arch": (lambda e: ckpt_state(e, lambda s: None, bare=True),
                                        ["--task", "digits", "--arch", "cnn"], 2, "does not match the architecture"),
    "bare state dict, unknown arch": (lambda e: ckpt_state(e, lambda s: None, bare=True),
                                      ["--task", "digits", "--arch", "transformer"], 2, "unknown architecture"),
    "--arch contradicts metadata": (lambda e: e.original, ["--arch", "cnn"], 2, "holds a 'mlp' model, not 'cnn'"),
    "--task contradicts metadata": (lambda e: e.original, ["--task", "digits-class"], 2,
                                    "differs from the --task given"),
    "missing layer": (lambda e: ckpt_state(e, drop("net.5")), [], 2, "does not match the architecture (missing"),
    "extra key": (lambda e: ckpt_state(e, add_key), [], 2, "unexpected 'net.extra.weight'"),
    "wrong shape": (lambda e: ckpt_state(e, reshape_weight), [], 2, "has shape"),
    "NaN weight": (lambda e: ckpt_state(e, set_value(float("nan"))), [], 2, "NaN or infinite"),
    "inf weight": (lambda e: ckpt_state(e, set_value(float("inf"))), [], 2, "NaN or infinite"),
    "-inf weight": (lambda e: ckpt_state(e, set_value(float("-inf"))), [], 2, "NaN or infinite"),
    "NaN weight in safetensors": (lambda e: ckpt_safetensors(e, set_value(float("nan"))), [], 2,
                                  "NaN or infinite"),
    "int64 weights": (lambda e: ckpt_state(e, cast(torch.int64)), [], 2, "holds int64 values, expected float32"),
    "int8 weights": (lambda e: ckpt_state(e, cast(torch.int8)), [], 2, "holds int8 values, expected float32"),
    "bool weights": (lambda e: ckpt_state(e, cast(torch.bool)), [], 2, "holds bool values, expected float32"),
    "complex weights": (lambda e: ckpt_state(e, cast(torch.complex64)), [], 2,
                        "holds complex64 values, expected float32"),
    "complex NaN weights": (lambda e: ckpt_state(e, lambda s: (cast(torch.complex64)(s),
                                                               s[first_weight(s)].fill_(complex("nan+1j")))),
                            [], 2, "NaN or infinite"),
    "int weights in safetensors": (lambda e: ckpt_safetensors(e, cast(torch.int32)), [], 2,
                                   "holds int32 values"),
    "normalisation std 0": (lambda e: ckpt_state(e, set_buffer("normalize.std", 0.0)), [], 2,
                            "normalisation std 'normalize.std' must be positive"),
    "normalisation std negative": (lambda e: ckpt_state(e, set_buffer("normalize.std", -1.0)), [], 2,
                                   "must be positive"),
    "normalisation std NaN": (lambda e: ckpt_state(e, set_buffer("normalize.std", float("nan"))), [], 2,
                              "NaN or infinite"),
    "normalisation mean inf": (lambda e: ckpt_state(e, set_buffer("normalize.mean", float("inf"))), [], 2,
                               "NaN or infinite"),
    "metadata not JSON": (lambda e: ckpt_safetensors(e, meta_text="{not json"), [], 2,
                          "metadata is not valid JSON"),
    "metadata a JSON list": (lambda e: ckpt_safetensors(e, meta_text="[1, 2]"), [], 2,
                             "metadata must be a JSON object"),
    "metadata nested too deeply": (lambda e: ckpt_safetensors(e, meta_text="[" * 100_000 + "]" * 100_000), [],
                                   2, "metadata is not valid JSON"),
}


# --------------------------------------------------------------------------------- checkpoint metadata
def meta_edit(change: Callable[[dict[str, Any]], Any], source: str = "original", recompute: bool = True
              ) -> Maker:
    """A checkpoint whose metadata ``change`` edits (its task_hash recomputed unless ``recompute`` is False)."""
    def make(env: Env) -> Path:
        state, meta = raw_checkpoint(getattr(env, source))
        change(meta)
        if recompute:
            try:
                rehash(meta)
            except Exception:  # an invalid task cannot be hashed: leave the hash as it was
                pass
        return save_raw(env, state, meta)
    return make


def set_task(section: str | None, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        target = meta["task"] if section is None else meta["task"][section]
        target.update(changes)
    return change


def set_meta(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta.update(changes)


def poison_label(index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["task"]["poison_labels"][index] = value
    return change


def forget_index(index: int, value: int) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["task"]["forget_indices"][index] = value
    return change


METADATA: dict[str, tuple[Maker, int, str]] = {
    "poison label -1": (meta_edit(poison_label(0, -1), "poison"), 2, "poison label -1 is not a class"),
    "poison label 99": (meta_edit(poison_label(0, 99), "poison"), 2, "poison label 99 is not a class"),
    "poison label 10": (meta_edit(poison_label(-1, 10), "poison"), 2, "poison label 10 is not a class"),
    "poison label a string": (meta_edit(poison_label(0, "8"), "poison"), 2, "poison_labels must be a list"),
    "poison label a float": (meta_edit(poison_label(0, 8.5), "poison"), 2, "poison_labels must be a list"),
    "poison labels too few": (meta_edit(lambda m: m["task"]["poison_labels"].pop(), "poison"), 2,
                              "one label per forget index"),
    "poison labels on a random task": (meta_edit(set_task(None, poison_labels=[1] * 126)), 2,
                                       "poison_labels are given but the forget kind is 'random'"),
    "poison label -1, hash not updated": (meta_edit(poison_label(0, -1), "poison", recompute=False), 2,
                                          "does not match the hash of its task"),
    "task_hash altered": (meta_edit(set_meta(task_hash="0" * 64), recompute=False), 2,
                          "metadata task_hash 000000000000 does not match"),
    "task_hash a number": (meta_edit(set_meta(task_hash=12), recompute=False), 2,
                           "task_hash must be a string"),
    "forget index altered, hash not updated": (meta_edit(forget_index(0, 1), recompute=False), 2,
                                               "does not match the hash of its task"),
    "recipe lr altered, hash not updated": (meta_edit(set_task("recipe", lr=0.5), recompute=False), 2,
                                            "does not match the hash of its task"),
    "forget index out of range": (meta_edit(forget_index(0, 99_999)), 2, "forget index 99999 is out of range"),
    "forget index negative": (meta_edit(forget_index(0, -3)), 2, "forget index -3 is out of range"),
    "forget indices duplicated": (meta_edit(lambda m: m["task"]["forget_indices"].__setitem__(
        1, m["task"]["forget_indices"][0])), 2, "duplicate"),
    "forget indices empty": (meta_edit(set_task(None, forget_indices=[])), 2, "the forget set is empty"),
    "data fingerprint altered": (meta_edit(set_task(None, data_fingerprint="f" * 64)), 2,
                                 "materialised on different data"),
    "task not a table": (meta_edit(set_meta(task="digits"), recompute=False), 2,
                         "expected a table of settings"),
    "task with an unknown key": (meta_edit(set_task(None, colour="red"), recompute=False), 2,
                                 "unknown key 'colour'"),
    "task recipe lr inf": (meta_edit(set_task("recipe", lr=float("inf"))), 2, "lr must be positive and finite"),
    "task recipe momentum NaN": (meta_edit(set_task("recipe", momentum=float("nan"))), 2,
                                 "momentum must be in [0, 1)"),
    "task recipe epochs a string": (meta_edit(set_task("recipe", epochs="1")), 2, "recipe epochs must be an int"),
    "task seed negative": (meta_edit(set_task(None, seed=-1)), 2, "seed must be a non-negative integer"),
    "task dataset unknown": (meta_edit(set_task("dataset", name="imagenet")), 2, "unknown dataset 'imagenet'"),
    "task arch unknown": (meta_edit(set_task("model", arch="gpt")), 2, "unknown architecture 'gpt'"),
    "task hidden -5": (meta_edit(set_task("model", options={"hidden": -5})), 2,
                       "model option hidden of architecture 'mlp' must be an integer"),
    "task arch differs from the weights": (meta_edit(set_task("model", arch="cnn", options={})), 2,
                                           "does not match the architecture"),
}


# ------------------------------------------------------------------------------------------ task files
def task_file(task: dict[str, Any], suffix: str = ".toml") -> Maker:
    return lambda env: write_task(env, task, suffix)


def recipe(**changes: Any) -> Maker:
    return task_file(edited(TINY_TASK, "recipe", **changes))


def recipe_json(**changes: Any) -> Maker:
    return task_file(edited(TINY_TASK, "recipe", **changes), ".json")


def section(name: str | None, /, **changes: Any) -> Maker:
    return task_file(edited(TINY_TASK, name, **changes))


def text_file(text: str | bytes, suffix: str = ".toml") -> Maker:
    def make(env: Env) -> Path:
        path = env.folder / f"task{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path
    return make


def with_index_file(content: str, path_in_task: str = "sets/forget.json") -> Maker:
    """A task whose forget set is an index file in a subfolder of the task file's folder."""
    def make(env: Env) -> Path:
        (env.folder / "sets").mkdir(exist_ok=True)
        (env.folder / "sets" / "forget.json").write_text(content)
        return write_task(env, edited(TINY_TASK, "forget", kind="indices", fraction=None, path=path_in_task))
    return make


def in_other_cwd(make: Maker) -> Maker:
    """The task file of ``make``, run from another working directory (relative paths must not depend on it)."""
    def wrapped(env: Env) -> Path:
        path = make(env)
        elsewhere = env.folder / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        os.chdir(elsewhere)
        return path
    return wrapped


TASK_FILES: dict[str, tuple[Maker, int, str]] = {
    # syntax and encoding
    "TOML syntax error": (text_file('name = "x"\n[recipe\nlr = 1\n'), 2, "cannot parse task file"),
    "TOML duplicate key": (text_file('name = "x"\nname = "y"\n'), 2, "cannot parse task file"),
    "JSON syntax error": (text_file('{"name": "x",', ".json"), 2, "cannot parse task file"),
    "JSON nested too deeply": (text_file("[" * 100_000 + "]" * 100_000, ".json"), 2, "cannot parse task file"),
    "JSON top level a list": (text_file("[1, 2]", ".json"), 2, "expected a table of settings, got list"),
    "JSON top level a number": (text_file("3", ".json"), 2, "expected a table of settings, got int"),
    "binary file": (text_file(bytes(range(256)) * 4), 2, "is a binary file"),
    "NUL byte in TOML": (text_file(b'name = "x"\x00\n'), 2, "is a binary file"),
    "not UTF-8 (latin-1)": (text_file('name = "caf\xe9"\n'.encode("latin-1")), 2, "is not UTF-8 text"),
    "not UTF-8 JSON": (text_file(b'{"name": "\xff\xfe"}', ".json"), 2, "is not UTF-8 text"),
    "task file missing": (lambda e: e.folder / "absent.toml", 2, "task file not found"),
    "task file a directory": (lambda e: (e.folder / "dir.toml").mkdir() or e.folder / "dir.toml", 2,
                              "cannot read task file"),
    # unknown keys and wrong types
    "unknown top-level key": (section(None, epochs=3), 2, "unknown key 'epochs'"),
    "unknown recipe key": (recipe(epoch=3), 2, "epoch"),
    "unknown dataset key": (section("dataset", path="x"), 2, "path"),
    "unknown forget key": (section("forget", classes=[1]), 2, "classes"),
    "unknown model key": (section("model", layers=3), 2, "unknown model key 'layers'"),
    "recipe not a table": (text_file('recipe = 3\n'), 2, "[recipe] must be a table"),
    "model options not a table": (text_file('[model]\noptions = 3\n'), 2, "[model.options] must be a table"),
    "epochs a string": (recipe(epochs="3"), 2, "recipe epochs must be an int"),
    "epochs a float": (recipe(epochs=2.5), 2, "recipe epochs must be an int"),
    "epochs a bool": (recipe(epochs=True), 2, "recipe epochs must be an int"),
    "batch_size a list": (recipe(batch_size=[64]), 2, "recipe batch_size must be an int"),
    "lr a string": (recipe(lr="fast"), 2, "recipe lr must be a float"),
    "momentum a bool": (recipe(momentum=True), 2, "recipe momentum must be a float"),
    "optimizer a number": (recipe(optimizer=1), 2, "recipe optimizer must be a str"),
    "seed a float": (section(None, seed=1.5), 2, "task seed must be an int"),
    "seed a string": (section(None, seed="0"), 2, "task seed must be an int"),
    "name a number": (section(None, name=3), 2, "task name must be a str"),
    "dataset name a number": (section("dataset", name=1), 2, "dataset name must be a str"),
    "val_fraction a string": (section("dataset", val_fraction="0.2"), 2, "val_fraction must be a float"),
    "train_subset a float": (section("dataset", train_subset=100.5), 2, "train_subset must be an int"),
    "arch a number": (section("model", arch=3), 2, "model arch must be a str"),
    "forget cls a string": (section("forget", kind="full-class", fraction=None, cls="3"), 2,
                            "forget cls must be an int"),
    "forget count a float": (section("forget", fraction=None, count=2.5), 2, "forget count must be an int"),
    "forget_indices not integers": (section(None, forget_indices=["1", "2"]), 2,
                                    "forget_indices must be a list of integers"),
    "data_fingerprint a number": (section(None, data_fingerprint=5), 2, "data_fingerprint must be a str"),
    # every recipe field out of range
    "lr 0": (recipe(lr=0.0), 2, "lr must be positive"),
    "lr negative": (recipe(lr=-0.1), 2, "lr must be positive"),
    "lr inf (TOML)": (recipe(lr=float("inf")), 2, "lr must be positive and finite"),
    "lr inf (JSON)": (recipe_json(lr=float("inf")), 2, "lr must be positive and finite"),
    "lr -inf": (recipe(lr=float("-inf")), 2, "lr must be positive and finite"),
    "lr NaN (TOML)": (recipe(lr=float("nan")), 2, "lr must be positive and finite"),
    "lr NaN (JSON)": (recipe_json(lr=float("nan")), 2, "lr must be positive and finite"),
    "lr 1e30": (recipe(lr=1e30), 2, "lr must be positive and finite (at most 10)"),
    "lr 1e400 (overflows to inf)": (text_file(to_toml(TINY_TASK).replace("lr = 0.05", "lr = 1e400")), 2,
                                    "lr must be positive and finite"),
    "momentum negative": (recipe(momentum=-0.1), 2, "momentum must be in [0, 1)"),
    "momentum 1": (recipe(momentum=1.0), 2, "momentum must be in [0, 1)"),
    "momentum 5": (recipe(momentum=5), 2, "momentum must be in [0, 1)"),
    "momentum NaN": (recipe(momentum=float("nan")), 2, "momentum must be in [0, 1)"),
    "momentum inf": (recipe_json(momentum=float("inf")), 2, "momentum must be in [0, 1)"),
    "weight_decay negative": (recipe(weight_decay=-1e-4), 2, "weight_decay must be in [0, 1]"),
    "weight_decay NaN": (recipe(weight_decay=float("nan")), 2, "weight_decay must be in [0, 1]"),
    "weight_decay inf": (recipe(weight_decay=float("inf")), 2, "weight_decay must be in [0, 1]"),
    "weight_decay 10": (recipe(weight_decay=10.0), 2, "weight_decay must be in [0, 1]"),
    "epochs 0": (recipe(epochs=0), 2, "recipe epochs must be between 1 and"),
    "epochs negative": (recipe(epochs=-3), 2, "recipe epochs must be between 1 and"),
    "epochs 10^9": (recipe(epochs=10**9), 2, "recipe epochs must be between 1 and"),
    "batch_size 0": (recipe(batch_size=0), 2, "recipe batch_size must be between 1 and"),
    "batch_size negative": (recipe(batch_size=-64), 2, "recipe batch_size must be between 1 and"),
    "batch_size 2^62": (recipe(batch_size=2**62), 2, "recipe batch_size must be between 1 and"),
    "optimizer unknown": (recipe(optimizer="lbfgs"), 2, "unknown optimizer 'lbfgs'"),
    "schedule unknown": (recipe(schedule="linear"), 2, "unknown schedule 'linear'"),
    "augment unknown": (recipe(augment="mixup"), 2, "unknown augmentation 'mixup'"),
    # model
    "arch unknown": (section("model", arch="transformer"), 2, "unknown architecture 'transformer'"),
    "hidden -5": (section("model", options={"hidden": -5}), 2, "model option hidden of architecture 'mlp'"),
    "hidden 0": (section("model", options={"hidden": 0}), 2, "model option hidden"),
    "hidden 10^12": (section("model", options={"hidden": 10**12}), 2, "model option hidden"),
    "hidden a string": (section("model", options={"hidden": "wide"}), 2, "model option hidden"),
    "hidden a float": (section("model", options={"hidden": 16.5}), 2, "model option hidden"),
    "depth negative": (section("model", options={"depth": -1}), 2, "model option depth"),
    "cnn width -1": (section("model", arch="cnn", options={"width": -1}), 2, "model option width"),
    "unknown model option": (section("model", options={"heads": 4}), 2, "invalid options for architecture 'mlp'"),
    "diverging recipe (lr 10, weight decay 1)": (recipe(lr=10.0, momentum=0.0, weight_decay=1.0, batch_size=8,
                                                        schedule="constant"), 2,
                                                 "diverged ('net.1.weight' is NaN or infinite); the recipe is"),
    # seed and dataset
    "seed negative": (section(None, seed=-1), 2, "task seed must be a non-negative integer"),
    "dataset unknown": (section("dataset", name="imagenet"), 2, "unknown dataset 'imagenet'"),
    "val_fraction 1": (section("dataset", val_fraction=1.0), 2, "val_fraction must be in [0, 1)"),
    "val_fraction negative": (section("dataset", val_fraction=-0.2), 2, "val_fraction must be in [0, 1)"),
    "val_fraction NaN": (section("dataset", val_fraction=float("nan")), 2, "val_fraction must be in [0, 1)"),
    "train_subset 1": (section("dataset", train_subset=1), 2, "train_subset must be at least 2"),
    "train_subset too large": (section("dataset", train_subset=100_000), 2, "train_subset 100000 is not between"),
    "root given for digits": (section("dataset", root="/data"), 2, "does not apply to 'digits'"),
    # a relative root resolves against the task file's folder, not the working directory
    "relative npz root": (in_other_cwd(section("dataset", name="npz", root="missing.npz")), 2,
                          "task-files/missing.npz"),
    # forget specifications
    "forget kind unknown": (section("forget", kind="everything"), 2, "unknown forget kind 'everything'"),
    "forget fraction 0": (section("forget", fraction=0.0), 2, "fraction must be in (0, 1)"),
    "forget fraction 1.5": (section("forget", fraction=1.5), 2, "fraction must be in (0, 1)"),
    "forget fraction NaN": (section("forget", fraction=float("nan")), 2, "fraction must be in (0, 1)"),
    "forget fraction and count": (section("forget", count=5), 2, "exactly one of fraction or count"),
    "forget count 0": (section("forget", fraction=None, count=0), 2, "positive count"),
    "forget count too large": (section("forget", fraction=None, count=10**6), 2, "exceeds"),
    "full-class without cls": (section("forget", kind="full-class", fraction=None), 2, "needs a class"),
    "full-class cls -1": (section("forget", kind="full-class", fraction=None, cls=-1), 2,
                          "class -1 has no training examples"),
    "full-class cls 99": (section("forget", kind="full-class", fraction=None, cls=99), 2,
                          "class 99 has no training examples"),
    "sub-class on digits": (section("forget", kind="sub-class", fraction=None, cls=1), 2, "needs the cifar20"),
    "label-flip target 99": (section("forget", kind="label-flip", cls=3, fraction=None, count=5, target=99), 2,
                             "label-flip target 99 is not a class"),
    "label-flip target own class": (section("forget", kind="label-flip", cls=3, fraction=None, count=5, target=3),
                                    2, "equals some examples' own label"),
    "indices without path": (section("forget", kind="indices", fraction=None), 2, "needs a path"),
    "indices file missing (relative)": (in_other_cwd(section("forget", kind="indices", fraction=None,
                                                             path="nope.json")), 2,
                                        "task-files/nope.json"),
    "indices out of range": (with_index_file("[1, 99999]"), 2, "forget index 99999 is out of range"),
    "indices negative": (with_index_file("[-1, 2]"), 2, "forget index -1 is out of range"),
    "indices duplicated": (with_index_file("[4, 5, 4]"), 2, "duplicate"),
    "indices empty": (with_index_file("[]"), 2, "the forget set is empty"),
    "indices not integers": (with_index_file('["a"]'), 2, "integers"),
    "indices file not JSON": (with_index_file("{{{"), 2, "cannot read forget index file"),
    "inline indices out of range": (section(None, forget_indices=[0, 99_999]), 2,
                                    "forget index 99999 is out of range"),
    "inline indices duplicated": (section(None, forget_indices=[3, 3]), 2, "duplicate"),
    "inline indices empty": (section(None, forget_indices=[]), 2, "the forget set is empty"),
    "inline fingerprint of other data": (section(None, forget_indices=[1, 2], data_fingerprint="a" * 64), 2,
                                         "materialised on different data"),
    "fingerprint without indices, other data": (section(None, data_fingerprint="a" * 64), 2,
                                                "materialised on different data"),
    "poison labels without label-flip": (section(None, forget_indices=[1, 2], poison_labels=[3, 4]), 2,
                                         "poison_labels are given but the forget kind is 'random'"),
    "poison labels without indices": (task_file(edited(TINY_POISON, None, poison_labels=[1])), 2,
                                      "without the forget_indices"),
    "poison label out of range": (task_file(edited(TINY_POISON, None, forget_indices=[1, 2],
                                                   poison_labels=[3, 10])), 2, "poison label 10 is not a class"),
}


# ------------------------------------------------------------------------------------------------- npz
def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((40, 4), dtype=np.float32), "y_train": np.arange(40) % 2,
            "x_test": rng.random((20, 4), dtype=np.float32), "y_test": np.arange(20) % 2}


NPZ_TASK = edited(edited(TINY_TASK, "dataset", name="npz", root="data.npz"), "forget", fraction=None, count=4)


def npz_task(env: Env, data: Callable[[Path], None], arch: str = "mlp") -> Path:
    """A task file on ``data.npz`` (root relative to the task file) whose content ``data`` writes."""
    data(env.folder / "data.npz")
    model = {"arch": arch, "options": {"hidden": 16} if arch == "mlp" else {}}
    return write_task(env, {**NPZ_TASK, "model": model})


def arrays(**changes: Any) -> Maker:
    def write(path: Path) -> None:
        parts = {**good_arrays(), **changes}
        with open(path, "wb") as handle:
            np.savez(handle, **{k: v for k, v in parts.items() if v is not None})
    return lambda env: npz_task(env, write)


def raw_npz(data: bytes | Callable[[], bytes]) -> Maker:
    return lambda env: npz_task(env, lambda p: p.write_bytes(data() if callable(data) else data))


def object_array() -> np.ndarray:
    values = np.empty(40, dtype=object)
    values[:] = [[0.5] * 4 for _ in range(40)]
    return values


def good_npz_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **good_arrays())
    return buffer.getvalue()


def compressed_corrupt() -> bytes:
    """A compressed ``.npz`` whose deflate stream is damaged (the zip directory is intact)."""
    import io

    buffer = io.BytesIO()
    big = {**good_arrays(), "x_train": np.zeros((400, 4), np.float32), "y_train": np.arange(400) % 2}
    np.savez_compressed(buffer, **big)
    data = bytearray(buffer.getvalue())
    for i in range(60, 200):
        data[i] ^= 0xFF
    return bytes(data)


def single_array(env: Env) -> Path:
    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    return npz_task(env, write)


NPZ: dict[str, tuple[Maker, int, str]] = {
    "corrupt bytes": (raw_npz(b"PK\x03\x04 this is not really a zip"), 2, "cannot read"),
    "empty file": (raw_npz(b""), 2, "cannot read"),
    "text file": (raw_npz(b"x_train,y_train\n1,2\n"), 2, "cannot read"),
    "truncated archive": (raw_npz(lambda: good_npz_bytes()[:300]), 2, "cannot read"),
    "damaged compressed stream": (raw_npz(compressed_corrupt), 2, "cannot read"),
    "a single .npy array": (single_array, 2, "holds a single array"),
    "missing x_test": (arrays(x_test=None), 2, "lacks the array 'x_test'"),
    "missing y_train": (arrays(y_train=None), 2, "lacks the array 'y_train'"),
    "object inputs": (arrays(x_train=object_array()), 2, "cannot read"),
    "string inputs": (arrays(x_train=np.array([["a"] * 4] * 40)), 2, "x_train must hold real numbers"),
    "numeric string inputs": (arrays(x_train=np.full((40, 4), "0.5")), 2, "x_train must hold real numbers"),
    "bytes inputs": (arrays(x_test=np.full((20, 4), b"1")), 2, "x_test must hold real numbers"),
    "complex inputs": (arrays(x_train=np.ones((40, 4), np.complex64)), 2, "x_train must hold real numbers"),
    "datetime inputs": (arrays(x_train=np.zeros((40, 4), "datetime64[s]")), 2, "must hold real numbers"),
    "string labels": (arrays(y_train=np.array(["a", "b"] * 20)), 2, "y_train must hold integers"),
    "float labels": (arrays(y_test=np.zeros(20)), 2, "y_test must hold integers"),
    "complex labels": (arrays(y_train=np.zeros(40, np.complex128)), 2, "y_train must hold integers"),
    "negative label": (arrays(y_train=np.r_[-1, np.arange(39) % 2]), 2, "labels must be non-negative"),
    "huge label": (arrays(y_test=np.r_[10**9, np.arange(19) % 2]), 2, "below 10000, found 1000000000"),
    "int64 max label": (arrays(y_train=np.r_[np.iinfo(np.int64).max, np.arange(39) % 2]), 2, "below 10000"),
    "NaN pixel": (arrays(x_train=np.where(np.eye(40, 4) > 0, np.nan, 0.5).astype(np.float32)), 2,
                  "NaN or infinite"),
    "inf pixel": (arrays(x_test=np.full((20, 4), np.inf, np.float32)), 2, "NaN or infinite"),
    "float64 overflowing float32": (arrays(x_train=np.full((40, 4), 1e300)), 2, "NaN or infinite"),
    "mismatched lengths": (arrays(y_train=np.arange(39) % 2), 2, "expected x of shape"),
    "labels 2-D": (arrays(y_train=np.zeros((40, 1), np.int64)), 2, "expected x of shape"),
    "inputs 1-D": (arrays(x_train=np.zeros(40, np.float32)), 2, "expected x of shape"),
    "inputs 5-D": (arrays(x_train=np.zeros((40, 1, 1, 2, 2), np.float32)), 2, "expected x of shape"),
    "empty test split": (arrays(x_test=np.zeros((0, 4), np.float32), y_test=np.zeros(0, np.int64)), 2, "empty"),
    "zero features": (arrays(x_train=np.zeros((40, 0), np.float32), x_test=np.zeros((20, 0), np.float32)), 2,
                      "empty"),
    "train and test shapes differ": (arrays(x_test=np.zeros((20, 5), np.float32)), 2, "differ in example shape"),
    "cnn on feature vectors": (lambda env: npz_task(env, lambda p: np.savez(p, **good_arrays()), "cnn"), 2,
                               "architecture 'cnn' needs image inputs"),
    "npz root missing": (lambda env: write_task(env, NPZ_TASK), 2, "npz dataset file not found"),
    "npz root a directory": (lambda env: (env.folder / "data.npz").mkdir() or write_task(env, NPZ_TASK), 2,
                             "npz dataset file not found"),
}


# ------------------------------------------------------------------------------------------ CLI options
def score(*extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["score", "--method", "retrain", "--model", str(env.original), *extra]


def cache_at_file(env: Env) -> list[str]:
    (env.folder / "file").write_text("x")
    return ["score", "--method", "retrain", "--model", str(env.original), "--cache-dir", str(env.folder / "file")]


def cache_under_file(env: Env) -> list[str]:
    (env.folder / "file").write_text("x")
    return ["score", "--method", "retrain", "--model", str(env.original), "--cache-dir",
            str(env.folder / "file" / "cache")]


def env_cache_at_file(env: Env) -> list[str]:
    """No --cache-dir: the cache comes from $MUAUDIT_CACHE_DIR, which names a file."""
    (env.folder / "file").write_text("x")
    os.environ["MUAUDIT_CACHE_DIR"] = str(env.folder / "file")
    return ["score", "--method", "retrain", "--model", str(env.original), NO_CACHE_DIR]


def with_env(name: str, value: str, make: Callable[[Env], list[str]]) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        os.environ[name] = value
        return make(env)
    return build


#: Command lines: (argv builder, expected code, fragment). ``--cache-dir`` and ``--out`` are added unless given.
OPTIONS: dict[str, tuple[Callable[[Env], list[str]], int, str]] = {
    "--device bogus": (score("--device", "bogus"), 2, "--device must be auto, cpu, cuda or cuda:N"),
    "--device empty": (score("--device", ""), 2, "--device must be"),
    "--device cuda:x": (score("--device", "cuda:x"), 2, "--device must be"),
    "--device meta": (score("--device", "meta"), 2, "--device must be"),
    "--device cuda without CUDA": (score("--device", "cuda"), 2, "CUDA is not available"),
    "--device cuda:7 without CUDA": (score("--device", "cuda:7"), 2, "CUDA is not available"),
    "train --device bogus": (lambda e: ["train", "--task", "digits", "--device", "gpu0"], 2, "--device must be"),
    "--cache-dir a file": (cache_at_file, 2, "as the model cache (--cache-dir): not a directory"),
    "--cache-dir under a file": (cache_under_file, 2, "is not a directory"),
    "MUAUDIT_CACHE_DIR a file": (env_cache_at_file, 2, "($MUAUDIT_CACHE_DIR): not a directory"),
    "--gold-seeds 0": (score("--gold-seeds", "0"), 2, "--gold-seeds must be at least 1"),
    "--gold-seeds -3": (score("--gold-seeds", "-3"), 2, "--gold-seeds must be at least 1"),
    "--gold-seeds 1000000": (score("--gold-seeds", "1000000"), 2, "exceeds the bound of 64"),
    "--gold-seeds 65": (score("--gold-seeds", "65"), 2, "exceeds the bound of 64"),
    "--gold-seeds over a lowered bound": (with_env("MUAUDIT_MAX_GOLD_SEEDS", "2", score("--gold-seeds", "3")), 2,
                                          "exceeds the bound of 2"),
    "MUAUDIT_MAX_GOLD_SEEDS junk": (with_env("MUAUDIT_MAX_GOLD_SEEDS", "many", score()), 2,
                                    "MUAUDIT_MAX_GOLD_SEEDS must be a positive integer"),
    "MUAUDIT_MAX_GOLD_SEEDS 0": (with_env("MUAUDIT_MAX_GOLD_SEEDS", "0", score()), 2,
                                 "MUAUDIT_MAX_GOLD_SEEDS must be a positive integer"),
    "--gold-seeds junk": (score("--gold-seeds", "two"), 2, "invalid int value"),
    "compare --gold-seeds 10^6": (lambda e: ["compare", "--methods", "retrain,finetune", "--model", str(e.original),
                                             "--gold-seeds", "1000000"], 2, "exceeds the bound"),
    "--retain-sample junk": (score("--retain-sample", "lots"), 2, "--retain-sample must be a positive integer"),
    "--retain-sample 0": (score("--retain-sample", "0"), 2, "--retain-sample must be a positive integer"),
    "--retain-sample -5": (score("--retain-sample", "-5"), 2, "--retain-sample must be a positive integer"),
    "--retain-sample 1.5": (score("--retain-sample", "1.5"), 2, "--retain-sample must be a positive integer"),
    "--data-root on digits": (score("--data-root", "/data"), 2, "--data-root does not apply to task 'tiny'"),
    "--data-root on named digits": (lambda e: ["score", "--method", "retrain", "--task", "digits", "--data-root",
                                               "/data"], 2, "--data-root does not apply to task 'digits'"),
    "train --data-root on digits": (lambda e: ["train", "--task", "digits", "--data-root", "/data"], 2,
                                    "--data-root does not apply"),
    "describe --data-root on digits": (lambda e: ["describe", "finetune", "--task", "digits", "--data-root", "x"],
                                       2, "--data-root does not apply"),
    "describe --data-root without --task": (lambda e: ["describe", "finetune", "--data-root", "x"], 2,
                                            "--data-root applies to the --task of describe"),
    "describe --data-root on digits, no presets": (lambda e: ["describe", "retrain", "--task", "digits",
                                                              "--data-root", "x"], 2, "--data-root does not apply"),
    "describe unknown task": (lambda e: ["describe", "retrain", "--task", "digitz"], 2, "did you mean digits"),
    "--data-root missing CIFAR": (lambda e: ["score", "--method", "retrain", "--task", "cifar10-class",
                                             "--data-root", str(e.folder / "none")], 2, "CIFAR directory not found"),
    "unknown method": (lambda e: ["score", "--method", "fintune"], 3, "did you mean finetune"),
    "unknown attack": (score("--attacks", "loss,los"), 3, "did you mean loss"),
    "compare unknown method": (lambda e: ["compare", "--methods", "retrain,nomethod"], 3, "nomethod"),
    "describe unknown method": (lambda e: ["describe", "nomethod"], 3, "nomethod"),
    "tune unknown method": (lambda e: ["tune", "--method", "nomethod"], 3, "nomethod"),
    "--method-arg without =": (score("--method-arg", "lr"), 2, "Expected key=value"),
    "--method-arg unknown key": (lambda e: ["score", "--method", "finetune", "--method-arg", "foo=1"], 2,
                                 "has no parameter 'foo'"),
    "--method-arg out of range": (lambda e: ["score", "--method", "finetune", "--method-arg", "lr=-1"], 2,
                                  "must be a float in the range (0, inf)"),
    "--method-arg lr=inf": (lambda e: ["score", "--method", "finetune", "--method-arg", "lr=inf"], 2,
                            "must be a float in the range (0, inf). Got inf instead"),
    "--method-arg lr=1e400": (lambda e: ["score", "--method", "finetune", "--method-arg", "lr=1e400"], 2,
                              "Got inf instead"),
    "--method-arg lr=nan": (lambda e: ["score", "--method", "finetune", "--method-arg", "lr=nan"], 2,
                            "Got nan instead"),
    "--method-arg not a number": (lambda e: ["score", "--method", "finetune", "--method-arg", "lr=fast"], 2, "lr"),
    "--method-arg empty key": (score("--method-arg", "=1"), 2, "Expected key=value"),
    "--attack-arg without attack": (score("--attack-arg", "n=1"), 2, "--attack-arg ATTACK.KEY=VALUE"),
    "--attack-arg unknown key": (score("--attack-arg", "loss.foo=1"), 2, "has no parameter 'foo'"),
    "--attack-arg of an unlisted attack": (score("--attack-arg", "lira.n_shadows=4"), 2, "given in --attacks"),
    "--attacks empty": (score("--attacks", ","), 2, "--attacks needs distinct"),
    "--attacks repeated": (score("--attacks", "loss,loss"), 2, "distinct"),
    "--challenge-models 2": (score("--challenge-models", "2"), 2, "--challenge-models needs at least 3"),
    "--tune-budget without --tuned": (score("--tune-budget", "4"), 2, "--tune-budget needs --tuned"),
    "--tuned --tune-budget 0": (score("--tuned", "--tune-budget", "0"), 2, "tuning budget must be at least 1"),
    "--proxies 0": (score("--proxies", "0"), 2, "--proxies must be at least 1"),
    "--proxy-golds 0": (score("--proxy-golds", "0"), 2, "--proxy-golds must be at least 1"),
    "compare repeated methods": (lambda e: ["compare", "--methods", "retrain,retrain"], 2, "distinct"),
    "compare --tune -1": (lambda e: ["compare", "--methods", "retrain", "--tune", "-1"], 2, "--tune must be 0"),
    "compare --method-arg without method": (lambda e: ["compare", "--methods", "finetune", "--method-arg", "lr=1"],
                                            2, "--method-arg METHOD.KEY=VALUE"),
    "tune --budget 0": (lambda e: ["tune", "--method", "finetune", "--budget", "0"], 2, "budget must be at least 1"),
    "tune a method with nothing to tune": (lambda e: ["tune", "--method", "retrain"], 3, "declares no search space"),
    "unknown task": (lambda e: ["score", "--method", "retrain", "--task", "digitz"], 2, "did you mean digits"),
    "train unknown task": (lambda e: ["train", "--task", "nope"], 2, "unknown task 'nope'"),
    "unknown subcommand": (lambda e: ["audit"], 2, "invalid choice"),
    "score without --method": (lambda e: ["score"], 2, "--method"),
    "unknown flag": (score("--colour"), 2, "unrecognized arguments"),
}


# ----------------------------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A module-wide cache and two one-epoch checkpoints (random and label-flip forget sets), trained once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cache = root / "cache"
    made = []
    for name, task in (("tiny", TINY_TASK), ("poison", TINY_POISON)):
        spec = root / f"{name}.toml"
        spec.write_text(to_toml(task))
        out = root / f"{name}.pt"
        assert main(["train", "--task", str(spec), "--out", str(out), "--cache-dir", str(cache), "--quiet"]) == 0
        made.append(out)
    return cache, made[0], made[1]


@pytest.fixture
def env(shared, tmp_path, monkeypatch) -> Env:
    """A case's environment: its own folder as working directory; cwd and variables are restored afterwards."""
    cache, original, poison = shared
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUAUDIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("MUAUDIT_MAX_GOLD_SEEDS", "")
    folder = tmp_path / "task-files"
    folder.mkdir()
    return Env(folder, cache, original, poison)


def assert_one_line(code: int, err: str, expected: int, fragment: str) -> None:
    lines = err.splitlines()
    assert code == expected, err
    assert len(lines) == 1, err
    assert lines[0].startswith("muaudit: error:"), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err


def with_defaults(argv: list[str], env: Env, out: Path) -> list[str]:
    """``argv`` plus the shared cache (unless the case names its own, or none), ``--quiet`` and ``--out``."""
    command = argv[0] if argv else ""
    extra: list[str] = []
    if command in ("score", "compare", "tune", "train") and "--cache-dir" not in argv and NO_CACHE_DIR not in argv:
        extra += ["--cache-dir", str(env.cache)]
    if command in ("score", "compare", "tune"):
        extra += ["--quiet", "--out", str(out)]
    if command == "train":
        extra += ["--quiet", "--out", str(out / "model.pt")]
    return [a for a in argv if a != NO_CACHE_DIR] + extra


def check(argv: list[str], env: Env, expected: int, fragment: str, capsys) -> None:
    """Run one case and assert the catalogue's promises (see the module docstring)."""
    out = env.folder.parent / "out"
    code = main(with_defaults(argv, env, out))
    stdout, err = capsys.readouterr()
    assert_one_line(code, err, expected, fragment)
    assert "Traceback" not in stdout
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    assert not (env.folder / MARKER).exists(), "a pickle payload ran"


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_bad_checkpoint(case, env, capsys):
    make, extra, expected, fragment = CHECKPOINTS[case]
    path = make(env)
    check(["score", "--method", "retrain", "--model", str(path), *extra], env, expected, fragment, capsys)


@pytest.mark.parametrize("case", list(METADATA))
def test_bad_checkpoint_metadata(case, env, capsys):
    make, expected, fragment = METADATA[case]
    check(["score", "--method", "retrain", "--model", str(make(env))], env, expected, fragment, capsys)


@pytest.mark.parametrize("case", list(TASK_FILES))
def test_bad_task_file(case, env, capsys):
    make, expected, fragment = TASK_FILES[case]
    check(["train", "--task", str(make(env))], env, expected, fragment, capsys)


@pytest.mark.parametrize("case", list(NPZ))
def test_bad_npz_data(case, env, capsys):
    make, expected, fragment = NPZ[case]
    check(["train", "--task", str(make(env))], env, expected, fragment, capsys)


@pytest.mark.parametrize("case", list(OPTIONS))
def test_bad_option(case, env, capsys):
    build, expected, fragment = OPTIONS[case]
    if "without CUDA" in case and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    check(build(env), env, expected, fragment, capsys)


def test_the_catalogue_is_large_enough():
    assert len(CHECKPOINTS) + len(METADATA) + len(TASK_FILES) + len(NPZ) + len(OPTIONS) >= 150


# ------------------------------------------------------------------------------- as a real process
SUBPROCESS_CASES = {
    "complex weights": (lambda e: ["score", "--method", "retrain", "--model",
                                   str(ckpt_state(e, cast(torch.complex64)))], 2, "holds complex64 values"),
    "float64 inputs beyond float32": (lambda e: ["train", "--task", str(NPZ["float64 overflowing float32"][0](e))],
                                      2, "NaN or infinite"),
    "pickle payload": (lambda e: ["score", "--method", "retrain", "--model", str(ckpt_pickle_payload(e))], 2,
                       "refused to load"),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_nothing_but_the_line_reaches_stderr(case, env):
    """Out of pytest's warning capture, with every warning shown: stderr is exactly the one error line."""
    build, expected, fragment = SUBPROCESS_CASES[case]
    out = env.folder.parent / "out"
    argv = with_defaults(build(env), env, out)
    result = subprocess.run([sys.executable, "-m", "muaudit", *argv], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "default"}, check=False)
    assert_one_line(result.returncode, result.stderr, expected, fragment)
    assert not out.exists() and not (env.folder / MARKER).exists()


# ------------------------------------------------------------------------- what valid input still does
def test_valid_tiny_inputs_succeed_and_the_record_does_not_depend_on_the_working_directory(env, capsys,
                                                                                          monkeypatch):
    """The control of the catalogue: the same tiny checkpoint, given by a relative and an absolute path, scores
    (exit 0, both files written) with the same record of the original: its file name and SHA-256."""
    from muaudit.checkpoint import file_sha256

    cards = []
    monkeypatch.chdir(env.original.parent)
    for i, model in enumerate((env.original.name, str(env.original))):
        out = env.folder / f"run{i}"
        code = main(["score", "--method", "retrain", "--gold-seeds", "1", "--model", model, "--cache-dir",
                     str(env.cache), "--quiet", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        cards.append(json.loads((out / "scorecard.json").read_text()))
        assert (out / "scorecard.md").is_file()
    first, second = (c["provenance"]["original"] for c in cards)
    assert first == second
    assert first["file"] == "tiny.pt" and first["sha256"] == file_sha256(env.original) and "path" not in first


def test_a_diverged_model_is_neither_written_nor_cached(env, capsys):
    cache = env.folder / "fresh-cache"
    out = env.folder / "model.pt"
    task = TASK_FILES["diverging recipe (lr 10, weight decay 1)"][0](env)
    code = main(["train", "--task", str(task), "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert_one_line(code, capsys.readouterr().err, 2, "diverged")
    assert not out.exists()
    assert not cache.exists() or not list(cache.rglob("*.safetensors"))


def test_inline_forget_indices_are_honoured_without_a_fingerprint(env):
    """Explicit indices are the forget set (never redrawn); the fingerprint is recorded when absent."""
    from muaudit.data import load_dataset
    from muaudit.task import Task

    task = Task.from_file(write_task(env, edited(TINY_TASK, None, forget_indices=[7, 3, 11])))
    data = load_dataset("digits")
    done = task.materialise(data)
    assert done.forget_indices == (7, 3, 11) and done.data_fingerprint == data.fingerprint()
    assert done.materialise(data) == done


def test_relative_paths_resolve_against_the_task_file(env):
    from muaudit.task import Task

    path = write_task(env, edited(edited(NPZ_TASK, "dataset", root="data/d.npz"), "forget", kind="indices",
                                  count=None, path="sets/f.json"))
    task = Task.from_file(path)
    assert task.dataset.root == str(env.folder / "data" / "d.npz")
    assert task.forget.path == str(env.folder / "sets" / "f.json")
    absolute = Task.from_file(write_task(env, edited(NPZ_TASK, "dataset", root="/abs/d.npz")))
    assert absolute.dataset.root == "/abs/d.npz"


# ------------------------------------------------------------------------------- validation functions
@pytest.mark.parametrize("field, good, bad", [
    ("lr", [1e-8, 0.05, 10.0], [0.0, -1.0, 10.5, 1e30, math.inf, -math.inf, math.nan]),
    ("momentum", [0.0, 0.9, 0.999], [-0.1, 1.0, 2.0, math.nan, math.inf]),
    ("weight_decay", [0.0, 5e-4, 1.0], [-1e-9, 1.5, math.nan, math.inf]),
    ("epochs", [1, 30, 10_000], [0, -1, 10_001]),
    ("batch_size", [1, 64, 1_000_000], [0, -8, 1_000_001]),
])
def test_recipe_ranges(field, good, bad):
    from dataclasses import replace

    from muaudit.errors import TaskError
    from muaudit.task import Recipe

    for value in good:
        replace(Recipe(), **{field: value}).validate()
    for value in bad:
        with pytest.raises(TaskError, match=f"recipe {field} must"):
            replace(Recipe(), **{field: value}).validate()


@pytest.mark.parametrize("name", ["bogus", "", "gpu", "cuda:", "cuda:-1", "cpu:0x", "meta", "CUDA"])
def test_resolve_device_rejects_unknown_names(name):
    from muaudit.errors import ConfigurationError
    from muaudit.training import resolve_device

    with pytest.raises(ConfigurationError, match="--device must be"):
        resolve_device(name)


def test_resolve_device_accepts_what_exists():
    from muaudit.training import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_cache_dir_must_be_a_writable_directory(tmp_path, monkeypatch):
    from muaudit.cache import TensorCache
    from muaudit.errors import ConfigurationError

    TensorCache(tmp_path / "new" / "deeper")  # absent folders are fine (created on first write) ...
    assert not (tmp_path / "new").exists()  # ... and not created by the check
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory"):
        TensorCache(tmp_path / "file")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(ConfigurationError, match=r"\(--cache-dir\): not writable"):
        TensorCache(tmp_path / "ro")
    with pytest.raises(ConfigurationError, match="ro is not writable"):
        TensorCache(tmp_path / "ro" / "sub")
    monkeypatch.setenv("MUAUDIT_CACHE_DIR", str(tmp_path / "ro"))
    with pytest.raises(ConfigurationError, match=r"\(\$MUAUDIT_CACHE_DIR\)"):
        TensorCache()


def test_gold_seed_bound_and_its_override(monkeypatch):
    from muaudit.defaults import MAX_GOLD_SEEDS, max_gold_seeds

    monkeypatch.delenv("MUAUDIT_MAX_GOLD_SEEDS", raising=False)
    assert max_gold_seeds() == MAX_GOLD_SEEDS == 64
    monkeypatch.setenv("MUAUDIT_MAX_GOLD_SEEDS", "512")
    assert max_gold_seeds() == 512


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_published_files_follow_the_umask(tmp_path, umask):
    import tempfile

    from muaudit.checkpoint import save_checkpoint
    from muaudit.zoo import build_model

    old = os.umask(umask)
    try:
        fd, tmp = tempfile.mkstemp(dir=tmp_path)
        os.close(fd)
        from muaudit.files import publish

        publish(tmp, tmp_path / "plain.txt")
        model = build_model("mlp", (4,), 2, [0.0], [1.0], {"hidden": 2}, seed=0)
        save_checkpoint(model, tmp_path / "m.pt", {})
        from muaudit.cache import TensorCache

        entry = TensorCache(tmp_path / "cache").put({"k": 1}, {"t": torch.zeros(1)})
    finally:
        os.umask(old)
    for path in (tmp_path / "plain.txt", tmp_path / "m.pt", entry):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_statistics_check_names_the_buffer():
    from muaudit.errors import CheckpointError
    from muaudit.zoo import build_model, check_statistics

    model = build_model("smallvgg", (1, 8, 8), 10, [0.3], [0.2], {"width": 2, "hidden": 4}, seed=0)
    check_statistics(model, "m")
    bn = next(name for name, _ in model.named_buffers() if name.endswith("running_var"))
    model.get_buffer(bn).fill_(-1.0)
    with pytest.raises(CheckpointError, match="running variance"):
        check_statistics(model, "m")
