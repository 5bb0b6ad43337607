"""Tests of ``tmu`` (Twin Machine Unlearning): features, scaling, the easy/hard classifier, which model is tuned."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from muaudit.audit import method_context, run_method
from muaudit.base import MethodData
from muaudit.readouts import accuracy
from muaudit.task import Recipe
from muaudit.testing import check_method, load_method
from muaudit.training import fit

from muaudit_methods import tmu as T

#: Cheap settings for runs whose outcome is not under test.
FAST = {"preset": "digits", "twin_epochs": 2, "classifier_epochs": 20, "epochs": 1}


def _run_direct(setup, params, seed=0, model=None, validation=None):
    """Call ``unlearn`` directly (to read ``last_report``) with the data ``run_method`` would hand over."""
    method = load_method("tmu").cls(**params)
    ctx = method_context(setup, seed, None)
    data = MethodData("tmu", setup.forget, retain=setup.retain,
                      validation=setup.data.val if validation is None else validation)
    given = copy.deepcopy(setup.original if model is None else model)
    torch.manual_seed(seed)
    return method, given, method.unlearn(given, data, ctx)


# ----------------------------------------------------------------------------------------- features
def test_pgd_feature_matches_independent_numpy_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    x = torch.rand(16, 1, 2, 2, dtype=torch.float64) * 0.8 + 0.1
    x[:3] = x[:3].round()  # some pixels on the box edges, so the [0, 1] clip is exercised
    y = torch.randint(0, 3, (16,))
    eps, steps = 0.2, 5
    step = eps / 3
    got = T.adversarial_feature(model, x, y, torch.device("cpu"), eps, steps, step)

    w, b = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    x0 = x.flatten(1).numpy()
    adv = x0.copy()

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    onehot = np.eye(3)[y.numpy()]
    for _ in range(steps):
        grad = (softmax(adv @ w.T + b) - onehot) @ w  # d CE / d x for a linear softmax model
        adv = np.clip(np.clip(adv + step * np.sign(grad), x0 - eps, x0 + eps), 0.0, 1.0)
    p_clean = softmax(x0 @ w.T + b)
    log_adv = np.log(softmax(adv @ w.T + b))
    expected = -(p_clean * log_adv).sum(1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)

    adv_t = T.pgd_attack(model, x, y, eps, steps, step)
    assert float((adv_t - x).abs().max()) <= eps + 1e-12
    assert float(adv_t.min()) >= 0.0 and float(adv_t.max()) <= 1.0
    np.testing.assert_allclose(adv_t.flatten(1).numpy(), adv, atol=1e-12)


def test_distance_feature_matches_numpy_knn():
    gen = torch.Generator().manual_seed(1)
    query, reference = torch.randn(20, 6, generator=gen), torch.randn(40, 6, generator=gen)
    query_y = torch.randint(0, 4, (20,), generator=gen)
    reference_y = torch.randint(0, 3, (40,), generator=gen)  # class 3 has no reference: falls back to all
    assert bool((query_y == 3).any())
    k = 5
    got = T.distance_feature(query, query_y, reference, reference_y, k).numpy()

    q = query.numpy() / np.linalg.norm(query.numpy(), axis=1, keepdims=True)
    r = reference.numpy() / np.linalg.norm(reference.numpy(), axis=1, keepdims=True)
    expected = []
    for i in range(len(q)):
        same = reference_y.numpy() == int(query_y[i])
        cand = r[same] if same.any() else r
        d = np.sort(np.sqrt(((cand - q[i]) ** 2).sum(1)))
        expected.append(d[:k].mean())
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-5, atol=1e-6)


def test_penultimate_features_are_the_input_of_the_last_linear(digits_setup):
    model = digits_setup.original
    x = digits_setup.forget.x[:10]
    got = T.penultimate_features(model, x, torch.device("cpu"))
    with torch.no_grad():
        expected = model.net[:5](model.normalize(x))  # Flatten, Linear, ReLU, Linear, ReLU
    torch.testing.assert_close(got, expected)


def test_winsorize_then_minmax_matches_numpy():
    values = torch.tensor([0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 5.0, -3.0, 0.22, 0.31])
    got = T.winsorize_minmax(values).numpy()
    v = values.double().numpy()
    q1, q3 = np.percentile(v, [25, 75])
    clipped = np.clip(v, q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))
    expected = (clipped - clipped.min()) / (clipped.max() - clipped.min())
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.min() == 0.0 and got.max() == 1.0
    assert got[6] == 1.0 and got[7] == 0.0  # the outliers sit on the winsorised bounds
    assert np.all(T.winsorize_minmax(torch.full((5,), 2.0)).numpy() == 0.0)
    both = T.scale_columns(torch.stack([values, 2 * values + 1], dim=1))
    torch.testing.assert_close(both[:, 0], both[:, 1])


def test_random_other_labels_never_keep_the_class():
    y = torch.arange(10).repeat(200)
    new = T.random_other_labels(y, 10, torch.Generator().manual_seed(0))
    assert bool((new != y).all())
    assert set(new[y == 3].tolist()) == set(range(10)) - {3}


# --------------------------------------------------------------------------------------- classifier
def test_easy_hard_classifier_beats_chance_on_held_out_twin_data(digits_setup):
    """The classifier separates easy from hard twin examples it was not trained on.

    The default digits original classifies ~97% of held-out digits correctly, so its 108-example validation
    split holds only ~4 "hard" twin examples: too few to measure anything. The check therefore uses a weakly
    trained original (1 epoch, ~80% accuracy) and the validation plus test splits as held-out data (540
    examples, ~110 hard), runs the whole TMU pipeline on it, then trains the same classifier on a random half
    of the resulting twin features and scores the other half.
    """
    from sklearn.metrics import roc_auc_score

    setup = digits_setup
    weak = fit(method_context(setup, 0, None).fresh_model(123), setup.data.train,
               Recipe(epochs=1, batch_size=64, optimizer="sgd", lr=0.05, schedule="constant"), 5,
               torch.device("cpu"))
    held_out = T.concat(setup.data.val, setup.data.test)
    method, _, _ = _run_direct(setup, {"preset": "digits", "epochs": 0}, model=weak, validation=held_out)
    report = method.last_report
    features, labels = report["twin_features"], report["twin_labels"]
    assert report["twin_size"] == len(held_out) == len(labels)
    assert 0.6 < report["twin_easy_fraction"] < 0.95  # enough hard examples for the check to mean something
    assert report["classifier_balanced_accuracy"] > 0.6

    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = perm[: len(perm) // 2], perm[len(perm) // 2:]
    clf = T.train_classifier(features[train], labels[train], 200, 0.01, 128, seed=0, device=torch.device("cpu"))
    scores = T.classifier_scores(clf, features[test], torch.device("cpu"))
    auc = roc_auc_score(labels[test].numpy(), scores.numpy())
    balanced = T.balanced_accuracy(labels[test], (scores > 0.5).long())
    assert auc > 0.75, auc
    assert balanced > 0.6, balanced


def test_report_on_random_forgetting_and_alignment_with_gold(digits_setup):
    setup = digits_setup
    method, _, model = _run_direct(setup, {"preset": "digits"})
    report = method.last_report
    val = setup.data.val
    assert report["twin_size"] == len(val)  # random forgetting covers every class
    original_ok = (setup.original(val.x).argmax(1) == val.y).float().mean().item()
    assert report["twin_easy_fraction"] == pytest.approx(original_ok)
    assert report["n_easy"] + report["n_hard"] == len(setup.forget)
    assert report["twin_features"].shape == (len(val), 3) and report["feature_names"] == ("df", "af", "cf")
    assert float(report["twin_features"].min()) >= 0.0 and float(report["twin_features"].max()) <= 1.0
    # Aligned forgetting: the gold model still gets ~95% of this D_f right, and so should TMU (not 0%).
    gold = setup.outputs(setup.golds[0].model)
    out = setup.outputs(model)
    gold_acc = accuracy(gold.forget_logits, gold.forget_labels)
    # (Was > 0.8: the classifier's all-easy collapse, issue 12. The balanced classifier marks a minority hard.)
    assert 0.5 < report["forget_easy_fraction"] < 1.0
    assert abs(accuracy(out.forget_logits, out.forget_labels) - gold_acc) < 0.1
    assert accuracy(out.test_logits, out.test_labels) > accuracy(gold.test_logits, gold.test_labels) - 0.03


def test_code_feature_set_uses_df_and_cf_only(digits_setup):
    method, _, _ = _run_direct(digits_setup, {**FAST, "features": "df+cf"})
    assert method.last_report["feature_names"] == ("df", "cf")
    assert method.last_report["twin_features"].shape[1] == 2


def test_full_class_forgetting_marks_absent_class_hard(digits_class_setup):
    setup = digits_class_setup
    method, _, model = _run_direct(setup, {**FAST, "epochs": 5})
    report = method.last_report
    assert report["n_hard"] == report["n_absent_class"] == len(setup.forget)  # class 3 is absent from D_r
    out = setup.outputs(model)
    assert accuracy(out.forget_logits, out.forget_labels) < 0.1
    assert accuracy(out.retain_logits, out.retain_labels) > 0.95
    # Without the rule the classifier's verdict stands; with plain BCE (whose gold M_o knows class 3) it calls most
    # of them easy. (Plain BCE explicitly since issue 12: the balanced default is undertrained at FAST's 20 epochs.)
    method, _, _ = _run_direct(setup, {**FAST, "epochs": 0, "absent_class_hard": False, "classifier_balance": "none"})
    report = method.last_report
    assert torch.equal(report["forget_easy"], report["forget_scores"] > 0.5)
    assert report["forget_easy_fraction"] > 0.5


# ---------------------------------------------------------------------------------- which model is tuned
def test_the_original_is_fine_tuned_and_the_twin_never_returned(digits_setup):
    setup = digits_setup
    method, given, result = _run_direct(setup, {**FAST, "epochs": 0})
    assert result is given
    assert method.last_report["twin_weight_change"] > 0.05  # the twin moved away from the original ...
    for name, tensor in setup.original.state_dict().items():  # ... but the original's weights come back
        assert torch.equal(result.state_dict()[name], tensor), name

    method, given, result = _run_direct(setup, {**FAST, "epochs": 1, "lr": 1e-6})
    assert result is given
    change = T.parameter_distance(result, setup.original)  # a tiny step away from the original, not the twin
    assert change < 1e-3 and change < method.last_report["twin_weight_change"] / 100


def test_generic_contract(digits_setup):
    check_method(digits_setup, load_method("tmu"), FAST)
    run = run_method(digits_setup, load_method("tmu"), FAST, seed=0)
    assert isinstance(run.model, nn.Module)


# ------------------------------------------------------------------------------------- issue 12: variants
def test_balanced_pos_weight_and_signed_loss():
    labels = torch.tensor([1, 1, 1, 0])
    assert float(T.balanced_pos_weight(labels)) == pytest.approx(1 / 3)
    assert T.balanced_pos_weight(torch.ones(4, dtype=torch.long)) is None
    ce = torch.tensor([1.0, 2.0, 4.0, 8.0])
    ascend = torch.tensor([False, False, True, True])
    assert float(T.signed_loss(ce, ascend)) == pytest.approx(1.5 - 6.0)  # mean(easy) - mean(hard): eq. 3 negated
    assert float(T.signed_loss(ce, torch.zeros(4, dtype=torch.bool))) == pytest.approx(3.75)
    assert float(T.signed_loss(ce, torch.ones(4, dtype=torch.bool))) == pytest.approx(-3.75)


def test_paper_and_code_classifiers():
    paper = T.make_classifier(3, 0, T.CLASSIFIERS["paper"].hidden)
    code = T.make_classifier(3, 0, T.CLASSIFIERS["code"].hidden)
    assert [m.out_features for m in paper if isinstance(m, nn.Linear)] == [64, 32, 1]
    assert [m.out_features for m in code if isinstance(m, nn.Linear)] == [32, 16, 1]
    assert T.CLASSIFIERS["paper"] == T.ClassifierRecipe((64, 32), "sgd", 100, 16)
    assert T.CLASSIFIERS["code"] == T.ClassifierRecipe((32, 16), "adam", 200, 128)


def test_plain_bce_collapses_to_all_easy_and_balanced_bce_does_not(digits_setup):
    """Issue 12, measured on digits: the code's classifier with plain BCE marks every forget sample easy (balanced
    accuracy 0.5 on its own twin data); the defaults (the paper's classifier, class-balanced BCE) find hard ones.
    Both are read from the run's diagnostics."""
    plugin = load_method("tmu")
    plain = run_method(digits_setup, plugin, {"classifier": "code", "classifier_balance": "none", "epochs": 0})
    d = plain.diagnostics
    assert d["n_hard"] == 0 and d["classifier_balanced_accuracy"] == pytest.approx(0.5)
    assert d["twin_easy_fraction"] > 0.9  # the imbalance behind the collapse
    default = run_method(digits_setup, plugin, {"epochs": 0}).diagnostics
    assert default["classifier"] == "paper" and default["classifier_balance"] == "balanced"
    assert default["classifier_epochs"] == 100
    assert default["classifier_balanced_accuracy"] > 0.75
    assert 0 < default["n_hard"] < len(digits_setup.forget) / 2
    assert default["n_easy"] + default["n_hard"] == len(digits_setup.forget)


def test_eq3_ascends_on_hard_samples_without_retain_data(digits_setup):
    """Eq. 3: the hard samples' loss rises (gradient ascent, true labels) while the easy ones' stays lower; the step
    uses D_f only (re-running it on D_f alone with the same easy mask reproduces the model)."""
    setup = digits_setup
    params = {**FAST, "unlearn_step": "eq3", "epochs": 3, "lr": 0.01}
    method, _, model = _run_direct(setup, params)
    easy = method.last_report["forget_easy"]
    assert 0 < int((~easy).sum()) < len(easy)

    def ce(m, mask):
        with torch.no_grad():
            return float(nn.functional.cross_entropy(m(setup.forget.x[mask]), setup.forget.y[mask]))

    assert ce(model, ~easy) > 3 * ce(setup.original, ~easy)
    assert ce(model, easy) < ce(model, ~easy)
    fresh = copy.deepcopy(setup.original)
    ctx = method_context(setup, 0, None)
    again = T.TMU(**params)
    again._finetune(fresh, setup.forget.x, setup.forget.y, easy, ~easy, ctx)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(fresh.state_dict()[name], tensor), name
