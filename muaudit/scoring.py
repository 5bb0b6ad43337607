"""Readouts -> verdicts -> scorecard: every readout family, the signal section and the Streisand verdicts.

Each family is a small function of the models' :class:`~muaudit.base.ModelOutputs` (logits computed once per
model and split): error rates, output distances to gold, D_f entropy distributions, parameter change, attack
metrics, NatMU's AvgGap and the NeurIPS 2023 challenge score. :func:`signal_section` measures whether the task
can show forgetting at all (:mod:`muaudit.signal`), and :func:`streisand_verdicts` judges the unlearned model.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from muaudit import readouts as R
from muaudit import verdicts as V
from muaudit.arrays import AuditArrays, thumbnails
from muaudit.attacking import AttackResults, AttackRun
from muaudit.base import ModelOutputs
from muaudit.checkpoint import state_dict_sha256
from muaudit.metrics import AttackMetrics, proportion_interval
from muaudit.models import AuditSetup, shadow_bank, versions
from muaudit.plugins import LoadedPlugin
from muaudit.results import AttackReport, Readout, Scorecard
from muaudit.runs import MethodRun, run_method
from muaudit.shadows import ModelRequest
from muaudit.signal import ConsistencyCheck, Signal, apply_signal, consistency_check, signal_check
from muaudit.task import Task
from muaudit.training import derive_seed
from muaudit.timing import PhaseTimer
from muaudit.zoo import last_linear_prefix


# --------------------------------------------------------------------------------------- readouts
_PCT = "%"


def _model_readout(name: str, unit: str, hib: bool | None, desc: str, values: list[float | None],
                   unlearned: float | None, original: float | None) -> Readout:
    """``values`` are the gold models' values; the first is the reference gold."""
    gold = values[0]
    gap = None if unlearned is None or gold is None else unlearned - gold
    spread = tuple(abs(v - gold) for v in values[1:] if v is not None and gold is not None)
    return Readout(name, "model", unit, hib, desc, unlearned, original, gold, gap, spread)


def _distance_readout(name: str, unit: str, desc: str, unlearned: float, original: float,
                      spread: list[float]) -> Readout:
    return Readout(name, "distance", unit, False, desc, unlearned, original, None, None, tuple(spread))


def _accuracy_readouts(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]
                       ) -> list[Readout]:
    """Test, forget and retain error; the retain error is on the retain evaluation set, and when that is a sample
    of D_r its Clopper-Pearson interval is given (the sampling error of the sample, not a property of the model)."""
    retain_label = (f"a seeded sample of {len(setup.retain_eval)} of the {len(setup.retain)} examples of D_r"
                    if setup.retain_sampled else "D_r")
    out = []
    for split, label in (("test", "the test split"), ("forget", "D_f"), ("retain", retain_label)):
        def err(m: ModelOutputs, s: str = split) -> float:
            return R.error_percent(getattr(m, f"{s}_logits"), getattr(m, f"{s}_labels"))

        readout = _model_readout(f"{split}_error", _PCT, None if split == "forget" else False,
                                 f"100 - accuracy on {label} (PGU paper Tables 1-3)", [err(g) for g in golds],
                                 err(u), err(o))
        if split == "retain" and setup.retain_sampled:
            wrong = int((u.retain_logits.argmax(1) != u.retain_labels).sum())
            low, high = proportion_interval(wrong, len(u.retain_labels))
            readout = replace(readout, interval=(100 * low, 100 * high))
        out.append(readout)
    return out


def _clean_label_readout(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs,
                         golds: list[ModelOutputs]) -> list[Readout]:
    """On a label-flip poisoning task: error on D_f against the true (clean) labels, i.e. de-poisoning."""
    if setup.task.poison_labels is None:
        return []
    clean = setup.data.train.y[list(setup.task.forget_indices or ())]

    def err(m: ModelOutputs) -> float:
        return R.error_percent(m.forget_logits, clean)

    return [_model_readout("forget_clean_error", _PCT, False,
                           "100 - accuracy on D_f against its true labels (poisoning tasks: D_f's labels are flipped)",
                           [err(g) for g in golds], err(u), err(o))]


def _output_distance_readouts(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]) -> list[Readout]:
    ref, others = golds[0].forget_logits, [g.forget_logits for g in golds[1:]]
    specs = [
        ("activation_distance", "L2", R.activation_distance,
         "mean over D_f of ||softmax(model) - softmax(gold)||_2 (SSD/TMU actv_dist)"),
        ("js_to_gold", "nats", R.js_divergence, "mean over D_f of the Jensen-Shannon divergence to gold"),
        ("kl_gold_to_model", "nats", lambda m, g: R.kl_divergence(g, m),
         "mean over D_f of KL(p_gold || p_model)"),
    ]
    return [_distance_readout(name, unit, desc, fn(u.forget_logits, ref), fn(o.forget_logits, ref),
                              [fn(x, ref) for x in others]) for name, unit, fn, desc in specs]


def _entropy_readouts(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]) -> list[Readout]:
    h = {"u": R.entropies(u.forget_logits), "o": R.entropies(o.forget_logits)}
    hg = [R.entropies(g.forget_logits) for g in golds]
    dists = {k: R.distribution_distance(v, hg[0]) for k, v in h.items()}
    spread = [R.distribution_distance(x, hg[0]) for x in hg[1:]]
    return [
        _model_readout("forget_entropy_mean", "nats", None, "mean softmax entropy on D_f (PGU Figs. 1, 3, 5)",
                       [float(x.mean()) for x in hg], float(h["u"].mean()), float(h["o"].mean())),
        _distance_readout("entropy_wasserstein", "nats",
                          "1-Wasserstein distance between the D_f entropy distributions of model and gold",
                          dists["u"].wasserstein, dists["o"].wasserstein, [d.wasserstein for d in spread]),
        _distance_readout("entropy_ks", "statistic",
                          "two-sample Kolmogorov-Smirnov statistic between D_f entropy distributions of model "
                          "and gold", dists["u"].ks_statistic, dists["o"].ks_statistic,
                          [d.ks_statistic for d in spread]),
    ]


def _parameter_readouts(unlearned: nn.Module, original: nn.Module, golds: list[nn.Module]) -> list[Readout]:
    last = last_linear_prefix(original)
    to_orig = {"u": R.parameter_change(unlearned, original, last),
               "g": [R.parameter_change(g, original, last) for g in golds]}
    to_gold = {"u": R.parameter_change(unlearned, golds[0], last), "o": R.parameter_change(original, golds[0], last),
               "g": [R.parameter_change(g, golds[0], last) for g in golds[1:]]}
    out = []
    for field_name, label in (("l1_all", "L1, all parameters"), ("l2_all", "L2, all parameters"),
                              ("l1_last", "L1, last linear layer"), ("l2_last", "L2, last linear layer")):
        def pick(pc: R.ParameterChange, f: str = field_name) -> float:
            return getattr(pc, f)

        out.append(_model_readout(f"param_{field_name}_to_original", "norm", None,
                                  f"{label} of theta - theta_original (delta-Targeted Figs. 1-3)",
                                  [pick(g) for g in to_orig["g"]], pick(to_orig["u"]), 0.0))
        out.append(_distance_readout(f"param_{field_name}_to_gold", "norm", f"{label} of theta - theta_gold",
                                     pick(to_gold["u"]), pick(to_gold["o"]), [pick(g) for g in to_gold["g"]]))
    return out


def _metrics_dict(m: AttackMetrics) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(m)


_ATTACK_FIELDS = (
    ("auc", "AUC of D_f (members) vs non-member scores; gold ~ 0.5 on a random subset", None),
    ("member_rate", "fraction of D_f the attack calls member at its threshold", None),
    ("balanced_accuracy", "balanced accuracy of D_f vs non-members at the attack's threshold", None),
    ("tpr_at_1pct_fpr", "TPR at 1% FPR (None: insufficient negatives)", None),
    ("tpr_at_01pct_fpr", "TPR at 0.1% FPR (None: insufficient negatives)", None),
)


def _attack_readouts(res: AttackResults) -> list[Readout]:
    out = []
    for key, desc, hib in _ATTACK_FIELDS:
        golds = [getattr(g.metrics, key) for g in res.golds]
        out.append(_model_readout(f"mia_{res.name}_{key}", "fraction", hib, f"{res.name} attack: {desc}",
                                  golds, getattr(res.unlearned.metrics, key), getattr(res.original.metrics, key)))
    return out


def _attack_report(res: AttackResults) -> AttackReport:
    spec = res.plugin.spec
    return AttackReport(spec.name, spec.dist, spec.version, {"params": res.params, **res.unlearned.settings},
                        res.unlearned.as_dict(), res.original.as_dict(), res.golds[0].as_dict(),
                        golds=[g.as_dict() for g in res.golds],
                        roc={"unlearned": res.unlearned.roc, "original": res.original.roc, "gold": res.golds[0].roc},
                        needs=sorted(getattr(res.plugin.cls, "needs", ())))


def _avg_gap_terms(setup: AuditSetup, o: ModelOutputs, m: AttackMetrics) -> dict[str, float]:
    """Every AvgGap term of model ``o`` in % (the paper's, :data:`~muaudit.readouts.AVG_GAP_TERMS`, and the code's);
    ``FATest`` only where some test examples belong to classes D_r no longer has (class or sub-class removal)."""
    forgotten = _forgotten_test_mask(setup)
    test_logits, test_labels = o.test_logits.numpy(), o.test_labels.numpy()
    terms = {"RA": 100 * R.accuracy(test_logits[~forgotten], test_labels[~forgotten]),
             "FA": 100 * R.accuracy(o.forget_logits, o.forget_labels), "MIA": 100 * m.member_rate,
             "test_acc": 100 * R.accuracy(o.test_logits, o.test_labels),
             "retain_acc": 100 * R.accuracy(o.retain_logits, o.retain_labels)}
    terms["forget_acc"], terms["mia"] = terms["FA"], terms["MIA"]
    if forgotten.any():
        terms["FATest"] = 100 * R.accuracy(test_logits[forgotten], test_labels[forgotten])
    return terms


def _forgotten_test_mask(setup: AuditSetup) -> np.ndarray:
    """Test examples of a class (or fine class) that no longer occurs in D_r: NatMU's FATest set."""
    retain, test = setup.retain, setup.data.test
    mask = ~np.isin(test.y.numpy(), np.unique(retain.y.numpy()))
    if test.fine is not None and retain.fine is not None:
        mask |= ~np.isin(test.fine.numpy(), np.unique(retain.fine.numpy()))
    return mask


_AVG_GAP_DESCRIPTIONS = {
    "avg_gap": "NatMU AvgGap as in the paper's tables: mean |gap| to gold of RA (test accuracy on the retained "
               "classes), FA (D_f accuracy), FATest (test accuracy of forgotten classes; class removal only) and MIA",
    "avg_gap_code": "NatMU code's get_average_gap: mean |gap| to gold of test, train-retain and forget accuracy and "
                    "MIA",
}


def _avg_gap_readouts(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                      attacks: Sequence[AttackResults]) -> list[Readout]:
    """NatMU's AvgGap (``avg_gap``, the paper's terms) and its code's variant (``avg_gap_code``).

    The MIA term is the D_f member ratio of ``entropy-lr`` (NatMU's own MIA) when audited, else of the first attack
    (the description names it).
    """
    res = next((a for a in attacks if a.name == "entropy-lr"), attacks[0])
    mia = "" if res.name == "entropy-lr" else f" (MIA from {res.name}: entropy-lr, NatMU's MIA, was not audited)"
    terms_u, terms_o = _avg_gap_terms(setup, u, res.unlearned.metrics), _avg_gap_terms(setup, o, res.original.metrics)
    terms_g = [_avg_gap_terms(setup, g, m.metrics) for g, m in zip(golds, res.golds)]
    out = []
    for name, keys in (("avg_gap", tuple(t for t in R.AVG_GAP_TERMS if t in terms_g[0])),
                       ("avg_gap_code", R.AVG_GAP_CODE_TERMS)):
        def gap(terms: dict[str, float], k: tuple[str, ...] = keys) -> float:
            return R.avg_gap(terms, terms_g[0], k)

        out.append(_distance_readout(name, _PCT, f"{_AVG_GAP_DESCRIPTIONS[name]}{mia}, in %", gap(terms_u),
                                     gap(terms_o), [gap(g) for g in terms_g[1:]]))
    return out


def _entropy_histograms(outputs: dict[str, ModelOutputs], n_classes: int) -> dict[str, Any]:
    bins = np.linspace(0.0, float(np.log(n_classes)), 21)
    return {"bin_edges": bins.tolist(),
            **{k: np.histogram(R.entropies(v.forget_logits), bins=bins)[0].tolist() for k, v in outputs.items()}}


def streisand_verdicts(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                       attacks: Sequence[AttackResults]) -> list[V.Verdict]:
    """Every over/under-forgetting check of :mod:`muaudit.verdicts` for one unlearned model (the rule alone)."""
    return _checks(setup, u, [res.unlearned for res in attacks], o, golds, attacks)


def _checks(setup: AuditSetup, m: ModelOutputs, m_attacks: Sequence[AttackRun], o: ModelOutputs,
            golds: list[ModelOutputs], attacks: Sequence[AttackResults]) -> list[V.Verdict]:
    """The verdict checks of model ``m`` (outputs and its attack runs) against the gold models."""
    def acc(x: ModelOutputs) -> float:
        return R.accuracy(x.forget_logits, x.forget_labels)

    def loss(x: ModelOutputs) -> np.ndarray:
        return R.losses(x.forget_logits, x.forget_labels)

    seed = derive_seed(setup.task.seed, "verdict")
    correct = (m.forget_logits.argmax(1) == m.forget_labels).numpy()
    out = [V.forget_accuracy_verdict(correct, [acc(g) for g in golds], acc(o)),
           V.forget_loss_verdict(loss(m), [loss(g) for g in golds], loss(o), seed),
           V.forget_entropy_verdict(R.entropies(m.forget_logits), [R.entropies(g.forget_logits) for g in golds],
                                    R.entropies(o.forget_logits), seed)]
    for res, run in zip(attacks, m_attacks):
        out += V.attack_verdicts(res.name, run.metrics.auc, run.intervals.auc, [g.metrics.auc for g in res.golds],
                                 res.original.metrics.auc, run.metrics.member_rate, run.intervals.member_rate,
                                 [g.metrics.member_rate for g in res.golds], res.original.metrics.member_rate)
    return out


def signal_section(setup: AuditSetup, o: ModelOutputs, golds: list[ModelOutputs],
                   attacks: Sequence[AttackResults]) -> Signal:
    """Each verdict check applied to the original model (its signal), the D_f loss and entropy distances of
    original and gold models, and the original's consistency with the task (:mod:`muaudit.signal`)."""
    original = _checks(setup, o, [res.original for res in attacks], o, golds, attacks)
    return Signal(tuple(signal_check(v) for v in original), consistency_section(setup, o, golds),
                  _distribution_signal(o, golds))


def task_signal(setup: AuditSetup, attacks: Sequence[tuple[LoadedPlugin, dict[str, Any]]]) -> Signal:
    """The signal section of a set-up before any method: can this task, with these attacks, show forgetting?"""
    from muaudit.attacking import run_attack

    results = [run_attack(setup, plugin, None, params) for plugin, params in attacks]
    return signal_section(setup, setup.outputs(setup.original), [setup.outputs(g.model) for g in setup.golds],
                          results)


def _distribution_signal(o: ModelOutputs, golds: list[ModelOutputs]) -> dict[str, Any]:
    """KS distance of the original's D_f loss and entropy distributions to the reference gold's, beside the
    other gold models' (the gold-vs-gold noise floor of that distance)."""
    out: dict[str, Any] = {}
    for name, fn in (("loss", lambda x: R.losses(x.forget_logits, x.forget_labels)),
                     ("entropy", lambda x: R.entropies(x.forget_logits))):
        ref = fn(golds[0])
        out[f"{name}_ks"] = {"original": R.distribution_distance(fn(o), ref).ks_statistic,
                             "gold_vs_gold": [R.distribution_distance(fn(g), ref).ks_statistic for g in golds[1:]]}
    return out


def consistency_section(setup: AuditSetup, o: ModelOutputs, golds: list[ModelOutputs]) -> tuple[ConsistencyCheck, ...]:
    """The original's error on D_r and on the test examples of retained classes, against the gold models'.

    On a label-flip task the poison legitimately changes the original on the classes it touches (the flipped
    examples' true and poisoned labels), so those classes are left out; a task that poisons every class gets
    no consistency check.
    """
    def wrong(x: ModelOutputs, split: str, mask: np.ndarray) -> int:
        logits, labels = getattr(x, f"{split}_logits"), getattr(x, f"{split}_labels")
        return int((logits.argmax(1) != labels).numpy()[mask].sum())

    checks = []
    for split, what, mask in (("retain", "error on D_r", _untouched(setup, setup.retain_eval)),
                              ("test", "test error on the retained classes", _retained_test_mask(setup))):
        if mask.any():
            checks.append(consistency_check(f"{split}_error", what, wrong(o, split, mask), int(mask.sum()),
                                            [wrong(g, split, mask) for g in golds]))
    return tuple(checks)


def _poisoned_classes(setup: AuditSetup) -> np.ndarray:
    """The true and flipped labels of a label-flip forget set (empty on other tasks)."""
    if setup.task.poison_labels is None:
        return np.array([], dtype=np.int64)
    true = setup.data.train.y.numpy()[list(setup.task.forget_indices or ())]
    return np.union1d(true, np.asarray(setup.task.poison_labels))


def _untouched(setup: AuditSetup, split: Any) -> np.ndarray:
    return ~np.isin(split.y.numpy(), _poisoned_classes(setup))


def _retained_test_mask(setup: AuditSetup) -> np.ndarray:
    """Test examples whose class (and fine class) still occurs in D_r, outside any poisoned class: the gold models
    were trained on them, and the original saw them unpoisoned."""
    retain, test = setup.retain, setup.data.test
    mask = np.isin(test.y.numpy(), np.unique(retain.y.numpy())) & _untouched(setup, test)
    if test.fine is not None and retain.fine is not None:
        mask &= np.isin(test.fine.numpy(), np.unique(retain.fine.numpy()))
    return mask


def assemble_scorecard(setup: AuditSetup, run: MethodRun, results: Sequence[AttackResults],
                       challenge_models: int = 0, timer: PhaseTimer | None = None) -> Scorecard:
    """Every readout of ``run`` beside the original and gold models, the signal section and the verdicts.

    ``timer`` holds this audit's phases so far (the attacks'); the readout families, the signal and verdicts and
    any inference still missing are added to it, and the scorecard records them with the set-up's shared phases.
    """
    timer = timer or PhaseTimer()
    with timer("inference"):
        u, o = setup.outputs(run.model), setup.outputs(setup.original)
        golds = [setup.outputs(g.model) for g in setup.golds]
    readouts = model_readouts(setup, run, u, o, golds, results, timer)
    challenge = None
    if challenge_models:
        with timer("readouts:challenge"):
            extra, challenge = challenge_evaluation(setup, run, challenge_models)
        readouts += extra
    with timer("signal_and_verdicts"):
        signal = signal_section(setup, o, golds, results)
        verdicts, verdict_summary = apply_signal(streisand_verdicts(setup, u, o, golds, results), signal,
                                                   n_forget=len(u.forget_labels))
    return Scorecard(
        method=_method_info(run), task=_task_info(setup.task), readouts=tuple(readouts),
        attacks=tuple(_attack_report(res) for res in results),
        entropy_histograms=_entropy_histograms({"original": o, "gold": golds[0], "unlearned": u},
                                               setup.data.n_classes),
        provenance=_provenance(setup, run, [res.plugin for res in results], derive_seed(setup.task.seed, "attack")),
        timings=_timings(setup, run, timer), verdicts=tuple(verdicts), verdict_summary=verdict_summary,
        challenge=challenge, signal=signal.to_dict(), arrays=audit_arrays(setup, u, o, golds, results))


def audit_arrays(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                 results: Sequence[AttackResults]) -> AuditArrays:
    """Every model's D_f loss and entropy, every attack's scores, and thumbnails of the most exposed D_f examples
    (of the unlearned and original models, where the data are images)."""
    models = {"unlearned": u, "original": o, **{f"gold_{j}": g for j, g in enumerate(golds)}}
    scores = {}
    for res in results:
        runs = {"unlearned": res.unlearned, "original": res.original,
                **{f"gold_{j}": g for j, g in enumerate(res.golds)}}
        scores[res.name] = {role: run.scores for role, run in runs.items() if run.scores is not None}
    exposed = [e["forget_position"] for res in results for run in (res.unlearned, res.original)
               for e in run.most_exposed]
    images, positions = thumbnails(setup.forget.x.numpy(), exposed)
    return AuditArrays(tuple(models), np.asarray(setup.task.forget_indices or (), dtype=np.int64),
                       setup.forget.y.numpy().astype(np.int64),
                       {k: R.losses(m.forget_logits, m.forget_labels) for k, m in models.items()},
                       {k: R.entropies(m.forget_logits) for k, m in models.items()}, scores, images, positions)


def model_readouts(setup: AuditSetup, run: MethodRun, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                   results: Sequence[AttackResults], timer: PhaseTimer | None = None) -> list[Readout]:
    """Every readout family, in scorecard order (each family timed as ``readouts:<family>``)."""
    timer = timer or PhaseTimer()
    families = [
        ("errors", lambda: _accuracy_readouts(setup, u, o, golds) + _clean_label_readout(setup, u, o, golds)),
        ("output_distances", lambda: _output_distance_readouts(u, o, golds)),
        ("entropy", lambda: _entropy_readouts(u, o, golds)),
        ("parameters", lambda: _parameter_readouts(run.model, setup.original, [g.model for g in setup.golds])),
        ("attack_metrics", lambda: [r for res in results for r in _attack_readouts(res)]),
        ("avg_gap", lambda: _avg_gap_readouts(setup, u, o, golds, results)),
    ]
    out: list[Readout] = []
    for name, family in families:
        with timer(f"readouts:{name}"):
            out += family()
    return out


def _challenge_summary(score: Any) -> dict[str, Any]:
    eps = np.asarray(score.epsilons)
    return {"forgetting_quality": score.forgetting_quality, "score": score.score,
            "retain_ratio": score.retain_ratio, "test_ratio": score.test_ratio,
            "epsilon_mean": float(eps.mean()), "epsilon_max": float(eps.max()),
            "most_exposed_forget_positions": np.argsort(-eps, kind="stable")[:10].tolist(),
            "n_unlearned": score.n_unlearned, "n_gold": score.n_gold, "max_epsilon": score.max_epsilon,
            "delta": score.delta, "bin_width": score.bin_width, "notes": list(score.notes)}


def challenge_evaluation(setup: AuditSetup, run: MethodRun, n_models: int) -> tuple[list[Readout], dict[str, Any]]:
    """The NeurIPS 2023 challenge score from ``n_models`` unlearned runs and ``n_models`` gold models.

    The method runs ``n_models`` times on the original with seeds derived from its own; ``2 * n_models`` gold
    models come from the shadow bank (role ``challenge-gold``, the task's recipe on D_r): the first half is the
    reference, the second half is scored against it as a stand-in for a perfect unlearner, which gives the noise
    floor (the challenge's F stays well below 1 even for identical distributions). Signal: logit-scaled confidence
    on D_f.
    """
    from muaudit.challenge import challenge_score

    bank, task = shadow_bank(setup), setup.task
    forget = np.asarray(task.forget_indices, dtype=np.int64)
    retain = np.setdiff1d(np.arange(bank.n_train), forget)
    golds = [ModelRequest("challenge-gold", retain, derive_seed(task.seed, "challenge-gold", j))
             for j in range(2 * n_models)]

    def stats_of(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return R.logit_scaled_confidence(logits, labels.expand(logits.shape[0], -1))

    def accuracies(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return (logits.argmax(-1) == labels).double().mean(-1).numpy()

    gold_phi = stats_of(bank.logits(golds, forget), setup.forget.y)
    gold_ra = accuracies(bank.logits(golds, retain), setup.retain.y)
    gold_ta = accuracies(bank.logits(golds, bank.test_index(np.arange(len(setup.data.test)))), setup.data.test.y)
    outs = [setup.outputs(run_method(setup, run.plugin, run.params, derive_seed(run.seed, "challenge", j)).model)
            for j in range(n_models)]
    u_phi = np.stack([R.logit_scaled_confidence(o.forget_logits, o.forget_labels) for o in outs])
    u_ra = np.array([R.accuracy(o.retain_logits, o.retain_labels) for o in outs])
    u_ta = np.array([R.accuracy(o.test_logits, o.test_labels) for o in outs])
    ref, alt = slice(0, n_models), slice(n_models, 2 * n_models)
    unlearned = challenge_score(u_phi, gold_phi[ref], u_ra, gold_ra[ref], u_ta, gold_ta[ref])
    floor = challenge_score(gold_phi[alt], gold_phi[ref], gold_ra[alt], gold_ra[ref], gold_ta[alt], gold_ta[ref])
    desc = (f"NeurIPS 2023 unlearning challenge, {n_models} unlearned vs {n_models} gold models; the gold-vs-gold "
            f"column scores {n_models} other gold models, i.e. what a perfect unlearner reaches (higher is better)")
    readouts = [Readout("challenge_forgetting_quality", "distance", "fraction", True, "forgetting quality F; " + desc,
                        unlearned.forgetting_quality, None, None, None, (floor.forgetting_quality,)),
                Readout("challenge_score", "distance", "fraction", True, "F x retain and test accuracy ratios to gold; "
                        + desc, unlearned.score, None, None, None, (floor.score,))]
    return readouts, {"unlearned": _challenge_summary(unlearned), "gold_vs_gold": _challenge_summary(floor),
                      "signal": "logit-scaled confidence on D_f", "source": unlearned.source,
                      "unlearned_seeds": [derive_seed(run.seed, "challenge", j) for j in range(n_models)]}


def _method_info(run: MethodRun) -> dict[str, Any]:
    cls = run.plugin.cls
    info = {"name": run.plugin.spec.name, "summary": cls.summary, "paper": cls.paper,
            "params": run.params, "needs": sorted(cls.needs), "seed": run.seed}
    return (info | ({"preset": run.preset} if run.preset is not None else {})
            | ({"tuning": run.tuning} if run.tuning is not None else {})
            | {"diagnostics": dict(run.diagnostics or {})})


def _task_info(task: Task) -> dict[str, Any]:
    return {"name": task.name, "hash": task.content_hash(), "dataset": task.dataset.name,
            "forget": {k: v for k, v in vars(task.forget).items() if v is not None},
            "forget_size": len(task.forget_indices or ()), "arch": task.model.arch, "seed": task.seed,
            "spec": task.to_dict() | {"dataset": {"name": task.dataset.name,
                                                  "val_fraction": task.dataset.val_fraction}}}


def _provenance(setup: AuditSetup, run: MethodRun, attacks: Sequence[LoadedPlugin], attack_seed: int
                ) -> dict[str, Any]:
    source = {k: v for k, v in setup.original_source.items() if k != "train_seconds"}
    return {"versions": versions(), "device": str(setup.device), "method_plugin": run.plugin.provenance(),
            "attack_plugins": [a.provenance() for a in attacks], "original": source,
            "seeds": {"task": setup.task.seed, "method": run.seed, "gold": [g.seed for g in setup.golds],
                      "attack": attack_seed},
            "gold_models": len(setup.golds),
            "gold_state_sha256": [state_dict_sha256(g.model.state_dict()) for g in setup.golds],
            "unlearned_state_sha256": state_dict_sha256(run.model.state_dict())}


def _timings(setup: AuditSetup, run: MethodRun, timer: PhaseTimer) -> dict[str, Any]:
    """Wall-clock seconds: the method and gold retrain (speed-up), and every phase of this audit.

    ``phases``: the set-up's shared phases (``data_load``, ``original``, ``golds``: zero-ish when cached, and
    shared by every method of a comparison), this method's ``train_stats`` and ``method``, then ``inference``
    (the passes this audit still needed), each ``readouts:<family>``, each ``attack:<name>`` and
    ``signal_and_verdicts``. Writing the files is timed by the CLI (stderr), after the scorecard exists.
    """
    gold_seconds = float(np.mean([g.train_seconds for g in setup.golds]))
    phases = {**setup.phases.seconds, "train_stats": run.stats_seconds, "method": run.seconds, **timer.seconds}
    return {"method_seconds": run.seconds, "train_stats_seconds": run.stats_seconds,
            "gold_seconds": gold_seconds, "speedup_vs_gold": gold_seconds / max(run.seconds, 1e-9),
            "gold_from_cache": all(g.from_cache for g in setup.golds), "phases": phases,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
