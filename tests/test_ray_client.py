"""``--ray-address ray://host:port`` (issue 15): an audit through Ray's client gives the sequential scorecard.

A Ray head with a client server is started for the test (``ray start --head --block``, in its own session, ended
with its process group). Token authentication is disabled on both sides (``RAY_AUTH_MODE=disabled``): with it on,
Ray 2.60's client timed out on this machine (its server logged a request without an authorization header).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from muaudit.cli import main


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def ray_client_address():
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'muaudit[ray]')")
    port, client_port = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    temp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # its own (short: socket paths) folder: nothing left in /tmp/ray
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={port}", f"--ray-client-server-port={client_port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--temp-dir={temp}"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not _answers(client_port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.skip("a Ray head with a client server could not start here")
            time.sleep(0.5)
        yield f"ray://127.0.0.1:{client_port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _score(tmp_path: Path, name: str, extra: list[str]) -> list[str]:
    return ["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--gold-seeds", "2",
            "--quiet", "--cache-dir", str(tmp_path / f"cache-{name}"), "--out", str(tmp_path / name), *extra]


def _card(tmp_path: Path, name: str) -> dict:
    card = json.loads((tmp_path / name / "scorecard.json").read_text())
    card.pop("timings")
    return card


def test_an_audit_through_the_ray_client_gives_the_sequential_scorecard(ray_client_address, tmp_path):
    address, env = ray_client_address
    assert main(_score(tmp_path, "here", [])) == 0
    client = subprocess.run([sys.executable, "-m", "muaudit", *_score(tmp_path, "client", [
        "--executor", "ray", "--ray-address", address])], env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300)
    assert client.returncode == 0, client.stderr
    assert _card(tmp_path, "client") == _card(tmp_path, "here")
