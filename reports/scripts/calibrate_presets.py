"""Calibrate the built-in methods' task presets with ``muaudit tune`` on proxy forget sets.

For every task and method, runs the equal-budget tuning protocol (:mod:`muaudit.tune`: proxy forget sets of the
same kind and size, disjoint from the named task's D_f, each with its own gold models; the audited forget set's
gold models are never used) and writes the whole search table per method, plus a summary of the chosen values,
to ``reports/protocol/calibration/<task>/``. The presets in ``methods/`` are these choices, rounded.

Usage (one torch thread; about 15 minutes per digits task on this project's 2-core CPU):
    python reports/scripts/calibrate_presets.py --tasks digits,digits-class --budget 24
    python reports/scripts/calibrate_presets.py --tasks digits --methods finetune,neggrad --budget 24
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from muaudit.audit import prepare
from muaudit.cache import TensorCache
from muaudit.errors import MuauditError
from muaudit.plugins import METHODS, discover, load_by_name
from muaudit.task import resolve_task
from muaudit.tune import TuneResult, tune

OUT = Path(__file__).resolve().parents[1] / "protocol" / "calibration"
SKIP = {"retrain"}  # nothing to tune: the gold recipe itself
CLASS_ONLY = {"unsir"}  # forgets whole classes only (its docstring)


def builtin_methods() -> list[str]:
    return sorted(s.name for s in discover(METHODS) if s.dist == "muaudit" and s.name not in SKIP)


def calibrate(task_name: str, methods: list[str], budget: int, cache: TensorCache) -> dict[str, dict]:
    """Tune every method on ``task_name``'s proxies; write one table per method; return the summaries."""
    setup = prepare(resolve_task(task_name), gold_count=0, cache=cache, device=torch.device("cpu"))
    out = OUT / task_name
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in methods:
        if name in CLASS_ONLY and setup.profile.removal != "class":
            continue
        start = time.perf_counter()
        try:
            result = tune(setup, load_by_name(METHODS, name), {}, budget=budget)
        except MuauditError as exc:
            summary[name] = {"error": str(exc)}
            print(f"{task_name:14s} {name:16s} failed: {exc}", flush=True)
            continue
        write(out, name, result)
        summary[name] = {"chosen": result.chosen, "chosen_index": result.chosen_index,
                         "chosen_score": result.chosen_score, "default_score": result.default_score,
                         "seconds": time.perf_counter() - start}
        print(f"{task_name:14s} {name:16s} #{result.chosen_index:<3d} score {result.chosen_score:7.3f} "
              f"(default {result.default_score:7.3f})  {result.chosen}  [{time.perf_counter() - start:.0f} s]",
              flush=True)
    return summary


def write(out: Path, name: str, result: TuneResult) -> None:
    (out / f"{name}.json").write_text(result.to_json() + "\n")
    (out / f"{name}.md").write_text(result.to_markdown())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="digits,digits-class")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every built-in but retrain)")
    parser.add_argument("--budget", type=int, default=24)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = args.methods.split(",") if args.methods else builtin_methods()
    cache = TensorCache(args.cache_dir)
    for task_name in args.tasks.split(","):
        summary = calibrate(task_name, methods, args.budget, cache)
        path = OUT / task_name / "summary.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **summary}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
