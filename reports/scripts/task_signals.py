"""Measure each named task's signal: can the task show forgetting at all?

For each task: the original model and ``--gold-seeds`` gold models (cached), then every verdict check applied to
the original against the gold band (:func:`muaudit.scoring.task_signal`, default attacks), and the forget-error
gap in units of the gold-vs-gold spread. Writes ``reports/protocol/signals/<task>.json``, a summary table
``reports/protocol/signals.md``, and the compact record that ``muaudit list tasks`` shows
(``muaudit/task_signals.json``, shipped with the package).

Usage (one torch thread; digits tasks take seconds, each Fashion-MNIST task about 4 x 2 minutes):
    python reports/scripts/task_signals.py --tasks digits,digits-class,digits-poison
    python reports/scripts/task_signals.py --tasks fashion-mnist-random,fashion-mnist-class,fashion-mnist-poison
"""
from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import torch

from muaudit import readouts as R
from muaudit.audit import prepare
from muaudit.cache import TensorCache
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.scoring import task_signal
from muaudit.task import resolve_task, spec_digest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "reports" / "protocol" / "signals"
REGISTRY = ROOT / "muaudit" / "task_signals.json"
ATTACKS_USED = ("loss", "entropy-lr", "entropy-svc")


def forget_error_gap(setup) -> dict:
    """Original vs gold forget error (%), the gold spread (max - min) and the gap in spreads."""
    def err(model) -> float:
        out = setup.outputs(model)
        return R.error_percent(out.forget_logits, out.forget_labels)

    golds = [err(g.model) for g in setup.golds]
    original = err(setup.original)
    spread = max(golds) - min(golds)
    gap = float(np.mean(golds)) - original
    return {"original": original, "golds": golds, "gap": gap, "spread": spread,
            "gap_in_spreads": gap / spread if spread > 0 else None}


def measure(name: str, gold_seeds: int, cache: TensorCache) -> dict:
    setup = prepare(resolve_task(name), gold_count=gold_seeds, cache=cache, device=torch.device("cpu"))
    signal = task_signal(setup, [(load_by_name(ATTACKS, a), {}) for a in ATTACKS_USED])
    seconds = [g.train_seconds for g in setup.golds]
    return {"task": name, "task_hash": setup.task.content_hash(), "spec_digest": spec_digest(resolve_task(name)),
            "measured": date.today().isoformat(),
            "gold_seeds": gold_seeds, "attacks": list(ATTACKS_USED), "forget_error": forget_error_gap(setup),
            "signal": signal.to_dict(), "gold_train_seconds": seconds,
            "detectable_checks": sum(c.detectable for c in signal.checks), "checks": len(signal.checks)}


def registry_entry(record: dict) -> dict:
    fe = record["forget_error"]
    return {"measured": record["measured"], "task_hash": record["task_hash"], "spec_digest": record["spec_digest"],
            "gold_seeds": record["gold_seeds"],
            "detectable": record["signal"]["detectable"], "checks": f"{record['detectable_checks']}/{record['checks']}",
            "forget_error_original": round(fe["original"], 2), "forget_error_gold": round(float(np.mean(fe["golds"])), 2),
            "gold_spread": round(fe["spread"], 2),
            "gap_in_spreads": None if fe["gap_in_spreads"] is None else round(fe["gap_in_spreads"], 1),
            "warnings": len(record["signal"]["warnings"])}


def summary_table(records: dict) -> str:
    lines = ["# Named tasks: can they show forgetting?", "",
             "Each task's original model against its gold models on D_f (`python reports/scripts/task_signals.py`). "
             "A check has signal when the original's interval lies outside the gold band (the verdicts' rule); the "
             "forget-error gap is in units of the gold-vs-gold spread (max - min over gold seeds).", "",
             "| task | gold seeds | forget error: original | gold | spread | gap ÷ spread | checks with signal | "
             "consistency warnings | measured |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(records.items()):
        fe = r["forget_error"]
        ratio = _ratio(fe)
        lines.append(f"| {name} | {r['gold_seeds']} | {fe['original']:.2f} | {np.mean(fe['golds']):.2f} | "
                     f"{fe['spread']:.2f} | {ratio} | {r['detectable_checks']}/{r['checks']} | "
                     f"{len(r['signal']['warnings'])} | {r['measured']} |")
    return "\n".join(lines) + "\n"


def _ratio(fe: dict) -> str:
    if fe["gap_in_spreads"] is not None:
        return f"{fe['gap_in_spreads']:.1f}"
    return "inf (the gold models agree exactly)" if abs(fe["gap"]) > 0 else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="digits,digits-class,digits-poison")
    parser.add_argument("--gold-seeds", type=int, default=3)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    cache = TensorCache(args.cache_dir)
    for name in args.tasks.split(","):
        record = measure(name, args.gold_seeds, cache)
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(f"{name}: {record['signal']['line']}", flush=True)
    records = {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}
    (OUT.parent / "signals.md").write_text(summary_table(records))
    REGISTRY.write_text(json.dumps({k: registry_entry(v) for k, v in sorted(records.items())}, indent=2,
                                   sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
