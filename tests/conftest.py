"""Shared fixtures: digits-scale audit set-ups with a private, session-wide model cache."""
from __future__ import annotations

import pytest
import torch

from muaudit.testing import tiny_setup

pytest_plugins = ["pytester"]

# The example distribution's own tests run as a third party runs them, in a separate pytest (test_testing_kit.py).
collect_ignore = ["example_plugin/tests"]

# The test models are tiny: intra-op threading only adds overhead, and on a loaded 2-core machine it
# oversubscribes the CPU badly (measured: ~40x slower MLP steps). One thread also keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("muaudit-cache")


@pytest.fixture(scope="session")
def digits_setup(cache_dir):
    """The default digits task (random 10% forget set), MLP, two gold models."""
    return tiny_setup(cache_dir, "digits", gold_count=2)


@pytest.fixture(scope="session")
def digits_class_setup(cache_dir):
    """The digits full-class task (forget class 3), MLP, two gold models."""
    return tiny_setup(cache_dir, "digits-class", gold_count=2)


@pytest.fixture(scope="session")
def audited_once(cache_dir):
    """One audit in this process first: an in-process pytester run removes the modules it imported when it ends,
    and torch cannot import some of them twice (torch._dynamo registers operator libraries), so the audit's
    lazily imported modules must already be loaded here."""
    import muaudit

    return muaudit.audit("finetune", task="digits", attacks="loss", device="cpu", cache_dir=cache_dir,
                         progress=False, epochs=1)


@pytest.fixture
def muaudit_plugin_args(cache_dir, audited_once) -> list[str]:
    """pytester arguments that load muaudit's pytest plugin as its entry point does once muaudit is installed
    (``-p`` while it is not), on the CPU, with the session's model cache."""
    from importlib.metadata import entry_points

    installed = any(ep.value == "muaudit.pytest_plugin" for ep in entry_points(group="pytest11", name="muaudit"))
    return ([] if installed else ["-p", "muaudit.pytest_plugin"]) + [
        f"--muaudit-cache-dir={cache_dir}", "--muaudit-device=cpu", "-p", "no:cacheprovider"]
