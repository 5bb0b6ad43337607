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
