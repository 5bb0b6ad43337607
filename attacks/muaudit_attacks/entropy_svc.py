"""``entropy-svc``: Song & Mittal's metric attacks with one RBF-SVC per feature, as in SalUn's "MIA-efficacy".

Source: Song & Mittal, *Systematic Evaluation of Privacy Risks of Machine Learning Models* (USENIX Security 2021)
for the features; SalUn (``OPTML-Group/Unlearn-Saliency Classification/evaluation/SVC_MIA.py``) for the protocol:
shadow "in" = |D_test| examples of D_r, shadow "out" = D_test, one ``SVC(C=3, gamma="auto", kernel="rbf")`` per
feature (correctness, confidence p_y, entropy, modified entropy, probability vector), MIA-efficacy =
1 - mean(predict(D_f)) (the fraction of D_f called non-member). SalUn's published number uses **confidence**.

Decisions (tagged [Dn] in the code):

- [D1] Non-member hygiene: the test split is cut in two by a seeded permutation (``default_rng(seed)``, exactly as
  ``loss`` does, so both attacks share the split): one half is the shadow "out" set, the other half is never seen by
  the SVC and serves as the non-members the forget set is scored against. SalUn fits on all of D_test and reports
  only D_f; evaluating on fitted points would make the non-member side of the ROC in-sample.
- [D2] Shadow "in" = a seeded random subset of D_r (the same generator, drawn after the permutation) of the size of
  the "out" half; SalUn takes the *first* |D_test| examples of D_r, which depends on the data order.
- [D3] ``max_fit_per_side`` caps each side of the fit (a prefix of the already random orders above, so a seeded
  uniform subsample): an RBF-SVC fit is O(n^2). Measured on this project's 2-core CPU under load (sklearn 1.9.1):
  one fit takes 3.4-4.9 s per feature at 9000 + 9000 points, 0.8-1.0 s at 4000 + 4000, ~0.2 s at 2000 + 2000; a
  whole :meth:`EntropySVCAttack.score` (five features, CIFAR-10 sizes: |D_r| = 45000, |D_f| = 5000, |D_test| =
  10000, so 5000 + 5000 uncapped) takes 1.1 s at cap 1000, 2.6 s at 2000, 4.9 s at 3000 and 12 s uncapped.
  Default 2000. Cost of the cap: with C fixed at 3, the SVC's boundary moves with n; on that synthetic the
  confidence member rate was 0.885-0.889 over 5 seeds at 2000 vs 0.873 uncapped (AUC unchanged, 0.76). Set
  ``max_fit_per_side=None`` to fit on SalUn's sizes.
- [D4] Features in float64 from the logits. The modified entropy is the *correct* one,
  ``-(1-p_y) log p_y - sum_{c!=y} p_c log(1-p_c)`` (SalUn's ``m_entropy`` indexes ``[:, labels]``, i.e. whole
  columns, and takes log p for log(1-p)): see :func:`modified_entropy`.
- [D5] Scores = the SVC's ``decision_function`` (positive = ``classes_[1]`` = member: checked), threshold 0, which is
  the SVC's own rule: ``decision >= 0`` is exactly ``predict == 1`` (an exact tie, decision -0.0, is predicted
  ``classes_[1]``: tested), so the central ``member_rate`` is ``1 - mia_efficacy``.
- [D6] Every feature's SVC is fitted (five fits at the cap) so that ``settings["member_rate_by_feature"]`` gives
  SalUn's whole table; only ``feature``'s scores are returned.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import stats
from scipy.special import log_softmax, logsumexp, softmax
from sklearn.svm import SVC

from muaudit.base import AttackContext, AttackScores, MembershipAttack, ModelOutputs
from muaudit.params import Choice, Interval, Param
from muaudit_attacks.membership_fit import fit_member_classifier

FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
#: SalUn's classifier settings (SVC_MIA.py).
SVC_PARAMS: dict[str, Any] = {"C": 3.0, "gamma": "auto", "kernel": "rbf"}
#: Floor of the safe log, Song & Mittal's ``_log_value(probs, small_value=1e-30)``.
LOG_FLOOR = float(np.log(1e-30))
DEFAULT_MAX_FIT = 2000


def _float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _labels(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy().astype(np.int64)
    return np.asarray(labels).astype(np.int64)


def _log_complement(log_p: np.ndarray) -> np.ndarray:
    """``log(1 - p_c)`` per entry without cancellation: ``log1p(-p)`` except on the one entry per row with
    ``p > 1/2``, where it is ``log sum_{j != c} p_j`` (logsumexp of the other log-probabilities)."""
    p = np.exp(log_p)
    with np.errstate(divide="ignore"):
        out = np.log1p(-p)
    rows = np.arange(len(p))
    top = np.argmax(log_p, axis=1)
    others = log_p.copy()
    others[rows, top] = -np.inf
    big = p[rows, top] > 0.5
    with np.errstate(divide="ignore"):
        out[rows[big], top[big]] = logsumexp(others[big], axis=1)
    return out


def modified_entropy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Song & Mittal's modified entropy ``-(1-p_y) log p_y - sum_{c!=y} p_c log(1-p_c)``, float64, >= 0.

    Logs come from log-probabilities (no ``1 - p`` cancellation) and are floored at ``log 1e-30`` like Song &
    Mittal's safe log, so the value is finite for any finite logits (at most ``2 * 69.08`` nats). [D4]
    """
    log_p = log_softmax(_float64(logits), axis=1)
    y = _labels(labels)
    rows = np.arange(len(y))
    p = np.exp(log_p)
    log_q = _log_complement(log_p)  # log(1 - p)
    safe_log_p, safe_log_q = np.maximum(log_p, LOG_FLOOR), np.maximum(log_q, LOG_FLOOR)
    terms = -p * safe_log_q                                     # c != y: -p_c log(1 - p_c)
    terms[rows, y] = -np.exp(log_q[rows, y]) * safe_log_p[rows, y]  # c == y: -(1 - p_y) log p_y
    return terms.sum(axis=1)


def membership_features(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
                        ) -> dict[str, np.ndarray]:
    """The five SalUn/Song-Mittal features as 2-D arrays (rows = examples), float64."""
    probs = softmax(_float64(logits), axis=1)
    y = _labels(labels)
    rows = np.arange(len(y))
    return {
        "correctness": (probs.argmax(axis=1) == y).astype(np.float64)[:, None],
        "confidence": probs[rows, y][:, None],
        "entropy": stats.entropy(probs, axis=1)[:, None],
        "m_entropy": modified_entropy(logits, labels)[:, None],
        "prob": probs,
    }


def shadow_indices(n_retain: int, n_test: int, seed: int, cap: int | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shadow-in indices into D_r, shadow-out and held-out indices into the test split). [D1-D3]

    ``default_rng(seed)``: first ``permutation(n_test)`` (the first half is "out", the rest held out), then
    ``choice(n_retain, min(n_retain, n_out), replace=False)`` for "in"; both fit sides are cut to ``cap``.
    """
    if n_test < 2:
        raise ValueError(f"entropy-svc needs at least 2 test examples (one to fit, one to evaluate), got {n_test}")
    if n_retain < 1:
        raise ValueError("entropy-svc needs a non-empty retain set for the shadow 'in' examples")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_test)
    fit_out, held_out = order[: n_test // 2], order[n_test // 2:]
    fit_in = rng.choice(n_retain, size=min(n_retain, len(fit_out)), replace=False)
    if cap is not None:
        fit_in, fit_out = fit_in[:cap], fit_out[:cap]
    return fit_in, fit_out, held_out


def fit_svc(members: np.ndarray, nonmembers: np.ndarray) -> SVC:
    """SalUn's ``SVC_fit_predict`` fit: label 1 for the shadow "in" rows, 0 for "out", in that order."""
    return fit_member_classifier(SVC(**SVC_PARAMS), members, nonmembers)


class EntropySVCAttack(MembershipAttack):
    """SalUn's SVC MIA (Song & Mittal features): fitted on D_r vs half of test, scored on D_f vs the other half."""

    name = "entropy-svc"
    summary = ("Song & Mittal metric attacks with an RBF-SVC per feature (SalUn's MIA-efficacy); "
               "returns one feature's SVC decision values.")
    paper = ("Song & Mittal: Systematic Evaluation of Privacy Risks of Machine Learning Models (USENIX Security "
             "2021); protocol of Fan et al.: SalUn (ICLR 2024), evaluation/SVC_MIA.py")
    params = (
        Param("feature", str, "confidence", "feature whose SVC scores are returned (SalUn's number: confidence)",
              Choice(FEATURES)),
        Param("max_fit_per_side", int, DEFAULT_MAX_FIT,
              "cap on shadow in/out examples per side (seeded subsample; RBF-SVC fits are O(n^2)); none = no cap",
              Interval(1, None), nullable=True),
    )

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        feature, cap = self.hparams["feature"], self.hparams["max_fit_per_side"]
        fit_in, fit_out, held_out = shadow_indices(len(outputs.retain_labels), len(outputs.test_labels),
                                                   ctx.seed, cap)
        retain = membership_features(outputs.retain_logits, outputs.retain_labels)
        test = membership_features(outputs.test_logits, outputs.test_labels)
        forget = membership_features(outputs.forget_logits, outputs.forget_labels)
        rates: dict[str, float] = {}
        members = nonmembers = np.empty(0)
        for name in FEATURES:  # [D6]
            clf = fit_svc(retain[name][fit_in], test[name][fit_out])
            rates[name] = float(np.mean(clf.predict(forget[name])))
            if name == feature:  # [D5]
                members = clf.decision_function(forget[name])
                nonmembers = clf.decision_function(test[name][held_out])
        settings = {
            "feature": feature, "features_fitted": list(FEATURES),
            "classifier": "sklearn.svm.SVC", "svc_params": dict(SVC_PARAMS),
            "score": "SVC decision_function (> 0 = member); threshold 0 = the SVC's own rule",
            "fit_members": f"seeded random subset of D_r ({len(fit_in)} of {len(outputs.retain_labels)})",
            "fit_nonmembers": f"random half of test ({len(fit_out)})",
            "eval_nonmembers": f"other half of test ({len(held_out)})",
            "n_forget": len(outputs.forget_labels), "max_fit_per_side": cap, "split_seed": ctx.seed,
            "mia_efficacy": 1.0 - rates[feature],
            "mia_efficacy_definition": "1 - fraction of D_f predicted member (SalUn)",
            "member_rate_by_feature": rates,
            "modified_entropy": "correct Song & Mittal form, float64, log floor 1e-30 (not SalUn's m_entropy)",
        }
        return AttackScores(members, nonmembers, 0.0, settings)
