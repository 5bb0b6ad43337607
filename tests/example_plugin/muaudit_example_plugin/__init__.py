"""An example third-party muaudit plugin package: one method and one attack.

``weight-shrink`` multiplies every weight by ``1 - factor`` (a deliberately naive "unlearning" method that needs
only the forget set, here to show the plugin contract). ``confidence`` scores membership by the softmax
probability of the true label.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from muaudit import AttackContext, AttackScores, Interval, MembershipAttack, MethodContext, MethodData, ModelOutputs, Param
from muaudit import UnlearningMethod


class WeightShrink(UnlearningMethod):
    name = "weight-shrink"
    summary = "Multiply every parameter by (1 - factor): a naive example method."
    paper = "Example plugin (no paper)"
    params = (Param("factor", float, 0.1, "shrinkage factor", Interval(0, 1, closed="left")),)

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1.0 - self.hparams["factor"])
        return model


class ConfidenceAttack(MembershipAttack):
    name = "confidence"
    summary = "Membership score = softmax probability of the true label (no threshold)."
    paper = "Example plugin (after Song & Mittal 2021)"

    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        def conf(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
            p = softmax(logits.double().numpy(), axis=1)
            return p[np.arange(len(labels)), labels.numpy()]

        return AttackScores(conf(outputs.forget_logits, outputs.forget_labels),
                            conf(outputs.test_logits, outputs.test_labels), None, {"signal": "p_y"})
