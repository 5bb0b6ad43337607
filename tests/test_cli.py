"""The command line end to end on the digits task, and its handling of bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from muaudit.checkpoint import file_sha256
from muaudit.cli import main


@pytest.fixture(scope="module")
def original(tmp_path_factory, cache_dir):
    path = tmp_path_factory.mktemp("ckpt") / "original.pt"
    assert main(["train", "--task", "digits", "--out", str(path), "--cache-dir", str(cache_dir), "--quiet"]) == 0
    return path


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, expected_code, fragment):
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("muaudit: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in err


def test_train_writes_a_self_describing_checkpoint(original):
    from muaudit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(original)
    assert ckpt.metadata["role"] == "original"
    assert ckpt.metadata["task"]["forget_indices"]
    assert ckpt.metadata["arch"] == "mlp" and "torch" in ckpt.metadata["versions"]


def test_score_from_checkpoint_leaves_it_unchanged(original, cache_dir, tmp_path, capsys):
    before = file_sha256(original)
    code, out, _ = run_cli(["score", "--method", "finetune", "--model", str(original), "--cache-dir",
                            str(cache_dir), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 0
    assert "test_error" in out and "gold-vs-gold" in out
    assert file_sha256(original) == before
    card = json.loads((tmp_path / "run" / "scorecard.json").read_text())
    assert card["provenance"]["original"]["sha256"] == before
    assert (tmp_path / "run" / "scorecard.md").read_text().startswith("# muaudit scorecard")


def test_score_without_model_uses_the_embedded_default(cache_dir, capsys):
    code, out, _ = run_cli(["score", "--method", "neggrad", "--cache-dir", str(cache_dir), "--quiet"], capsys)
    assert code == 0 and "task digits" in out


def test_method_args_reach_the_method(cache_dir, capsys):
    code, out, _ = run_cli(["score", "--method", "finetune", "--method-arg", "epochs=1", "--method-arg",
                            "lr=0.001", "--cache-dir", str(cache_dir), "--json", "--quiet"], capsys)
    assert code == 0
    assert json.loads(out)["method"]["params"]["epochs"] == 1


def _without_timings(path: Path) -> dict:
    card = json.loads(path.read_text())
    card.pop("timings")
    card["provenance"]["original"].pop("path", None)
    return card


def test_same_seeds_give_identical_scorecards_even_with_fresh_caches(original, tmp_path, capsys):
    for i in (1, 2):
        code, _, _ = run_cli(["score", "--method", "finetune", "--model", str(original), "--cache-dir",
                              str(tmp_path / f"cache{i}"), "--out", str(tmp_path / f"run{i}"), "--quiet"], capsys)
        assert code == 0
    assert _without_timings(tmp_path / "run1" / "scorecard.json") == \
        _without_timings(tmp_path / "run2" / "scorecard.json")


def test_compare_writes_one_table(original, cache_dir, tmp_path, capsys):
    code, out, _ = run_cli(["compare", "--methods", "retrain,finetune,neggrad", "--method-arg",
                            "neggrad.lr=1e-3", "--model", str(original), "--cache-dir", str(cache_dir),
                            "--out", str(tmp_path / "cmp"), "--quiet"], capsys)
    assert code == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| readout | retrain | finetune | neggrad | gold |" in table
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["failures"] == []
    cards = comparison["scorecards"]
    assert [c["method"]["name"] for c in cards] == ["retrain", "finetune", "neggrad"]
    assert cards[2]["method"]["params"]["lr"] == 1e-3
    assert len({json.dumps(c["provenance"]["seeds"]["gold"]) for c in cards}) == 1  # shared gold models


def test_bare_state_dict_needs_task_and_arch(original, cache_dir, tmp_path, capsys):
    from muaudit.checkpoint import load_checkpoint

    bare = tmp_path / "bare.pt"
    torch.save(load_checkpoint(original).state_dict, bare)
    code, _, err = run_cli(["score", "--method", "finetune", "--model", str(bare), "--cache-dir",
                            str(cache_dir), "--quiet"], capsys)
    assert_one_line_error(code, err, 2, "bare state dict")
    code, out, _ = run_cli(["score", "--method", "finetune", "--model", str(bare), "--task", "digits",
                            "--arch", "mlp", "--cache-dir", str(cache_dir), "--quiet"], capsys)
    assert code == 0 and "test_error" in out


def _nan_checkpoint(original: Path, tmp_path: Path) -> Path:
    from muaudit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(original)
    state = dict(ckpt.state_dict)
    key = next(k for k in state if k.endswith("weight"))
    state[key] = state[key].clone()
    state[key][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save({"state_dict": state, "muaudit_metadata": json.dumps(ckpt.metadata)}, path)
    return path


def _wrong_arch_checkpoint(original: Path, tmp_path: Path) -> Path:
    from muaudit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(original)
    path = tmp_path / "wrong.pt"
    torch.save({k: v for k, v in ckpt.state_dict.items() if not k.startswith("net.5")}, path)
    return path


def _index_task(tmp_path: Path, indices: str) -> Path:
    (tmp_path / "idx.json").write_text(indices)
    task = tmp_path / "task.toml"
    task.write_text('name = "bad"\n[dataset]\nname = "digits"\n[forget]\nkind = "indices"\npath = "idx.json"\n'
                    '[recipe]\nepochs = 2\n')
    return task


BAD_INPUTS = {
    "missing checkpoint": (lambda o, t: ["--model", str(t / "nope.pt")], 2, "checkpoint not found"),
    "nan weights": (lambda o, t: ["--model", str(_nan_checkpoint(o, t))], 2, "NaN or infinite"),
    "wrong architecture": (lambda o, t: ["--model", str(_wrong_arch_checkpoint(o, t)), "--task", "digits",
                                         "--arch", "mlp"], 2, "does not match the architecture"),
    "not a checkpoint": (lambda o, t: ["--model", str(_text_file(t))], 2, "refused to load"),
    "empty forget set": (lambda o, t: ["--task", str(_index_task(t, "[]"))], 2, "the forget set is empty"),
    "out-of-range forget": (lambda o, t: ["--task", str(_index_task(t, "[1, 99999]"))], 2, "out of range"),
    "unknown task": (lambda o, t: ["--task", "digitz"], 2, "did you mean digits"),
    "bad method arg": (lambda o, t: ["--method-arg", "lr=-1"], 2, "must be a float in the range (0, inf)"),
    "unknown method arg": (lambda o, t: ["--method-arg", "foo=1"], 2, "has no parameter 'foo'"),
    "attack arg without attack": (lambda o, t: ["--attack-arg", "n=1"], 2, "--attack-arg ATTACK.KEY=VALUE"),
    "unknown attack arg": (lambda o, t: ["--attack-arg", "loss.foo=1"], 2, "has no parameter 'foo'"),
    "repeated attack": (lambda o, t: ["--attacks", "loss,loss"], 2, "distinct"),
}


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_no_output(case, original, cache_dir, tmp_path, capsys):
    make_args, expected, fragment = BAD_INPUTS[case]
    out_dir = tmp_path / "out"
    args = ["score", "--method", "finetune", "--cache-dir", str(cache_dir), "--out", str(out_dir), "--quiet",
            *make_args(original, tmp_path)]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, expected, fragment)
    assert not out_dir.exists()


def test_unknown_attack_suggests_and_exits_with_plugin_code(capsys):
    code, _, err = run_cli(["score", "--method", "finetune", "--attacks", "loss,los"], capsys)
    assert_one_line_error(code, err, 3, "did you mean loss")


def test_unknown_method_suggests_and_exits_with_plugin_code(capsys):
    code, _, err = run_cli(["score", "--method", "fintune"], capsys)
    assert_one_line_error(code, err, 3, "did you mean finetune")


def test_usage_errors_are_one_line(capsys):
    code, _, err = run_cli(["score"], capsys)
    assert_one_line_error(code, err, 2, "--method")


def test_train_with_bad_output_leaves_nothing(tmp_path, cache_dir, capsys):
    code, _, err = run_cli(["train", "--task", str(_index_task(tmp_path, "[-1]")), "--out",
                            str(tmp_path / "o.pt"), "--cache-dir", str(cache_dir)], capsys)
    assert_one_line_error(code, err, 2, "out of range")
    assert not (tmp_path / "o.pt").exists()


def test_third_party_plugin_scores_through_the_console_script(original, cache_dir):
    """The installed `muaudit` executable finds a plugin installed from tests/example_plugin."""
    exe = Path(sys.executable).parent / "muaudit"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "muaudit"]
    result = subprocess.run([*command, "score", "--method", "weight-shrink", "--attack", "confidence",
                             "--method-arg", "factor=0.2", "--model", str(original), "--cache-dir",
                             str(cache_dir), "--json", "--quiet"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["provenance"]["method_plugin"]["distribution"] == "muaudit-example-plugin"
    assert card["attacks"][0]["distribution"] == "muaudit-example-plugin"
    assert card["readouts"][0]["name"] == "test_error"
