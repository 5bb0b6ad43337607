"""Every built-in method on a task three ways: the published (old) defaults, the task-matched defaults, and tuned.

For each task (default: digits and digits-class):

1. ``muaudit tune`` for every method (budget ``--budget``, proxy forget sets only), timed: tune's cost, also as
   a multiple of one gold retrain of the task;
2. then the gold models, and three runs per method on the same set-up: ``preset=paper`` (the published values,
   the defaults before task matching), ``preset=auto`` (the default now) and the tuned parameters;
3. for each: forget error, test error, their gaps to the gold models' mean, the verdict summary and the method's
   time.

Writes ``reports/protocol/<task>/protocol.{json,md}``. Usage (one torch thread; about 10 minutes per digits task):
    python reports/scripts/protocol_digits.py --tasks digits,digits-class --budget 16 --gold-seeds 3
The same script runs on the Fashion-MNIST tasks (``--tasks fashion-mnist-random,...``), about 30 times slower.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from muaudit import readouts as R
from muaudit.audit import add_golds, build_scorecard, prepare, run_method
from muaudit.cache import TensorCache
from muaudit.errors import MuauditError
from muaudit.plugins import ATTACKS, METHODS, discover, load_by_name
from muaudit.task import resolve_task
from muaudit.tune import has_search_space, tune

OUT = Path(__file__).resolve().parents[1] / "protocol"
CLASS_ONLY = {"unsir"}
ARMS = ("paper", "auto", "tuned")


def builtin_methods() -> list[str]:
    return sorted(s.name for s in discover(METHODS) if s.dist == "muaudit" and s.name != "retrain")


def errors(setup, model) -> dict[str, float]:
    out = setup.outputs(model)
    return {"forget_error": R.error_percent(out.forget_logits, out.forget_labels),
            "test_error": R.error_percent(out.test_logits, out.test_labels)}


def tune_all(setup, methods: list[str], budget: int) -> dict[str, dict]:
    """Tune every method before any gold model of the audited forget set exists."""
    out = {}
    for name in methods:
        plugin = load_by_name(METHODS, name)
        if not has_search_space(plugin.cls):
            continue
        start = time.perf_counter()
        result = tune(setup, plugin, {}, budget=budget, use_cache=False)
        out[name] = {"result": result, "seconds": time.perf_counter() - start}
        print(f"  tuned {name}: {result.chosen} ({out[name]['seconds']:.0f} s)", flush=True)
    return out


def arm_params(arm: str, name: str, tuned: dict) -> dict | None:
    if arm == "paper":
        cls = load_by_name(METHODS, name).cls
        published = next(p for p in ("paper", "cifar10", "official", "large-scale") if p in cls.presets)
        return {"preset": published}
    if arm == "auto":
        return {}
    return dict(tuned[name]["result"].chosen) if name in tuned else None


def evaluate(setup, name: str, arm: str, params: dict, tuned: dict, attack) -> dict:
    plugin = load_by_name(METHODS, name)
    try:
        run = run_method(setup, plugin, params)
    except MuauditError as exc:
        return {"error": str(exc)}
    if arm == "tuned":
        run = replace(run, tuning=tuned[name]["result"].summary())
    card = build_scorecard(setup, run, attack)
    return {**errors(setup, run.model), "params": run.params, "preset": run.preset,
            "verdict": card.verdict_summary, "seconds": run.seconds}


def protocol(task_name: str, methods: list[str], budget: int, gold_seeds: int, cache: TensorCache) -> dict:
    setup = prepare(resolve_task(task_name), gold_count=0, cache=cache, device=torch.device("cpu"))
    methods = [m for m in methods if m not in CLASS_ONLY or setup.profile.removal == "class"]
    tuned = tune_all(setup, methods, budget)
    add_golds(setup, gold_seeds)
    attack = [(load_by_name(ATTACKS, a), {}) for a in ("loss", "entropy-lr", "entropy-svc")]
    golds = [errors(setup, g.model) for g in setup.golds]
    rows = {}
    for name in methods:
        rows[name] = {}
        for arm in ARMS:
            params = arm_params(arm, name, tuned)
            rows[name][arm] = None if params is None else evaluate(setup, name, arm, params, tuned, attack)
    gold_seconds = float(np.mean([g.train_seconds for g in setup.golds]))
    return {"task": task_name, "task_hash": setup.task.content_hash(), "budget": budget, "gold_seeds": gold_seeds,
            "original": errors(setup, setup.original), "golds": golds, "gold_retrain_seconds": gold_seconds,
            "tuning": {n: {"seconds": t["seconds"], "x_gold_retrain": t["seconds"] / gold_seconds,
                           "chosen": t["result"].chosen, "chosen_score": t["result"].chosen_score,
                           "default_score": t["result"].default_score} for n, t in tuned.items()},
            "rows": rows}


def markdown(report: dict) -> str:
    gold_f = np.mean([g["forget_error"] for g in report["golds"]])
    gold_t = np.mean([g["test_error"] for g in report["golds"]])
    lines = [f"# {report['task']}: published defaults, task-matched defaults and tuned", "",
             f"Original: forget error {report['original']['forget_error']:.2f}%, test error "
             f"{report['original']['test_error']:.2f}%. Gold ({report['gold_seeds']} seeds): forget error "
             f"{gold_f:.2f}%, test error {gold_t:.2f}%. Tuning budget {report['budget']} configurations per method "
             f"on 2 proxy forget sets; one gold retrain takes {report['gold_retrain_seconds']:.2f} s.", "",
             "| method | arm | forget error | test error | forget gap to gold | verdict | method s | parameters |",
             "|---|---|---|---|---|---|---|---|"]
    for name, arms in report["rows"].items():
        for arm, r in arms.items():
            if r is None:
                lines.append(f"| {name} | {arm} | - | - | - | nothing to tune | - | - |")
            elif "error" in r:
                lines.append(f"| {name} | {arm} | failed: {r['error']} | | | | | |")
            else:
                params = ", ".join(f"{k}={v}" for k, v in sorted(r["params"].items()) if v is not None)
                lines.append(f"| {name} | {arm} | {r['forget_error']:.2f} | {r['test_error']:.2f} | "
                             f"{r['forget_error'] - gold_f:+.2f} | {r['verdict']} | {r['seconds']:.2f} | {params} |")
    lines += ["", "## Tuning cost", "", "| method | tune seconds | x one gold retrain | chosen | score (default) |",
              "|---|---|---|---|---|"]
    for name, t in report["tuning"].items():
        lines.append(f"| {name} | {t['seconds']:.1f} | {t['x_gold_retrain']:.1f} | {t['chosen']} | "
                     f"{t['chosen_score']:.3f} ({t['default_score']:.3f}) |")
    total = sum(t["seconds"] for t in report["tuning"].values())
    lines.append(f"\nAll methods: {total:.0f} s = {total / report['gold_retrain_seconds']:.0f} gold retrains.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="digits,digits-class")
    parser.add_argument("--methods", default=None)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--gold-seeds", type=int, default=3)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = args.methods.split(",") if args.methods else builtin_methods()
    for task_name in args.tasks.split(","):
        print(task_name, flush=True)
        report = protocol(task_name, methods, args.budget, args.gold_seeds, TensorCache(args.cache_dir))
        out = OUT / task_name
        out.mkdir(parents=True, exist_ok=True)
        (out / "protocol.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        (out / "protocol.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
