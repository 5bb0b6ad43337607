"""The papers report's checks (``reports/scripts/papers.py``) cannot be passed by a model that was not changed."""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

from muaudit.audit import MethodRun, build_scorecard, run_method
from muaudit.plugins import ATTACKS, METHODS, load_by_name

SCRIPT = Path(__file__).resolve().parents[1] / "reports" / "scripts" / "papers.py"


@pytest.fixture(scope="module")
def papers():
    spec = importlib.util.spec_from_file_location("papers_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["papers_report"] = module
    spec.loader.exec_module(module)
    return module


def _attacks():
    return [(load_by_name(ATTACKS, a), {}) for a in ("loss", "entropy-lr")]


def _untouched(setup, method: str, params: dict | None = None) -> dict:
    """A scorecard of the original model labelled as ``method``, unlearned in 1 ms (an untouched model)."""
    run = MethodRun(copy.deepcopy(setup.original), load_by_name(METHODS, method), dict(params or {}), 0, 0.001, 0.0)
    return build_scorecard(setup, run, _attacks()).to_dict()


def test_untouched_model_did_not_act_and_retrain_did(papers, digits_class_setup):
    setup = digits_class_setup
    n = len(setup.forget)
    idle = papers.card_of(_untouched(setup, "mu-mis"))
    assert not papers.acted(idle, n)[0]
    retrain = build_scorecard(setup, run_method(setup, load_by_name(METHODS, "retrain"), {}), _attacks())
    assert papers.acted(retrain, n)[0]


def test_no_claim_is_reproduced_by_untouched_models(papers, digits_class_setup):
    setup = digits_class_setup
    labels = ["mu-mis", "pgu", "natmu", "finetune", "neggrad", "random-label", "bad-teacher", "salun", "ssd", "tmu",
              "targeted-noise-1", "targeted-noise-3", "neggrad-forgets"]
    retrain = build_scorecard(setup, run_method(setup, load_by_name(METHODS, "retrain"), {}), _attacks()).to_dict()
    cards = {label: _untouched(setup, label.removesuffix("-1").removesuffix("-3").removesuffix("-forgets"),
                               papers.NEGGRAD_FORGETS["digits"] if label == "neggrad-forgets" else None)
             for label in labels}
    cards["retrain"] = retrain
    meta = {"n_forget": len(setup.forget), "epochs": setup.task.recipe.epochs, "arm": "tuned", "budget": 1,
            "proxies": 1}
    task = {"meta": meta, "cards": cards}
    for claim in papers.CLAIMS:
        if claim.check in (papers.pgu_incremental,):
            task_here = {"meta": meta, "cards": {"step1": cards["pgu"]}}
        elif claim.check is papers.pgu_depoison:
            continue  # needs a label-flip task's forget_clean_error; covered by the acted() test's rule
        else:
            task_here = task
        status, evidence = claim.check(task_here)
        assert status != "reproduced", (claim.text, evidence)


def test_depoison_check_needs_action(papers, digits_setup):
    """On a label-flip task an untouched original must not pass the de-poisoning claim either."""
    from muaudit.audit import prepare
    from muaudit.task import NAMED_TASKS

    setup = prepare(NAMED_TASKS["digits-poison"], gold_count=2, cache=digits_setup.cache, device=digits_setup.device)
    meta = {"n_forget": len(setup.forget), "epochs": setup.task.recipe.epochs}
    status, evidence = papers.pgu_depoison({"meta": meta, "cards": {"pgu": _untouched(setup, "pgu")}})
    assert status != "reproduced", evidence
