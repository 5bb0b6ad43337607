"""PGU: projected updates orthogonal to the retain core space, covariances, modes, incremental, de-poisoning."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from muaudit.audit import method_context, run_method
from muaudit.base import MethodContext, MethodData
from muaudit.data import Split
from muaudit.readouts import accuracy
from muaudit.task import Recipe
from muaudit.testing import check_method, load_method
from muaudit.training import fit, predict_logits
from muaudit.zoo import build_model
from muaudit_methods.pgu import (COV, CLASS_COUNTS, PGU, core_rank, input_covariances, pgu_loss,
                                 weight_layers)

#: The digits preset (gamma 0.8, lr 0.5 -> 0.1, batch 32): sample removal stops within a few epochs.
FAST = {"preset": "digits"}
#: NegGrad's lr at which it forgets about as much as PGU's digits preset (forget accuracy 96.0% vs 96.8%).
NEGGRAD_LR = 0.15


# ------------------------------------------------------------------------------------------ helpers
def _ctx(setup, seed: int = 0) -> MethodContext:
    return method_context(setup, seed, None)


def _stats(model: nn.Module, train: Split, ctx: MethodContext) -> dict[str, torch.Tensor]:
    return PGU().compute_train_stats(copy.deepcopy(model), train, ctx)


def _core_basis(full: torch.Tensor, forget: torch.Tensor, gamma: float, plus_one: bool = False) -> np.ndarray:
    """Independent NumPy version of the retain core space: eigh of full - forget, clamp, sort, energy on sigma."""
    diff = (full - forget).double().numpy()
    values, vectors = np.linalg.eigh(0.5 * (diff + diff.T))
    order = np.argsort(values)[::-1]
    sigma = np.sqrt(np.clip(values[order], 0.0, None))
    ratio = np.cumsum(sigma) / sigma.sum()
    k = int((ratio <= gamma).sum()) + (1 if plus_one else 0)
    return vectors[:, order[:k]]


def _relative_leak(delta: torch.Tensor, basis: np.ndarray) -> float:
    flat = delta.detach().double().reshape(delta.shape[0], -1).numpy()
    return float(np.linalg.norm(flat @ basis) / np.linalg.norm(flat))


def _acc(model: nn.Module, split: Split) -> float:
    return accuracy(predict_logits(model, split, torch.device("cpu")), split.y)


# ------------------------------------------------------------------------------------- declarations
def test_needs_do_not_include_retain():
    plugin = load_method("pgu")
    assert plugin.cls is PGU
    assert "retain" not in PGU.needs
    assert PGU.needs == frozenset({"train_stats", "validation"})


def test_paper_defaults_are_kept():
    method = PGU(preset="paper")
    assert {k: method.setting(k) for k in ("gamma", "start_lr", "end_lr", "epochs", "epsilon", "lam",
                                           "batch_size", "early_stop_drop")} == {
        "gamma": 0.95, "start_lr": 0.05, "end_lr": 0.01, "epochs": 100, "epsilon": 0.05, "lam": 0.2,
        "batch_size": 128, "early_stop_drop": 5.0}
    poison = PGU(preset="paper", depoison=True)
    assert PGU(preset="paper-poison").hparams["depoison"] is True
    assert PGU(preset="paper-poison", depoison=False).setting("start_lr") == 0.05
    assert (poison.setting("start_lr"), poison.setting("end_lr"), poison.setting("epsilon"),
            poison.setting("lam")) == (0.1, 0.05, 0.1, -0.2)
    assert PGU(preset="digits", gamma=0.5).setting("gamma") == 0.5


# ------------------------------------------------------------------------------------------ the loss
def test_loss_matches_reference_loops():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (7,), generator=gen)
    probs = torch.softmax(logits, 1)
    # unlearn.py: per-sample loop for loss1, mean negative entropy for loss2, loss = loss1 + loss2_w * loss2
    loss1 = sum(-torch.log(1 - (probs[j][labels[j]] - 0.05)) for j in range(7)) / 7
    loss2 = -torch.sum(-probs * torch.log(probs + 1e-15), dim=1).mean()
    assert torch.allclose(pgu_loss(logits, labels, 0.05, 0.2), loss1 + 0.2 * loss2, atol=1e-6)
    # depoisoning.py: + loss2_w * mean entropy of the softmax over the classes other than the label
    loss1 = sum(-torch.log(1 - (probs[j][labels[j]] - 0.1)) for j in range(7)) / 7
    ent = 0.0
    for j in range(7):
        other = torch.softmax(torch.cat([logits[j][:labels[j]], logits[j][labels[j] + 1:]]), 0)
        ent = ent + torch.sum(-other * torch.log(other + 1e-10))
    assert torch.allclose(pgu_loss(logits, labels, 0.1, -0.2, depoison=True), loss1 + 0.2 * ent / 7, atol=1e-6)


def test_core_rank_rules():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative energy 0.4, 0.7, 0.9, 1.0
    assert core_rank(s, 0.9, "le") == 3 and core_rank(s, 0.9, "le+1") == 4 and core_rank(s, 0.9, "lt") == 2
    assert core_rank(s, 0.5, "le") == 1 and core_rank(torch.zeros(3), 0.9, "le") == 0


# ------------------------------------------------------------------------------------- covariances
def test_covariances_match_numpy_patch_loops():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)  # a strided conv: PGU still takes every stride-1 patch
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(27, 4))
    x = torch.rand(5, 2, 5, 5)
    y = torch.tensor([0, 1, 1, 3, 3])
    ctx = MethodContext(torch.device("cpu"), 0, Recipe(), 4, (2, 5, 5), lambda s: model)
    stats = PGU().compute_train_stats(model, Split(x, y), ctx)
    assert set(stats) == {COV + "0", COV + "3", CLASS_COUNTS}
    assert stats[COV + "0"].dtype == torch.float64
    assert stats[CLASS_COUNTS].tolist() == [1, 2, 0, 2]

    xs = x.double().numpy()
    padded = np.pad(xs, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w = conv.weight.detach().double().numpy().reshape(3, -1)
    b = conv.bias.detach().double().numpy()
    conv_cov = np.zeros((18, 18))
    features = []
    for n in range(5):
        out = np.zeros((3, 3, 3))
        for i in range(5):
            for j in range(5):
                patch = padded[n, :, i:i + 3, j:j + 3].reshape(-1)  # (C_in, kh, kw) order
                conv_cov += np.outer(patch, patch)
                if i % 2 == 0 and j % 2 == 0:  # the positions the stride-2 conv actually computes
                    out[:, i // 2, j // 2] = w @ patch + b
        features.append(np.maximum(out, 0.0).reshape(-1))
    lin = np.stack(features)
    np.testing.assert_allclose(stats[COV + "0"].numpy(), conv_cov, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats[COV + "3"].numpy(), lin.T @ lin, rtol=1e-6, atol=1e-6)


def test_statistics_must_cover_every_layer(digits_setup):
    ctx = _ctx(digits_setup)
    stats = _stats(digits_setup.original, digits_setup.data.train, ctx)
    del stats[COV + "net.3"]
    data = MethodData("pgu", digits_setup.forget, validation=digits_setup.data.val, train_stats=stats)
    with pytest.raises(ValueError, match="net.3"):
        PGU(**FAST).unlearn(copy.deepcopy(digits_setup.original), data, ctx)
    with pytest.raises(ValueError, match="Conv1d"):
        weight_layers(nn.Sequential(nn.Conv1d(1, 2, 3)))


# ------------------------------------------------------------------------------ defining behaviour
def test_updates_lie_orthogonal_to_retain_core_space(digits_setup):
    setup = digits_setup
    params = {**FAST, "layer_gamma": "net.5=1.0"}  # the head frozen by gamma = 1
    run = run_method(setup, load_method("pgu"), params, seed=0)
    ctx = _ctx(setup)
    full = _stats(setup.original, setup.data.train, ctx)
    forget = input_covariances(copy.deepcopy(setup.original), setup.forget, ctx.device)
    old, new = setup.original.state_dict(), run.model.state_dict()
    for layer in ("net.1", "net.3"):
        delta = new[layer + ".weight"] - old[layer + ".weight"]
        assert delta.norm() > 1e-3, f"{layer} did not move"
        basis = _core_basis(full[COV + layer], forget[layer], PGU(**FAST).setting("gamma"))
        assert 0 < basis.shape[1] < basis.shape[0]
        assert _relative_leak(delta, basis) < 1e-4, layer
    assert torch.equal(new["net.5.weight"], old["net.5.weight"])
    for name in old:
        if not name.endswith(".weight"):
            assert torch.equal(new[name], old[name]), f"{name} changed"

    o, u = setup.outputs(setup.original), setup.outputs(run.model)
    f_before, f_after = accuracy(o.forget_logits, o.forget_labels), accuracy(u.forget_logits, u.forget_labels)
    assert f_after < f_before
    assert accuracy(u.retain_logits, u.retain_labels) >= accuracy(o.retain_logits, o.retain_labels) - 0.02


def test_retain_outputs_move_less_than_neggrad(digits_setup):
    setup = digits_setup
    o = setup.outputs(setup.original)
    pgu = setup.outputs(run_method(setup, load_method("pgu"), FAST, seed=0).model)
    neg = setup.outputs(run_method(setup, load_method("neggrad"), {"preset": "paper", "lr": NEGGRAD_LR}, seed=0).model)

    def forget_acc(m):
        return accuracy(m.forget_logits, m.forget_labels)

    def retain_move(m):
        return float((torch.softmax(m.retain_logits, 1) - torch.softmax(o.retain_logits, 1)).norm(dim=1).mean())

    # at a similar forget-accuracy change, neggrad moves the retain outputs several times more than PGU
    assert forget_acc(neg) <= forget_acc(pgu) < forget_acc(o)
    assert forget_acc(pgu) - forget_acc(neg) < 0.03
    assert retain_move(pgu) < 0.25 * retain_move(neg)
    assert accuracy(pgu.retain_logits, pgu.retain_labels) > accuracy(neg.retain_logits, neg.retain_labels)
    assert accuracy(pgu.retain_logits, pgu.retain_labels) >= accuracy(o.retain_logits, o.retain_labels) - 0.02



def test_batchnorm_and_biases_untouched_on_a_conv_model(digits_setup):
    setup = digits_setup
    data = setup.data
    torch.manual_seed(0)
    model = build_model("smallvgg", data.input_shape, data.n_classes, data.mean, data.std,
                        {"width": 4, "hidden": 16}, seed=0)
    fit(model, data.train, Recipe(epochs=4, batch_size=128, lr=0.05), 0, torch.device("cpu"))
    ctx = _ctx(setup)
    stats = _stats(model, data.train, ctx)
    forget = setup.forget
    forget_cov = input_covariances(copy.deepcopy(model), forget, ctx.device)
    method = PGU(**FAST, mode="sample", epochs=4)
    before = copy.deepcopy(model.state_dict())
    out = method.unlearn(model, MethodData("pgu", forget, validation=data.val, train_stats=stats), ctx)
    after = out.state_dict()
    convs = [name for name, m in weight_layers(out).items() if isinstance(m, nn.Conv2d)]
    assert method.last_steps[0].epochs_trained > 0
    for name in before:
        if any(name == layer + ".weight" for layer in weight_layers(out)):
            continue
        assert torch.equal(before[name], after[name]), f"{name} changed"  # biases, BN affine and running stats
    moved = 0
    for layer in convs + [n for n in weight_layers(out) if n not in convs]:
        delta = after[layer + ".weight"] - before[layer + ".weight"]
        if delta.norm() == 0:
            continue
        moved += 1
        basis = _core_basis(stats[COV + layer], forget_cov[layer], method.setting("gamma"))
        assert _relative_leak(delta, basis) < 1e-4, layer
    assert moved >= 3


def test_auto_mode_detects_class_removal(digits_class_setup, digits_setup):
    setup = digits_class_setup
    method = PGU(preset="digits", epochs=30, start_lr=1.0, end_lr=0.3)
    ctx = _ctx(setup)
    stats = _stats(setup.original, setup.data.train, ctx)
    data = MethodData("pgu", setup.forget, validation=setup.data.val, train_stats=stats)
    model = method.unlearn(copy.deepcopy(setup.original), data, ctx)
    assert method.last_steps[0].mode == "class"
    forget_cov = input_covariances(copy.deepcopy(setup.original), setup.forget, ctx.device)
    for layer in ("net.1", "net.3", "net.5"):  # class removal: the unlearn_class.py rank rule (k + 1)
        delta = model.state_dict()[layer + ".weight"] - setup.original.state_dict()[layer + ".weight"]
        basis = _core_basis(stats[COV + layer], forget_cov[layer], method.setting("gamma"), plus_one=True)
        assert method.last_steps[0].ranks[layer][0] == basis.shape[1]
        assert _relative_leak(delta, basis) < 1e-4, layer
    o, u = setup.outputs(setup.original), setup.outputs(model)
    assert accuracy(u.forget_logits, u.forget_labels) < 0.1
    assert accuracy(u.retain_logits, u.retain_labels) >= accuracy(o.retain_logits, o.retain_labels) - 0.03
    sample = PGU(**FAST)
    sample.unlearn(copy.deepcopy(digits_setup.original),
                   MethodData("pgu", digits_setup.forget, validation=digits_setup.data.val,
                              train_stats=_stats(digits_setup.original, digits_setup.data.train, ctx)), ctx)
    assert sample.last_steps[0].mode == "sample"


def test_positive_gap_at_start_returns_the_model_unchanged(digits_setup):
    setup = digits_setup
    ctx = _ctx(setup)
    forget = setup.forget
    relabelled = Split(forget.x, (forget.y + 1) % 10)  # the model never predicts these labels: acc(D_f) ~ 0
    data = MethodData("pgu", relabelled, validation=setup.data.val,
                      train_stats=_stats(setup.original, setup.data.train, ctx))
    method = PGU(**FAST)
    with pytest.warns(RuntimeWarning, match="unchanged"):
        model = method.unlearn(copy.deepcopy(setup.original), data, ctx)
    assert method.last_steps[0].stop_reason == "gap-positive-at-start"
    for name, tensor in setup.original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


# --------------------------------------------------------------------------------------- incremental
def test_incremental_unlearning_reuses_updated_statistics(digits_setup):
    setup = digits_setup
    ctx = _ctx(setup)
    train = setup.data.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))
    steps = [train.subset(order[i * 60:(i + 1) * 60].numpy()) for i in range(3)]
    full = _stats(setup.original, train, ctx)
    gamma = PGU(**FAST).setting("gamma")

    models, stats = [setup.original], [full]
    for t in range(1, 4):  # prefixes reproduce the intermediate models of the full sequence (deterministic)
        method = PGU(**FAST)
        result = method.unlearn_sequence(copy.deepcopy(setup.original), steps[:t], full, setup.data.val, ctx)
        assert len(result.steps) == t
        models.append(result.model)
        stats.append(result.train_stats)
    for t in range(3):
        forget_cov = input_covariances(copy.deepcopy(models[t]), steps[t], ctx.device)
        for layer in ("net.1", "net.3", "net.5"):
            expected = stats[t][COV + layer] - forget_cov[layer]  # the retain statistics of step t ...
            np.testing.assert_allclose(stats[t + 1][COV + layer].numpy(), expected.numpy(),  # ... feed step t+1
                                       atol=1e-6 * float(expected.abs().max()))
            delta = models[t + 1].state_dict()[layer + ".weight"] - models[t].state_dict()[layer + ".weight"]
            if delta.norm() > 0:
                basis = _core_basis(stats[t][COV + layer], forget_cov[layer], gamma)
                assert _relative_leak(delta, basis) < 1e-4, (t, layer)
    removed = torch.cat([s.y for s in steps])
    assert torch.equal(stats[3][CLASS_COUNTS], full[CLASS_COUNTS] - torch.bincount(removed, minlength=10))
    assert sum(method.last_steps[t].epochs_trained > 0 for t in range(3)) >= 2
    union = Split(torch.cat([s.x for s in steps]), removed)
    assert _acc(models[3], union) < _acc(setup.original, union)
    retain_idx = order[180:].numpy()
    assert _acc(models[3], train.subset(retain_idx)) >= _acc(setup.original, train.subset(retain_idx)) - 0.02


# --------------------------------------------------------------------------------------- de-poisoning
def test_depoisoning_recovers_clean_test_accuracy(digits_setup):
    setup = digits_setup
    ctx = _ctx(setup)
    train, test = setup.data.train, setup.data.test
    source, target = 3, 8
    members = torch.nonzero(train.y == source).flatten()
    flipped = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(0))
                      [:round(0.15 * len(members))]]
    labels = train.y.clone()
    labels[flipped] = target
    poisoned = Split(train.x, labels)
    model = fit(ctx.fresh_model(1), poisoned, Recipe(epochs=15, batch_size=64, lr=0.05), 2, ctx.device)
    stats = _stats(model, poisoned, ctx)
    poison = poisoned.subset(flipped.numpy())  # the poisoned examples with their (wrong) labels
    method = PGU(preset="digits", depoison=True, epochs=30)
    data = MethodData("pgu", poison, validation=setup.data.val, train_stats=stats)
    clean = method.unlearn(copy.deepcopy(model), data, ctx)
    assert method.last_steps[0].mode == "depoison"
    true_poison = Split(poison.x, train.y[flipped])
    assert _acc(clean, poison) < _acc(model, poison) and _acc(clean, poison) < 0.05  # poisoned labels unlearned
    assert _acc(clean, true_poison) > _acc(model, true_poison)  # the poisoned examples are re-classified
    assert _acc(clean, test) > _acc(model, test)  # and the clean test accuracy goes up


# ---------------------------------------------------------------------------------------- contract
def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("pgu"), {**FAST, "epochs": 3})


# ------------------------------------------------------------------------------ class-removal stop (issue 12)
def test_chance_stop_fires_early_on_digits_class(digits_class_setup):
    """Paper Section 3.2.3: class removal stops once the forget accuracy reaches chance (100 / K %). On digits-class
    the code's 5-point validation-drop rule never fires (all 99 training epochs run); the chance rule stops within
    a few epochs, at a forget accuracy of at most 10%, and says so in the diagnostics."""
    plugin = load_method("pgu")
    chance = run_method(digits_class_setup, plugin, {}, seed=0)
    drop = run_method(digits_class_setup, plugin, {"class_stop": "drop"}, seed=0)
    assert chance.params["class_stop"] == "chance"
    d, full = chance.diagnostics, drop.diagnostics
    assert d["mode"] == "class" and d["stop_reason"] == "forget-at-chance"
    assert 1 <= d["epochs_trained"] <= 10 and d["kept_epoch"] == d["epochs_trained"]
    assert d["kept_forget_acc"] <= 100.0 / 10
    out = digits_class_setup.outputs(chance.model)
    assert accuracy(out.forget_logits, out.forget_labels) * 100 == pytest.approx(d["kept_forget_acc"])
    assert full["stop_reason"] == "max-epochs" and full["epochs_trained"] == 99


def test_sample_mode_evaluates_the_validation_split_once_per_epoch(digits_setup, monkeypatch):
    """In sample removal no class is removed, so the retained-class validation set is the validation set: it is not
    evaluated a second time."""
    import muaudit_methods.pgu as pgu_module

    calls = []
    real = pgu_module.accuracy_percent

    def counting(model, split, device):
        calls.append(len(split))
        return real(model, split, device)

    monkeypatch.setattr(pgu_module, "accuracy_percent", counting)
    run = run_method(digits_setup, load_method("pgu"), FAST, seed=0)
    epochs = run.diagnostics["kept_epoch"] + 1
    assert run.diagnostics["mode"] == "sample"
    n_val, n_forget = len(digits_setup.data.val), len(digits_setup.forget)
    assert n_val != n_forget
    assert calls.count(n_val) == len(calls) // 2 and calls.count(n_forget) == len(calls) // 2
    assert len(calls) >= 2 * epochs
