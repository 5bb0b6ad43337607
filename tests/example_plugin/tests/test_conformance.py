"""The example plugin's conformance tests, written as a third party would: muaudit's kit, nothing else.

Run with ``pytest tests`` from the distribution's directory (muaudit and this package installed). ``check()``
runs on a digits audit set-up that muaudit trains once per process in a temporary directory; pass your own,
``check(muaudit.testing.tiny_setup(cache_dir, task))``, to use another task or cache.
"""
from __future__ import annotations

from muaudit.testing import parametrize_with_checks
from muaudit_example_plugin import ConfidenceAttack, WeightShrink


@parametrize_with_checks([WeightShrink, ConfidenceAttack], params={"weight-shrink": {"factor": 0.2}})
def test_conformance(plugin, check):
    check()
