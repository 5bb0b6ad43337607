"""Executors (issue 15): local worker processes and Ray train exactly the models the sequential path trains."""
from __future__ import annotations

import importlib.util
import json
import os
import textwrap
import time
from dataclasses import replace

import numpy as np

import pytest
import torch

from muaudit.audit import prepare
from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.cli import main
from muaudit.data import load_dataset
from muaudit.engine import ProcessExecutor, RayExecutor, SequentialExecutor, make_executor
from muaudit.errors import ConfigurationError, MuauditError
from muaudit.shadows import ModelRequest, ShadowBank
from muaudit.task import NAMED_TASKS, ModelSpec


def _states(setup) -> list[str]:
    return [state_dict_sha256(m.state_dict()) for m in (setup.original, *(g.model for g in setup.golds))]


def test_worker_processes_train_bit_identical_models(tmp_path):
    task = NAMED_TASKS["digits"]
    sequential = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "a"), executor=SequentialExecutor())
    spread = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "b"), executor=ProcessExecutor(2))
    assert spread._bank.n_trained == 3 and _states(spread) == _states(sequential)
    assert all(g.train_seconds > 0 for g in spread.golds)


def test_each_executor_gives_the_same_scorecard(tmp_path, capsys):
    cards = []
    for name, extra in (("sequential", []), ("processes", ["--workers", "2"])):
        out = tmp_path / name
        assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                     "--cache-dir", str(tmp_path / f"cache-{name}"), "--executor", name, *extra, "--out",
                     str(out)]) == 0
        card = json.loads((out / "scorecard.json").read_text())
        card.pop("timings")
        cards.append(card)
    assert cards[0] == cards[1]


KILLER = '''
import multiprocessing, os
from torch import nn


def build(input_shape, n_classes):
    """Dies in a worker process (as an out-of-memory kill would), builds an MLP in the main process."""
    if multiprocessing.current_process().name != "MainProcess":
        os._exit(9)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))
'''


def test_a_dead_worker_fails_the_run_clearly_and_caches_nothing(tmp_path, monkeypatch):
    (tmp_path / "killer_arch.py").write_text(textwrap.dedent(KILLER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}")
    base = NAMED_TASKS["digits"]
    task = replace(base, model=ModelSpec("factory:killer_arch:build"), recipe=replace(base.recipe, epochs=1))
    cache = tmp_path / "cache"
    setup = prepare(task, gold_count=0, cache=TensorCache(cache), executor=ProcessExecutor(2))  # original: 1 model
    with pytest.raises(MuauditError, match="worker died while training the gold model"):
        from muaudit.models import add_golds

        add_golds(setup, 2)
    entries = [p for p in cache.rglob("*.safetensors")]
    assert len(entries) == 1  # only the original, trained in process; no gold entry, whole or partial


def test_executor_options():
    assert make_executor("sequential").workers == 1 and make_executor("processes", 3).workers == 3
    with pytest.raises(ConfigurationError, match="at least 1"):
        ProcessExecutor(0)
    with pytest.raises(ConfigurationError, match="unknown executor"):
        make_executor("dask")


@pytest.mark.parametrize("argv, fragment", [
    (["--executor", "processes", "--workers", "0"], "--workers must be at least 1"),
    (["--executor", "ray", "--workers", "0"], "--workers must be at least 1"),
    (["--workers", "2"], "--workers needs --executor processes or ray"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "processes", "--ray-gpus", "0.5"], "--ray-gpus needs --executor ray"),
    (["--executor", "dask"], "invalid choice: 'dask'"),
])
def test_bad_executor_options_are_one_line(tmp_path, capsys, argv, fragment):
    code = main(["score", "--method", "finetune", "--cache-dir", str(tmp_path / "never"), *argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "never").exists()


def test_one_torch_thread_in_workers_does_not_change_the_driver():
    before = torch.get_num_threads()
    ProcessExecutor(2)
    assert torch.get_num_threads() == before


def test_gold_models_say_whether_they_came_from_the_cache(tmp_path):
    cache = TensorCache(tmp_path / "c")
    cold = prepare(NAMED_TASKS["digits"], gold_count=2, cache=cache)
    assert [g.from_cache for g in cold.golds] == [False, False]
    warm = prepare(NAMED_TASKS["digits"], gold_count=3, cache=cache)  # two cached, one new
    assert [g.from_cache for g in warm.golds] == [True, True, False]


# ---------------------------------------------------------------------------------------------- chunks
def _bank(tmp_path, name, executor, chunk):
    data = load_dataset("digits")
    task = NAMED_TASKS["digits"].materialise(data)
    return ShadowBank(task, data, TensorCache(tmp_path / name), torch.device("cpu"),
                      vectorise="always", chunk=chunk, executor=executor)


def _shadow_requests(n: int) -> list[ModelRequest]:
    rng = np.random.default_rng(0)
    return [ModelRequest("shadow", np.flatnonzero(rng.random(1500) < 0.5), seed=s) for s in range(n)]


def test_vmap_chunks_spread_over_processes_are_bit_identical(tmp_path):
    requests = _shadow_requests(4)
    here = _bank(tmp_path, "here", SequentialExecutor(), chunk=2).models(requests)
    spread_bank = _bank(tmp_path, "spread", ProcessExecutor(2), chunk=2)
    spread = spread_bank.models(requests)
    assert spread_bank.n_trained == 4
    assert [state_dict_sha256(m.state_dict()) for m in spread] == [state_dict_sha256(m.state_dict()) for m in here]


# -------------------------------------------------------------------------------------------------- Ray
def test_ray_absent_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("muaudit.rayconnect.ray_installed", lambda: False)
    code = main(["score", "--method", "finetune", "--cache-dir", str(tmp_path / "never"), "--executor", "ray"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "pip install 'muaudit[ray]'" in lines[0], lines
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # the Python API: the same message
    with pytest.raises(ConfigurationError, match=r"muaudit\[ray\]"):
        RayExecutor()


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'muaudit[ray]')")


@needs_ray
def test_an_unreachable_ray_address_fails_in_bounded_time(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr("muaudit.rayconnect.RAY_CONNECT_TIMEOUT_S", 2.0)
    for address in (f"127.0.0.1:{port}", f"ray://10.255.255.1:{port}", "not-an-address"):
        start = time.monotonic()
        code = main(["score", "--method", "finetune", "--cache-dir", str(tmp_path / "never"), "--executor", "ray",
                     "--ray-address", address])
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, lines
        assert "cannot reach Ray" in lines[0] or "--ray-address must be" in lines[0], lines
        assert time.monotonic() - start < 30  # bounded: the 2 s connect limit, not Ray's minutes of retries
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for this module's Ray tests (skipped, with Ray's reason, where it cannot start)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'muaudit[ray]')")
    executor = RayExecutor(workers=2)
    try:
        executor.connect()
    except ConfigurationError as exc:
        pytest.skip(f"Ray cannot start here: {exc}")
    yield executor
    executor.ray.shutdown()


def test_ray_trains_bit_identical_models_and_scorecards(local_ray, tmp_path):
    task = NAMED_TASKS["digits"]
    sequential = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "a"), executor=SequentialExecutor())
    spread = prepare(task, gold_count=2, cache=TensorCache(tmp_path / "b"), executor=local_ray)
    assert spread._bank.n_trained == 3 and _states(spread) == _states(sequential)
    cards = []
    for name, extra in (("sequential", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        out = tmp_path / name
        assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                     "--cache-dir", str(tmp_path / f"cache-{name}"), *extra, "--out", str(out)]) == 0
        card = json.loads((out / "scorecard.json").read_text())
        card.pop("timings")
        cards.append(card)
    assert cards[0] == cards[1]


def test_ray_spreads_vmap_chunks_bit_identically(local_ray, tmp_path):
    requests = _shadow_requests(4)
    here = _bank(tmp_path, "here", SequentialExecutor(), chunk=2).models(requests)
    spread = _bank(tmp_path, "ray", local_ray, chunk=2).models(requests)
    assert [state_dict_sha256(m.state_dict()) for m in spread] == [state_dict_sha256(m.state_dict()) for m in here]


RAY_KILLER = """
import os
from torch import nn


def build(input_shape, n_classes):
    \"\"\"Dies in a Ray worker (as an out-of-memory kill would): {how}; builds an MLP in the driver.\"\"\"
    if os.getpid() != {driver}:
        marker = {marker!r}
        if {always} or not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))
"""


def _killer_task(tmp_path, monkeypatch, name: str, always: bool):
    how = "every time" if always else "the first time only"
    source = RAY_KILLER.format(how=how, driver=os.getpid(), marker=str(tmp_path / f"{name}.died"), always=always)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = NAMED_TASKS["digits"]
    return replace(base, model=ModelSpec(f"factory:{name}:build"), recipe=replace(base.recipe, epochs=1))


def test_a_ray_worker_killed_once_is_retried_and_the_model_is_the_same(local_ray, tmp_path, monkeypatch):
    task = _killer_task(tmp_path, monkeypatch, "ray_dies_once", always=False)
    spread = prepare(task, gold_count=1, cache=TensorCache(tmp_path / "ray"), executor=local_ray)
    assert (tmp_path / "ray_dies_once.died").exists()  # a worker did die
    here = prepare(task, gold_count=1, cache=TensorCache(tmp_path / "here"), executor=SequentialExecutor())
    assert _states(spread) == _states(here)


def test_a_ray_worker_that_always_dies_fails_clearly_and_caches_nothing(local_ray, tmp_path, monkeypatch):
    task = _killer_task(tmp_path, monkeypatch, "ray_always_dies", always=True)
    cache = tmp_path / "cache"
    executor = RayExecutor(workers=2, retries=1)
    with pytest.raises(MuauditError, match="Ray worker died 2 time.*original model.*nothing of it was cached"):
        prepare(task, gold_count=1, cache=TensorCache(cache), executor=executor)
    assert not list(cache.rglob("*.safetensors"))


@pytest.mark.parametrize("command", [["train", "--out", "x.pt"], ["tune", "--method", "finetune"],
                                     ["golds"], ["compare", "--methods", "finetune"]])
def test_every_training_command_checks_its_executor_options(tmp_path, capsys, command):
    code = main([*command, "--cache-dir", str(tmp_path / "never"), "--workers", "0", "--executor", "processes"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--workers must be at least 1" in lines[0], lines
    assert not (tmp_path / "never").exists()


def test_tuning_proxies_train_on_the_audit_executor(tmp_path):
    from muaudit.plugins import METHODS, load_by_name
    from muaudit.tune import tune

    class Counting(SequentialExecutor):
        def __init__(self) -> None:
            self.models = 0

        def train(self, *args, **kwargs):
            out = super().train(*args, **kwargs)
            self.models += len(out)
            return out

    executor = Counting()
    setup = prepare(NAMED_TASKS["digits"], gold_count=1, cache=TensorCache(tmp_path), executor=executor)
    before = executor.models
    tune(setup, load_by_name(METHODS, "finetune"), {"epochs": 1}, budget=1, proxies=1, proxy_golds=1)
    assert before == 2 and executor.models == before + 1  # the proxy's gold model went through it too


RAY_RAISER = """
import os
from torch import nn
from muaudit.errors import TrainingError


def build(input_shape, n_classes):
    if os.getpid() != {driver}:
        raise TrainingError("the recipe diverged in a worker")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes))
"""


def test_an_error_raised_in_a_ray_worker_is_raised_as_itself(local_ray, tmp_path, monkeypatch):
    from muaudit.errors import TrainingError

    (tmp_path / "ray_raiser.py").write_text(textwrap.dedent(RAY_RAISER.format(driver=os.getpid())))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = NAMED_TASKS["digits"]
    task = replace(base, model=ModelSpec("factory:ray_raiser:build"), recipe=replace(base.recipe, epochs=1))
    with pytest.raises(TrainingError, match="^the recipe diverged in a worker$"):
        prepare(task, gold_count=1, cache=TensorCache(tmp_path / "c"), executor=local_ray)
    assert not list((tmp_path / "c").rglob("*.safetensors"))


def test_executor_usage_errors_import_no_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom muaudit.cli import main\n"
            f"code = main(['score', '--method', 'finetune', '--executor', 'ray', '--ray-address', 'nowhere', "
            f"'--cache-dir', {str(tmp_path / 'never')!r}])\n"
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["2", "False"], result
    assert "--ray-address must be auto, host:port or ray://host:port" in result.stderr


# ------------------------------------------------------------------------------------ method seeds
def _method_runs(setup, executor, seeds):
    from muaudit.plugins import METHODS, load_by_name

    plugin = load_by_name(METHODS, "finetune")
    return executor.run_methods(setup, plugin, {"epochs": 1}, seeds)


def _same_runs(a, b) -> bool:
    return ([state_dict_sha256(r.model.state_dict()) for r in a] == [state_dict_sha256(r.model.state_dict()) for r in b]
            and [(r.params, r.seed, r.preset, r.diagnostics) for r in a]
            == [(r.params, r.seed, r.preset, r.diagnostics) for r in b])


@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    torch.set_num_threads(1)  # the workers' thread count: bit-identity is per thread count on the CPU
    return prepare(NAMED_TASKS["digits"], gold_count=1, cache=TensorCache(tmp_path_factory.mktemp("setup")))


def test_method_seed_runs_on_worker_processes_are_bit_identical(digits_setup):
    here = _method_runs(digits_setup, SequentialExecutor(), [11, 12])
    spread = _method_runs(digits_setup, ProcessExecutor(2), [11, 12])
    assert _same_runs(here, spread) and all(r.seconds > 0 for r in spread)
    assert state_dict_sha256(here[0].model.state_dict()) != state_dict_sha256(here[1].model.state_dict())


def test_method_seed_runs_on_ray_are_bit_identical(local_ray, digits_setup):
    here = _method_runs(digits_setup, SequentialExecutor(), [11, 12])
    assert _same_runs(here, _method_runs(digits_setup, local_ray, [11, 12]))


def test_cli_method_seeds_on_workers_match_the_sequential_run(tmp_path):
    cards = []
    for name, extra in (("sequential", []), ("processes", ["--executor", "processes", "--workers", "2"])):
        out = tmp_path / name
        assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                     "--cache-dir", str(tmp_path / "cache"), "--method-seeds", "3", *extra, "--out", str(out)]) == 0
        cards.append(json.loads((out / "scorecard.json").read_text())["method_seeds"])
    assert cards[0] == cards[1]


# ----------------------------------------------------------------- private data, grids, derived models
def _worker_holds_shared_tensors() -> bool:
    from muaudit.engine import _WORKER

    return bool(_WORKER["data"].train.x.is_shared() or _WORKER["pool"].x.is_shared())


def _is_shared(tensor: torch.Tensor) -> bool:
    return tensor.is_shared()


def test_process_workers_hold_a_private_copy_of_the_data():
    """Tensors handed to a pool as they are arrive in shared memory, where training was measured 25-40% slower
    (``muaudit.engine._private``); the workers must hold their own copy of the call's data."""
    data = load_dataset("digits")
    task = NAMED_TASKS["digits"].materialise(data)
    with ProcessExecutor(2) as executor:
        jobs = [(_worker_holds_shared_tensors, ()) for _ in range(4)]
        assert executor._run(("train", (task, data, "cpu", None)), jobs, ["probe"] * 4) == [False] * 4
        assert executor._run(("train", (task, data, "cpu", None)), [(_is_shared, (data.train.x,))],
                             ["probe"]) == [True]  # what the private copy avoids: the probe can tell


def _pid() -> int:
    return os.getpid()


def test_the_process_pool_persists_across_calls_and_is_closed():
    data = load_dataset("digits")
    task = NAMED_TASKS["digits"].materialise(data)
    executor = ProcessExecutor(2)
    payload = ("train", (task, data, "cpu", None))
    assert executor._run(payload, [(time.sleep, (0.2,))] * 4, ["probe"] * 4) == [None] * 4
    workers = set(executor._pool._processes)
    assert len(workers) == 2
    for _ in range(2):  # later calls: the same (warm) workers, no new process
        assert set(executor._run(payload, [(_pid, ())] * 8, ["probe"] * 8)) <= workers
        assert set(executor._pool._processes) == workers
    spool = executor._spool.name
    executor.close()
    assert executor._pool is None and not os.path.exists(spool)
    assert not set(executor._run(payload, [(_pid, ())] * 2, ["probe"] * 2)) & workers  # a new pool after close
    executor.close()


def _finetune():
    from muaudit.plugins import METHODS, load_by_name

    return load_by_name(METHODS, "finetune")


def test_a_run_grid_keeps_chosen_errors_in_place_and_raises_others(digits_setup):
    from muaudit.engine import RunFailure
    from muaudit.errors import ParameterError

    jobs = [({"epochs": 1}, 3), ({"epochs": 1, "lr": -1.0}, 3), ({"epochs": 1, "lr": 0.05}, 4)]
    here = SequentialExecutor().run_grid(digits_setup, _finetune(), jobs, keep=(ParameterError,))
    spread = ProcessExecutor(2).run_grid(digits_setup, _finetune(), jobs, keep=(ParameterError,))
    for runs in (here, spread):
        assert isinstance(runs[1], RunFailure) and runs[1].kind == "ParameterError" and "lr" in runs[1].reason
    assert _same_runs([here[0], here[2]], [spread[0], spread[2]])
    with pytest.raises(ParameterError, match="lr"):
        ProcessExecutor(2).run_grid(digits_setup, _finetune(), jobs)


def test_tuning_is_the_same_on_worker_processes(tmp_path):
    from muaudit.tune import tune

    torch.set_num_threads(1)
    results = []
    for name, executor in (("a", SequentialExecutor()), ("b", ProcessExecutor(2))):
        setup = prepare(NAMED_TASKS["digits"], gold_count=0, cache=TensorCache(tmp_path / name), executor=executor)
        results.append(tune(setup, _finetune(), {"epochs": 1}, budget=3, proxies=1, proxy_golds=1).to_dict())
    for result in results:
        timings = result.pop("timings")
        assert timings["trials_wall_seconds"] > 0
        for trial in result["trials"]:
            assert trial.pop("seconds") > 0
    assert results[0] == results[1] and len(results[0]["trials"]) == 3


class _CountingDerive(ProcessExecutor):
    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.derived: list[bool] = []

    def derive(self, task, data, pool, make, requests, device):
        from muaudit.engine import portable

        self.derived += [portable(make)] * len(requests)
        return super().derive(task, data, pool, make, requests, device)


def _ulira_phi(setup) -> np.ndarray:
    from muaudit.attacking import run_attack
    from muaudit.plugins import ATTACKS, load_by_name
    from muaudit.runs import run_method

    run = run_method(setup, _finetune(), {"epochs": 1}, 5)
    scores = run_attack(setup, load_by_name(ATTACKS, "ulira"), run, {"n_shadows": 4}).unlearned.scores
    return np.concatenate([scores.members, scores.nonmembers])


def test_ulira_unlearned_shadows_are_derived_on_workers_bit_identically(tmp_path):
    torch.set_num_threads(1)
    task = NAMED_TASKS["digits"]
    here = prepare(task, gold_count=0, cache=TensorCache(tmp_path / "a"), executor=SequentialExecutor())
    counting = _CountingDerive(2)
    spread = prepare(task, gold_count=0, cache=TensorCache(tmp_path / "b"), executor=counting)
    assert np.array_equal(_ulira_phi(here), _ulira_phi(spread))
    assert counting.derived == [True] * 4  # the 4 unlearned shadows, portable, in one call
    entries = {p.name for p in (tmp_path / "a").rglob("*.safetensors")}
    assert entries == {p.name for p in (tmp_path / "b").rglob("*.safetensors")}  # the same cache entries


def test_a_derived_model_from_a_closure_is_made_in_this_process(tmp_path):
    bank = _bank(tmp_path, "c", ProcessExecutor(2), 32)
    base = _shadow_requests(2)
    pid = os.getpid()
    seen = []

    def make(model, pool, device, scale):
        seen.append(os.getpid())
        with torch.no_grad():
            next(model.parameters()).mul_(scale)
        return model

    models = bank.derived(make, [(r, {"n": i}, (0.5 * i,)) for i, r in enumerate(base)])
    assert seen == [pid, pid] and len(models) == 2
    assert not next(models[0].parameters()).any() and next(models[1].parameters()).any()  # each got its own args


def test_ulira_unlearned_shadows_on_ray_are_bit_identical(local_ray, tmp_path):
    torch.set_num_threads(1)
    task = NAMED_TASKS["digits"]
    here = prepare(task, gold_count=0, cache=TensorCache(tmp_path / "a"), executor=SequentialExecutor())
    spread = prepare(task, gold_count=0, cache=TensorCache(tmp_path / "b"), executor=local_ray)
    assert np.array_equal(_ulira_phi(here), _ulira_phi(spread))
