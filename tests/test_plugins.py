"""Plugin discovery, name resolution, duplicates, broken plugins and contract validation."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from muaudit.cli import main
from muaudit.errors import DuplicatePluginError, PluginLoadError, PluginValidationError, UnknownPluginError
from muaudit.plugins import ATTACKS, METHODS, discover, load, load_by_name, resolve

BUILTIN_METHODS = {"retrain", "finetune", "neggrad"}


def make_fake_dist(root: Path, dist: str, methods: dict[str, str], module_source: str = "") -> Path:
    """A minimal installed distribution (``*.dist-info`` with entry points) on a directory for ``sys.path``."""
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = ["[muaudit.methods]"] + [f"{name} = {target}" for name, target in methods.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    if module_source:
        (root / f"{dist.replace('-', '_')}_mod.py").write_text(textwrap.dedent(module_source))
    return root


GOOD_MODULE = """
from muaudit import UnlearningMethod

class Good(UnlearningMethod):
    summary = "does nothing"
    paper = "none"
    def unlearn(self, model, data, ctx):
        return model

class NotAMethod:
    pass

class NoSummary(UnlearningMethod):
    paper = "none"
    def unlearn(self, model, data, ctx):
        return model

class BadNeeds(Good):
    needs = frozenset({"everything"})
"""


def test_builtins_are_discovered_through_entry_points():
    specs = discover(METHODS)
    names = {s.name for s in specs if s.dist == "muaudit"}
    assert BUILTIN_METHODS <= names
    assert specs == sorted(specs, key=lambda s: (s.name, s.dist))
    assert "loss" in {s.name for s in discover(ATTACKS) if s.dist == "muaudit"}


def test_discovery_imports_nothing():
    import sys

    sys.modules.pop("muaudit_methods.finetune", None)
    discover(METHODS)
    assert "muaudit_methods.finetune" not in sys.modules


def test_core_never_imports_builtins_by_name():
    core = Path(__file__).resolve().parents[1] / "muaudit"
    for path in core.rglob("*.py"):
        text = path.read_text()
        assert "muaudit_methods" not in text and "muaudit_attacks" not in text, path


def test_loaded_plugin_records_provenance():
    plugin = load_by_name(METHODS, "finetune")
    assert plugin.provenance()["distribution"] == "muaudit"
    assert plugin.provenance()["entry_point"] == "muaudit_methods.finetune:Finetune"


def test_unknown_name_suggests_near_matches():
    with pytest.raises(UnknownPluginError, match='unknown method "finetun".*did you mean finetune'):
        resolve(METHODS, "finetun")


def test_duplicate_names_are_an_error_naming_both_distributions(tmp_path, monkeypatch):
    make_fake_dist(tmp_path, "muaudit-fork", {"finetune": "muaudit_fork_mod:Good"}, GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicatePluginError) as info:
        resolve(METHODS, "finetune")
    message = str(info.value)
    assert "muaudit 0.1.0" in message and "muaudit-fork 1.2.3" in message
    assert "muaudit-fork:finetune" in message and "muaudit:finetune" in message
    assert resolve(METHODS, "muaudit:finetune").dist == "muaudit"
    assert load(resolve(METHODS, "muaudit-fork:finetune")).cls.__name__ == "Good"


def test_broken_plugin_error_names_plugin_and_distribution(tmp_path, monkeypatch):
    make_fake_dist(tmp_path, "muaudit-broken", {"broken": "no_such_module_xyz:Thing"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match='method "broken" from muaudit-broken 1.2.3.*ModuleNotFoundError'):
        load_by_name(METHODS, "broken")


@pytest.mark.parametrize("target, message", [
    ("NotAMethod", "is not a subclass of muaudit.UnlearningMethod"),
    ("NoSummary", "must declare a non-empty string 'summary'"),
    ("BadNeeds", "declares unknown data needs"),
])
def test_contract_violations_are_reported(tmp_path, monkeypatch, target, message):
    make_fake_dist(tmp_path, "muaudit-bad", {"bad": f"muaudit_bad_mod:{target}"}, GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginValidationError, match=message) as info:
        load_by_name(METHODS, "bad")
    assert "muaudit-bad 1.2.3" in str(info.value)


def test_list_marks_broken_plugins_and_fails(tmp_path, monkeypatch, capsys):
    make_fake_dist(tmp_path, "muaudit-broken", {"broken": "no_such_module_xyz:Thing"})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "methods"]) == 3
    out = capsys.readouterr().out
    assert "broken" in out and "BROKEN" in out and "finetune" in out


def test_autoload_can_be_disabled(tmp_path, monkeypatch):
    make_fake_dist(tmp_path, "muaudit-fork", {"finetune": "muaudit_fork_mod:Good"}, GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MUAUDIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert resolve(METHODS, "finetune").dist == "muaudit"
    assert all(s.dist == "muaudit" for s in discover(METHODS))


def test_third_party_package_is_installed_and_listed(capsys):
    """tests/example_plugin is pip-installed by the README's test command, from outside the core package."""
    specs = {s.name: s for s in discover(METHODS) + discover(ATTACKS)}
    assert specs["weight-shrink"].dist == "muaudit-example-plugin"
    assert specs["confidence"].dist == "muaudit-example-plugin"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "weight-shrink" in out and "muaudit-example-plugin 0.4.0" in out
