"""``entropy-lr``: Chundawat et al.'s logistic-regression MIA on the softmax entropy (the "MIA ratio").

Source: Chundawat et al., *Can Bad Teaching Induce Forgetting?* (AAAI 2023, ``bad-teaching-unlearning``), as used by
SSD (``selective-synaptic-dampening src/metrics.py::get_membership_attack_prob``), MU-Mis and NatMU
(``utils/mia.py``): feature = entropy of the softmax output (not the loss); ``LogisticRegression(class_weight=
"balanced")`` fitted on all of D_r (label 1) vs all of the test split (label 0); MIA ratio = mean(predict(D_f)), the
fraction of D_f predicted member (lower = more forgetting; compare with the gold model's).

Decisions (tagged [Dn] in the code):

- [D1] Scores = the LR's ``decision_function`` (log-odds of "member"; > 0 means ``classes_[1]`` = 1, checked), and
  threshold = the smallest positive float, so that ``score >= threshold`` is exactly ``decision > 0``, which is
  exactly ``predict == 1``: the central ``member_rate`` equals the published MIA ratio bit for bit
  (``predict_proba >= 0.5`` can differ at rounding).
- [D2] The non-members scored are the whole test split, which is also the LR's "out" fit set (in-sample), because
  the published fit uses all of it and any other fit changes the published ratio. This is harmless for the ranking
  metrics: the score is ``w * H + b``, an affine function of the entropy, so AUC, ROC and TPR at low FPR are those
  of ``-H`` (or ``+H`` if the fit gives ``w > 0``): the fit only chooses the sign and the threshold. Only balanced
  accuracy/advantage at the LR's threshold use a threshold fitted on these non-members (two parameters on
  |D_r| + |D_test| points: an O(1/n) optimism). The forget set is never in the fit.
- [D3] Entropy in float64 from the logits (:func:`muaudit.readouts.entropies`, SciPy) and vectorised: the published
  code collects softmax outputs in float32 with batch size 1 (slow, no other effect).
- [D4] No ``multi_class=`` (removed in scikit-learn 1.8). The published code passed ``multi_class="multinomial"``;
  on two classes that fits ``W = (w_0, w_1)`` with penalty ``1/2 (|w_0|^2 + |w_1|^2)``, which only depends on
  ``w = w_1 - w_0`` through the loss and is minimised at ``w_1 = -w_0 = w/2``: the same boundary as a binary LR
  with ``C`` doubled. ``C = 1`` (default) is the definition as written for current scikit-learn; ``C = 2`` gives
  the boundary the published code computed with scikit-learn < 1.8 (tested against a direct minimisation).
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from muaudit.base import AttackContext, AttackScores, MembershipAttack, ModelOutputs
from muaudit.params import Interval, Param
from muaudit.readouts import entropies
from muaudit_attacks.membership_fit import fit_member_classifier

#: The smallest positive float: ``score >= MEMBER_THRESHOLD`` is exactly ``decision_function > 0``. [D1]
MEMBER_THRESHOLD = float(np.nextafter(0.0, 1.0))


def fit_entropy_lr(member_entropy: np.ndarray, nonmember_entropy: np.ndarray, C: float = 1.0
                   ) -> LogisticRegression:
    """The published fit: ``LogisticRegression(class_weight="balanced")`` on entropy, members labelled 1."""
    return fit_member_classifier(LogisticRegression(class_weight="balanced", C=C),
                                 np.reshape(member_entropy, (-1, 1)), np.reshape(nonmember_entropy, (-1, 1)))


class EntropyLRAttack(MembershipAttack):
    """Chundawat's entropy MIA: LR fitted on D_r vs test; scores D_f (members) and test (in-sample non-members)."""

    name = "entropy-lr"
    summary = ("Logistic regression on softmax entropy, D_r vs test (Chundawat; SSD/MU-Mis/NatMU 'MIA ratio'); "
               "member_rate = the published ratio.")
    paper = ("Chundawat, Tarun, Mandal, Kankanhalli: Can Bad Teaching Induce Forgetting? Unlearning in Deep "
             "Networks Using an Incompetent Teacher (AAAI 2023); as used by SSD (Foster et al., AAAI 2024)")
    params = (
        Param("C", float, 1.0, "inverse L2 strength; 2 reproduces the published multinomial fit (sklearn < 1.8)",
              Interval(0.0, None, closed="neither")),
    )

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        if len(outputs.retain_labels) == 0 or len(outputs.test_labels) == 0:
            raise ValueError("entropy-lr needs a non-empty retain set and test split to fit on")
        retain, test = entropies(outputs.retain_logits), entropies(outputs.test_logits)  # [D3]
        forget = entropies(outputs.forget_logits)
        clf = fit_entropy_lr(retain, test, self.hparams["C"])
        members = clf.decision_function(forget.reshape(-1, 1))  # [D1]
        nonmembers = clf.decision_function(test.reshape(-1, 1))  # [D2] in-sample
        settings = {
            "feature": "softmax entropy (nats, float64)",
            "classifier": "sklearn LogisticRegression(class_weight='balanced', solver='lbfgs')",
            "C": self.hparams["C"],
            "score": "LR decision_function = coef * entropy + intercept (> 0 = member)",
            "threshold_rule": "the LR's own boundary: decision > 0 (threshold = smallest positive float)",
            "fit_members": f"all of D_r ({len(retain)})", "fit_nonmembers": f"all of test ({len(test)})",
            "eval_nonmembers": f"all of test ({len(test)}), in-sample for the LR fit",
            "coef": float(clf.coef_[0, 0]), "intercept": float(clf.intercept_[0]),
            "mia_ratio": float(np.mean(clf.predict(forget.reshape(-1, 1)))),
            "mia_ratio_definition": "fraction of D_f predicted member (Chundawat; SSD, MU-Mis, NatMU)",
            "seed": ctx.seed, "seed_used": False,
        }
        return AttackScores(members, nonmembers, MEMBER_THRESHOLD, settings)
