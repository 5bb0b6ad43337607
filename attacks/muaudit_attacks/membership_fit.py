"""Fitting a scikit-learn classifier to known members (label 1) against known non-members (label 0)."""
from __future__ import annotations

from typing import TypeVar

import numpy as np

Estimator = TypeVar("Estimator")


def fit_member_classifier(estimator: Estimator, members: np.ndarray, nonmembers: np.ndarray) -> Estimator:
    """Fit ``estimator`` on member rows (label 1) then non-member rows (label 0), in that order.

    Checks the fitted class order, so that ``decision_function > 0`` (or ``predict_proba[:, 1]``) means member.
    """
    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    fitted = estimator.fit(x, y)
    if list(fitted.classes_) != [0.0, 1.0]:
        raise RuntimeError(f"unexpected class order {fitted.classes_} of {type(fitted).__name__}")
    return fitted
