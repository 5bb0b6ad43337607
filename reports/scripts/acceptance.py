"""Acceptance of task-matched defaults on any named task: does every built-in method, with its defaults, do what
it is for? (The Fashion-MNIST counterpart of ``tests/test_defaults.py``, too slow for CI.)

For each task: the original and ``--gold-seeds`` gold models (cached), then every built-in method with
``preset="auto"`` and the rule of :func:`muaudit.testing.judge_defaults` (forget error moves toward gold by at
least min(1 point, a quarter of the gap); test error within max(2 points, 3 gold spreads) of the worse of original
and gold). Writes ``reports/protocol/acceptance/<task>.{json,md}``.

Usage (one torch thread; about 25 minutes per Fashion-MNIST task on this project's 2-core CPU, models cached):
    python reports/scripts/acceptance.py --tasks fashion-mnist-random,fashion-mnist-class --gold-seeds 3
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from muaudit.audit import prepare, run_method
from muaudit.cache import TensorCache
from muaudit.errors import MuauditError
from muaudit.plugins import METHODS, discover, load_by_name
from muaudit.task import resolve_task
from muaudit.testing import judge_defaults

OUT = Path(__file__).resolve().parents[1] / "protocol" / "acceptance"
CLASS_ONLY = {"unsir"}
#: Documented exceptions: the MU-Mis paper's Table 5 reports an unchanged forget accuracy on random subsets.
NO_MOVE_REQUIRED = {"mu-mis": "sample"}


def judge(setup, name: str) -> dict:
    start = time.perf_counter()
    try:
        run = run_method(setup, load_by_name(METHODS, name), {})
    except MuauditError as exc:
        return {"method": name, "error": str(exc), "ok": False}
    judged = judge_defaults(setup, run.model)
    exempt = NO_MOVE_REQUIRED.get(name) == setup.profile.removal
    ok = not judged.collapsed and (judged.moved or exempt)
    return {"method": name, "preset": run.preset, "params": run.params, **asdict(judged), "moved": judged.moved,
            "collapsed": judged.collapsed, "exempt_from_moving": exempt, "ok": ok,
            "seconds": time.perf_counter() - start, "text": judged.describe()}


def markdown(task: str, rows: list[dict], command: str) -> str:
    passed = sum(r["ok"] for r in rows)
    lines = [f"# Acceptance of task-matched defaults on {task}", "", f"Command: `{command}`", "",
             f"{passed} of {len(rows)} methods move toward gold without collapse.", "",
             "| method | preset | ok | forget error | test error | rule | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | - | no | failed: {r['error']} | | | |")
            continue
        note = " (exempt from moving: its paper)" if r["exempt_from_moving"] else ""
        lines.append(f"| {r['method']} | {r['preset']['name']} | {'yes' if r['ok'] else 'NO'} | "
                     f"{r['forget_error']:.2f} | {r['test_error']:.2f} | {r['text']}{note} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="fashion-mnist-random,fashion-mnist-class")
    parser.add_argument("--methods", default=None)
    parser.add_argument("--gold-seeds", type=int, default=3)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "python reports/scripts/acceptance.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "cache_dir")
    OUT.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        setup = prepare(resolve_task(task), gold_count=args.gold_seeds, cache=TensorCache(args.cache_dir),
                        device=torch.device("cpu"))
        names = args.methods.split(",") if args.methods else sorted(
            s.name for s in discover(METHODS) if s.dist == "muaudit" and s.name != "retrain")
        names = [n for n in names if n not in CLASS_ONLY or setup.profile.removal == "class"]
        rows = []
        for name in names:
            rows.append(judge(setup, name))
            print(f"{task} {name}: {'ok' if rows[-1]['ok'] else 'NOT OK'} {rows[-1].get('text', rows[-1].get('error'))}",
                  flush=True)
        (OUT / f"{task}.json").write_text(json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n")
        (OUT / f"{task}.md").write_text(markdown(task, rows, command))


if __name__ == "__main__":
    main()
