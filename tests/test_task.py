"""Tasks: forget specifications, materialisation, the content hash, JSON/TOML round trips and named tasks."""
from __future__ import annotations

import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muaudit.data import DataBundle, Split, load_dataset
from muaudit.errors import TaskError
from muaudit.task import (
    NAMED_TASKS,
    DatasetSpec,
    ForgetSpec,
    ModelSpec,
    Recipe,
    Task,
    draw_forget_indices,
    resolve_task,
    validate_forget_indices,
)

N_TRAIN = 60


# ---------------------------------------------------------------------------------------------- helpers
def make_bundle(n: int = N_TRAIN, n_classes: int = 4, seed: int = 0, fine: bool = False,
                name: str = "digits") -> DataBundle:
    """A small in-memory data set: labels cycle through the classes, fine labels through 3 per class."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    fine_labels = (y * 3 + (torch.arange(n) // n_classes) % 3) if fine else None
    train = Split(torch.rand(n, 1, 4, 4, generator=gen), y, fine_labels)
    test = Split(torch.rand(20, 1, 4, 4, generator=gen), torch.arange(20) % n_classes,
                 (torch.arange(20) % n_classes) * 3 if fine else None)
    return DataBundle(name, train, test.subset(range(8)), test.subset(range(8, 20)), n_classes, (0.5,), (0.3,))


def task_with(forget: ForgetSpec, dataset: str = "digits", seed: int = 0, **fields) -> Task:
    return Task(name="t", dataset=DatasetSpec(dataset), forget=forget, seed=seed,
                recipe=Recipe(epochs=2, batch_size=16), **fields)


@pytest.fixture
def data() -> DataBundle:
    return make_bundle()


@pytest.fixture
def materialised(data) -> Task:
    return task_with(ForgetSpec("random", fraction=0.2), seed=3).materialise(data)


# ----------------------------------------------------------------------------------------- forget kinds
@pytest.mark.parametrize("cls", [0, 1, 3])
def test_full_class_is_exactly_that_class(data, cls):
    indices = task_with(ForgetSpec("full-class", cls=cls)).materialise(data).forget_indices
    assert indices == tuple(int(i) for i in np.flatnonzero(data.train.y.numpy() == cls))


@pytest.mark.parametrize("fraction, size", [(0.1, 6), (0.25, 15), (0.5, 30), (0.01, 1)])
def test_random_fraction_size(data, fraction, size):
    indices = task_with(ForgetSpec("random", fraction=fraction)).materialise(data).forget_indices
    assert len(indices) == size and len(set(indices)) == size
    assert list(indices) == sorted(indices) and 0 <= min(indices) and max(indices) < N_TRAIN


@pytest.mark.parametrize("count", [1, 7, N_TRAIN - 1])
def test_random_count_size(data, count):
    indices = task_with(ForgetSpec("random", count=count)).materialise(data).forget_indices
    assert len(indices) == count == len(set(indices))


def test_class_subset(data):
    indices = task_with(ForgetSpec("class-subset", cls=2, count=5)).materialise(data).forget_indices
    assert len(indices) == 5
    assert all(int(data.train.y[i]) == 2 for i in indices)
    everything = task_with(ForgetSpec("class-subset", cls=2, count=15)).materialise(data).forget_indices
    assert everything == tuple(int(i) for i in np.flatnonzero(data.train.y.numpy() == 2))


def test_sub_class_on_cifar20_is_that_fine_class():
    data = make_bundle(fine=True, name="cifar20")
    task = task_with(ForgetSpec("sub-class", cls=4), dataset="cifar20").materialise(data)
    assert task.forget_indices == tuple(int(i) for i in np.flatnonzero(data.train.fine.numpy() == 4))
    superclass = {int(data.train.y[i]) for i in task.forget_indices}
    assert superclass == {1}  # fine class 4 lies inside superclass 1, and only part of it is forgotten
    assert len(task.forget_indices) < int((data.train.y == 1).sum())


def test_sub_class_refused_elsewhere():
    with pytest.raises(TaskError, match="cifar20"):
        task_with(ForgetSpec("sub-class", cls=1), dataset="cifar100").materialise(make_bundle(fine=True))
    with pytest.raises(TaskError, match="cifar20"):
        draw_forget_indices(ForgetSpec("sub-class", cls=1), make_bundle().train, 0, "cifar20")
    with pytest.raises(TaskError, match="fine class"):
        draw_forget_indices(ForgetSpec("sub-class"), make_bundle(fine=True).train, 0, "cifar20")
    with pytest.raises(TaskError, match="fine class 50"):
        draw_forget_indices(ForgetSpec("sub-class", cls=50), make_bundle(fine=True).train, 0, "cifar20")


def test_sub_class_end_to_end_on_cifar20_files(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 30), ("test", 20)):
        fine = [int(v) for v in rng.integers(0, 10, n)]
        with open(base / part, "wb") as handle:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine,
                         b"coarse_labels": [f // 5 for f in fine]}, handle)
    task = replace(NAMED_TASKS["cifar20-subclass"], dataset=DatasetSpec("cifar20", str(tmp_path), 0.0))
    data = task.dataset.load()
    done = task.materialise(data)
    assert done.forget_indices == tuple(int(i) for i in np.flatnonzero(data.train.fine.numpy() == 0))


@pytest.mark.parametrize("suffix", [".npy", ".json", ".txt", ""])
def test_indices_file(tmp_path, data, suffix):
    wanted = [17, 3, 42, 8]
    path = tmp_path / f"forget{suffix}"
    if suffix == ".npy":
        np.save(path, np.array(wanted, dtype=np.int32))
    elif suffix == ".json":
        path.write_text(json.dumps(wanted))
    else:
        path.write_text("17\n3\n42 8\n")
    task = task_with(ForgetSpec("indices", path=str(path))).materialise(data)
    assert task.forget_indices == (3, 8, 17, 42)


def test_indices_file_relative_to_the_task_file(tmp_path, data):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "f.json").write_text("[1, 2, 3]")
    task_file = tmp_path / "task.toml"
    task_file.write_text('[forget]\nkind = "indices"\npath = "sets/f.json"\n')
    task = Task.from_file(task_file)
    assert task.forget.path == str(tmp_path / "sets" / "f.json")
    assert task.materialise(data).forget_indices == (1, 2, 3)


# ------------------------------------------------------------------------------------ forget validation
@pytest.mark.parametrize(
    "forget, fragment",
    [
        (ForgetSpec("full-class"), "needs a class"),
        (ForgetSpec("full-class", cls=9), "class 9 has no training examples"),
        (ForgetSpec("full-class", cls=-1), "class -1"),
        (ForgetSpec("class-subset", cls=1), "positive count"),
        (ForgetSpec("class-subset", cls=1, count=0), "positive count"),
        (ForgetSpec("class-subset", cls=1, count=16), "exceeds the 15 available"),
        (ForgetSpec("class-subset", count=3), "needs a class"),
        (ForgetSpec("random"), "exactly one of fraction or count"),
        (ForgetSpec("random", fraction=0.1, count=3), "exactly one of fraction or count"),
        (ForgetSpec("random", fraction=0.0), r"fraction must be in \(0, 1\)"),
        (ForgetSpec("random", fraction=1.0), r"fraction must be in \(0, 1\)"),
        (ForgetSpec("random", fraction=-0.5), r"fraction must be in \(0, 1\)"),
        (ForgetSpec("random", count=N_TRAIN), "exceeds"),
        (ForgetSpec("random", count=-2), "positive count"),
        (ForgetSpec("random", fraction=0.999), "whole training set"),
        (ForgetSpec("indices"), "needs a path"),
        (ForgetSpec("indices", path="/nonexistent/forget.json"), "not found"),
    ],
)
def test_invalid_forget_specs(data, forget, fragment):
    with pytest.raises(TaskError, match=fragment):
        task_with(forget).materialise(data)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("[]", "empty"),
        ("[1, 2, 60]", "index 60 is out of range for a training set of 60"),
        ("[-1, 2]", "index -1 is out of range"),
        ("[4, 5, 4]", "duplicate"),
        (json.dumps(list(range(N_TRAIN))), "whole training set"),
        ("[1.5, 2]", "integers"),
        ('["1", "2"]', "integers"),
        ("[[1, 2], [3, 4]]", "flat list"),
        ('{"a": 1}', "flat list"),
        ("[true, false]", "integers"),
        ("not json", "cannot read"),
    ],
)
def test_invalid_index_files(tmp_path, data, content, fragment):
    path = tmp_path / "f.json"
    path.write_text(content)
    with pytest.raises(TaskError, match=fragment):
        task_with(ForgetSpec("indices", path=str(path))).materialise(data)


def test_invalid_index_text_and_npy(tmp_path, data):
    text = tmp_path / "f.txt"
    text.write_text("1, 2, 3")
    with pytest.raises(TaskError, match="cannot read"):
        task_with(ForgetSpec("indices", path=str(text))).materialise(data)
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.zeros((2, 2), np.int64))
    with pytest.raises(TaskError, match="flat list"):
        task_with(ForgetSpec("indices", path=str(matrix))).materialise(data)
    floats = tmp_path / "f.npy"
    np.save(floats, np.array([1.0, 2.0]))
    with pytest.raises(TaskError, match="integers"):
        task_with(ForgetSpec("indices", path=str(floats))).materialise(data)
    objects = tmp_path / "o.npy"
    np.save(objects, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(TaskError, match="cannot read"):
        task_with(ForgetSpec("indices", path=str(objects))).materialise(data)


def test_validate_forget_indices_directly():
    validate_forget_indices((0, 5, 9), 10)
    validate_forget_indices([9], 10)
    for bad, fragment in [((), "empty"), ((10,), "out of range"), ((1, 1), "duplicate"),
                          (tuple(range(10)), "whole training set")]:
        with pytest.raises(TaskError, match=fragment):
            validate_forget_indices(bad, 10)


@pytest.mark.parametrize(
    "forget",
    [ForgetSpec("full-class", cls="1"), ForgetSpec("random", fraction="0.1"), ForgetSpec("random", count=2.5),
     ForgetSpec("random", count=True), ForgetSpec("indices", path=3)],
)
def test_forget_fields_of_the_wrong_type(data, forget):
    with pytest.raises(TaskError, match="forget"):
        task_with(forget).materialise(data)


# ------------------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("forget", [ForgetSpec("random", fraction=0.2), ForgetSpec("class-subset", cls=1, count=6)])
def test_seeds_decide_random_draws(data, forget):
    first = task_with(forget, seed=1).materialise(data).forget_indices
    assert task_with(forget, seed=1).materialise(data).forget_indices == first
    others = {task_with(forget, seed=s).materialise(data).forget_indices for s in (2, 3, 4)}
    assert first not in others and len(others) == 3


def test_full_class_does_not_depend_on_the_seed(data):
    spec = ForgetSpec("full-class", cls=1)
    assert task_with(spec, seed=1).materialise(data).forget_indices == \
        task_with(spec, seed=2).materialise(data).forget_indices


def test_random_draw_is_independent_of_global_rng_state(data):
    spec = ForgetSpec("random", count=10)
    np.random.seed(0)
    torch.manual_seed(0)
    first = task_with(spec, seed=5).materialise(data).forget_indices
    np.random.seed(99)
    torch.manual_seed(99)
    assert task_with(spec, seed=5).materialise(data).forget_indices == first


# -------------------------------------------------------------------------------------- materialisation
def test_materialise_records_the_fingerprint(data, materialised):
    assert materialised.is_materialised
    assert materialised.data_fingerprint == data.fingerprint()
    assert not task_with(ForgetSpec("random", fraction=0.2)).is_materialised


def test_materialising_twice_is_the_identity(data, materialised):
    again = materialised.materialise(data)
    assert again == materialised
    assert again.content_hash() == materialised.content_hash()


def test_materialised_task_on_changed_data_raises(materialised):
    changed = make_bundle(seed=1)
    with pytest.raises(TaskError, match="different data.*dataset changed"):
        materialised.materialise(changed)


def test_materialised_task_with_invalid_indices_is_rejected(data, materialised):
    bad = replace(materialised, forget_indices=(1, 1))
    with pytest.raises(TaskError, match="duplicate"):
        bad.materialise(data)


def test_materialise_validates_the_recipe(data):
    with pytest.raises(TaskError, match="lr"):
        replace(task_with(ForgetSpec("random", count=3)), recipe=Recipe(lr=0.0)).materialise(data)


def test_unmaterialised_task_cannot_be_hashed():
    with pytest.raises(TaskError, match="materialised"):
        NAMED_TASKS["digits"].content_hash()


# ------------------------------------------------------------------------------------------ content hash
def test_hash_survives_a_json_round_trip(materialised, tmp_path):
    again = Task.from_dict(json.loads(materialised.to_json()))
    assert again == materialised
    assert again.content_hash() == materialised.content_hash()
    path = tmp_path / "task.json"
    path.write_text(materialised.to_json())
    assert Task.from_file(path).content_hash() == materialised.content_hash()


def test_hash_survives_a_toml_round_trip(materialised, tmp_path):
    rich = replace(materialised, model=ModelSpec("cnn", {"width": 8}),
                   dataset=DatasetSpec("digits", "/data/sets", 0.25), name='odd "name" \\ é ✓ 🙂')
    path = tmp_path / "task.toml"
    path.write_text(rich.to_toml())
    again = Task.from_file(path)
    assert again == rich
    assert again.content_hash() == rich.content_hash()


@settings(max_examples=60, deadline=None)
@given(name=st.text(max_size=30), root=st.none() | st.text(min_size=1, max_size=30),
       option=st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.booleans(), st.text(max_size=10),
                        st.lists(st.integers(0, 9), max_size=4)),
       lr=st.floats(1e-8, 10.0), seed=st.integers(0, 2**31))
def test_toml_round_trip_of_arbitrary_values(name, root, option, lr, seed):
    import tomllib

    task = Task(name=name, dataset=DatasetSpec("digits", root), model=ModelSpec("mlp", {"odd key": option}),
                recipe=Recipe(lr=lr), seed=seed, forget_indices=(1, 5), data_fingerprint="f" * 64)
    again = Task.from_dict(tomllib.loads(task.to_toml()))
    assert again == task and again.content_hash() == task.content_hash()


def test_toml_of_an_unmaterialised_task(tmp_path):
    task = NAMED_TASKS["cifar20-subclass"]
    path = tmp_path / "t.toml"
    path.write_text(task.to_toml())
    assert Task.from_file(path) == task


def test_hash_ignores_name_and_data_root(materialised):
    renamed = replace(materialised, name="another", dataset=replace(materialised.dataset, root="/elsewhere"))
    assert renamed.content_hash() == materialised.content_hash()


def test_hash_ignores_where_the_index_file_lives(tmp_path, data):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f.npy").write_bytes(b"")
        np.save(tmp_path / folder / "f.npy", np.array([1, 2, 3]))
    first = task_with(ForgetSpec("indices", path=str(tmp_path / "a" / "f.npy"))).materialise(data)
    second = task_with(ForgetSpec("indices", path=str(tmp_path / "b" / "f.npy"))).materialise(data)
    assert first.content_hash() == second.content_hash()


@pytest.mark.parametrize(
    "change",
    [
        lambda t: replace(t, forget_indices=t.forget_indices[1:]),
        lambda t: replace(t, seed=t.seed + 1),
        lambda t: replace(t, recipe=replace(t.recipe, lr=0.01)),
        lambda t: replace(t, recipe=replace(t.recipe, epochs=3)),
        lambda t: replace(t, recipe=replace(t.recipe, augment="crop-flip")),
        lambda t: replace(t, model=ModelSpec("cnn")),
        lambda t: replace(t, model=ModelSpec("mlp", {"hidden": 64})),
        lambda t: replace(t, dataset=replace(t.dataset, val_fraction=0.3)),
        lambda t: replace(t, data_fingerprint="0" * 64),
        lambda t: replace(t, forget=ForgetSpec("random", count=12)),
    ],
)
def test_hash_changes_with_what_matters(materialised, change):
    assert change(materialised).content_hash() != materialised.content_hash()


def test_hash_is_a_sha256_hex_digest(materialised):
    digest = materialised.content_hash()
    assert len(digest) == 64 and int(digest, 16) >= 0


# ------------------------------------------------------------------------------------------ serialisation
def test_from_dict_defaults_and_to_dict():
    task = Task.from_dict({})
    assert task.name == "custom" and task.dataset == DatasetSpec() and task.forget == ForgetSpec()
    assert task.model == ModelSpec() and task.recipe == Recipe() and task.seed == 0
    out = task.to_dict()
    assert out["forget_indices"] is None and out["model"] == {"arch": "mlp", "options": {}, "normalize": "data"}


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"nmae": "x"}, "unknown key 'nmae'"),
        ({"dataset": {"name": "digits", "rooot": "/x"}}, "rooot"),
        ({"forget": {"kind": "random", "fractoin": 0.1}}, "fractoin"),
        ({"recipe": {"epoch": 3}}, "epoch"),
        ({"model": {"arch": "mlp", "widht": 3}}, "unknown model key 'widht'"),
        ({"dataset": {"name": "imagenet"}}, "unknown dataset 'imagenet'"),
        ({"forget": {"kind": "everything"}}, "unknown forget kind 'everything'"),
        ({"recipe": {"optimizer": "lbfgs"}}, "unknown optimizer 'lbfgs'"),
        ({"recipe": {"schedule": "linear"}}, "unknown schedule"),
        ({"recipe": {"augment": "mixup"}}, "unknown augmentation"),
        ({"recipe": {"lr": -0.1}}, "lr must be positive"),
        ({"recipe": {"epochs": 0}}, "epochs"),
        ({"recipe": {"lr": "fast"}}, "lr"),
        ({"model": "mlp"}, "model"),
        ({"dataset": "digits"}, "dataset"),
        ({"seed": "abc"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"forget_indices": ["a"]}, "forget_indices"),
        ({"forget_indices": 5}, "forget_indices"),
        ({"forget": {"kind": "random", "fraction": "0.1"}}, "fraction"),
        ({"forget": {"kind": "full-class", "cls": 1.5}}, "cls"),
        ({"model": {"arch": 3}}, "arch"),
        ({"name": ["a"]}, "name"),
    ],
)
def test_invalid_task_dicts(raw, fragment):
    with pytest.raises(TaskError, match=fragment):
        Task.from_dict(raw)


def test_task_must_be_a_table(tmp_path):
    with pytest.raises(TaskError, match="table|mapping|object"):
        Task.from_dict([1, 2])  # type: ignore[arg-type]
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(TaskError, match="list.json|object|mapping"):
        Task.from_file(path)


def test_unreadable_task_files(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        Task.from_file(tmp_path / "missing.toml")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("name = \n[[")
    with pytest.raises(TaskError, match="cannot parse task file .*bad.toml"):
        Task.from_file(bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(TaskError, match="cannot parse task file .*bad.json"):
        Task.from_file(bad_json)
    with pytest.raises(TaskError, match="cannot read task file"):
        Task.from_file(tmp_path)


def test_toml_task_file_written_by_hand(tmp_path, data):
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\nseed = 4\n\n[dataset]\nname = "digits"\nval_fraction = 0.1\n\n'
        '[forget]\nkind = "class-subset"\ncls = 2\ncount = 5\n\n[model]\narch = "cnn"\n\n'
        '[model.options]\nwidth = 8\n\n[recipe]\nepochs = 2\nlr = 0.1\n'
    )
    task = Task.from_file(path)
    assert task.name == "mine" and task.seed == 4 and task.dataset.val_fraction == 0.1
    assert task.forget == ForgetSpec("class-subset", cls=2, count=5)
    assert task.model == ModelSpec("cnn", {"width": 8}) and task.recipe.epochs == 2
    assert len(task.materialise(data).forget_indices) == 5


# -------------------------------------------------------------------------------------------- named tasks
@pytest.mark.parametrize("name", sorted(NAMED_TASKS))
def test_named_tasks_are_valid(name):
    task = NAMED_TASKS[name]
    assert task.name == name and not task.is_materialised
    task.recipe.validate()
    assert Task.from_dict(task.to_dict()) == task
    assert resolve_task(name) == task


def test_named_digits_tasks_materialise():
    data = load_dataset("digits")
    random_task = NAMED_TASKS["digits"].materialise(data)
    assert len(random_task.forget_indices) == round(0.1 * len(data.train))
    class_task = NAMED_TASKS["digits-class"].materialise(data)
    assert class_task.forget_indices == tuple(int(i) for i in np.flatnonzero(data.train.y.numpy() == 3))


def test_resolve_task_overrides_root_and_reads_files(tmp_path):
    task = resolve_task("cifar10-class", data_root="/data")
    assert task.dataset.root == "/data" and task.dataset.name == "cifar10"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "file-task", "seed": 2, "dataset": {"name": "npz"}}))
    assert resolve_task(str(path)).name == "file-task"
    assert resolve_task(str(path), data_root="/x").dataset.root == "/x"


def test_data_root_does_not_apply_to_digits():
    with pytest.raises(TaskError, match="--data-root does not apply to task 'digits'"):
        resolve_task("digits", data_root="/x")


def test_unknown_task_suggests_close_names():
    with pytest.raises(TaskError, match="unknown task 'digit'.*did you mean digits"):
        resolve_task("digit")
    with pytest.raises(TaskError, match="named tasks: digits"):
        resolve_task("zzz")
    with pytest.raises(TaskError, match="not found"):
        resolve_task("missing.toml")


def test_label_flip_draws_flipped_labels_and_enters_the_hash():
    from muaudit.data import load_dataset
    from muaudit.task import ForgetSpec, Task, TaskError

    data = load_dataset("digits")
    task = Task(forget=ForgetSpec("label-flip", fraction=0.1), seed=3).materialise(data)
    true = data.train.y[list(task.forget_indices)].numpy()
    assert len(task.poison_labels) == len(task.forget_indices)
    assert all(p != t for p, t in zip(task.poison_labels, true))
    split = task.training_split(data)
    assert split.y[list(task.forget_indices)].tolist() == list(task.poison_labels)
    assert Task.from_dict(task.to_dict()).content_hash() == task.content_hash()
    altered = Task(**{**task.__dict__, "poison_labels": tuple((p + 1) % 10 for p in task.poison_labels)})
    assert altered.content_hash() != task.content_hash()
    with pytest.raises(TaskError, match="target"):
        Task(forget=ForgetSpec("label-flip", count=5, target=11)).materialise(data)
