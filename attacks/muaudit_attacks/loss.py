"""``loss``: the loss-threshold membership-inference attack (Yeom et al., CSF 2018).

Score = -CE(f(x), y), computed in float64 from the logits: members have low loss, so they score higher. The
threshold is fitted on known members (all of D_r) against known non-members (a random half of the test split)
at the point of maximal balanced accuracy; the other half of the test split is kept unseen and serves as the
non-members against which the forget set (the audited candidates) is evaluated.
"""
from __future__ import annotations

import numpy as np
import torch

from muaudit.base import AttackContext, AttackScores, MembershipAttack, ModelOutputs
from muaudit.metrics import best_balanced_threshold
from muaudit.readouts import losses


def negative_loss(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-example ``log softmax(logits)[y]`` = -cross-entropy, in float64 (:func:`muaudit.readouts.losses`)."""
    return -losses(logits, labels)


class LossThresholdAttack(MembershipAttack):
    """Loss-threshold MIA: fitted on D_r vs half of test, evaluated on D_f vs the other half."""

    name = "loss"
    summary = "Loss-threshold MIA (score = -loss), threshold fitted on D_r vs held-out test examples."
    paper = "Yeom, Giacomelli, Fredrikson, Jha: Privacy Risk in Machine Learning (CSF 2018)"

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        seed = ctx.seed
        test = negative_loss(outputs.test_logits, outputs.test_labels)
        order = np.random.default_rng(seed).permutation(len(test))
        fit_idx, eval_idx = order[: len(test) // 2], order[len(test) // 2 :]
        retain = negative_loss(outputs.retain_logits, outputs.retain_labels)
        threshold = best_balanced_threshold(retain, test[fit_idx])
        settings = {"signal": "-cross-entropy (float64)", "fit_members": f"D_r ({len(retain)})",
                    "fit_nonmembers": f"random half of test ({len(fit_idx)})",
                    "eval_nonmembers": f"other half of test ({len(eval_idx)})",
                    "threshold_rule": "max balanced accuracy on the fit sets", "split_seed": seed}
        return AttackScores(negative_loss(outputs.forget_logits, outputs.forget_labels), test[eval_idx],
                            threshold, settings)
