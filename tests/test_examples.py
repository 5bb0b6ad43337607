"""The worked example examples/ci-gate runs in muaudit's CI: its pytest gates and its shell gate."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "ci-gate"


def test_the_ci_gate_example_passes_with_the_plugin(pytester, muaudit_plugin_args):
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_inprocess(*muaudit_plugin_args)
    result.assert_outcomes(passed=3)  # the committed baseline is approved: no regeneration


def _gate_sh(tmp_path: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    project = tmp_path / "ci-gate"
    shutil.copytree(EXAMPLE, project)
    env = {**os.environ, "MUAUDIT": f"{sys.executable} -m muaudit", "MUAUDIT_CACHE_DIR": str(cache_dir),
           "OUT": str(tmp_path / "run")}
    return subprocess.run(["bash", str(project / "gate.sh"), "--device", "cpu", *extra], capture_output=True,
                          text=True, env=env, timeout=600)


def test_the_ci_gate_shell_line_passes_then_fails_on_a_violated_gate(tmp_path, cache_dir):
    passing = _gate_sh(tmp_path / "a", cache_dir)
    assert passing.returncode == 0, passing.stderr
    assert "muaudit: gates: 5 passed, 0 failed" in passing.stderr
    assert (tmp_path / "a" / "run" / "scorecard.json").is_file()
    failing = _gate_sh(tmp_path / "b", cache_dir, "--fail-on", "test_error >= 0")
    assert failing.returncode == 1, failing.stderr
    assert "muaudit: gate FAILED [retrain] (fail-on) test_error >= 0: test_error = " in failing.stderr
    assert (tmp_path / "b" / "run" / "scorecard.json").is_file()  # written before the gate failed
