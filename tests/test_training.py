"""The one training loop: iterations, determinism, AdamW weight decay, schedules, loss history."""
import math

import numpy as np
import pytest
import torch

from lbnb.training import batch_indices, learning_rate, train


def _toy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    w = torch.arange(1.0, 6.0)
    y = x @ w + 0.5
    return torch.cat([x, y[:, None]], dim=1)  # (N, 6): features, target


def _model(seed=0, dropout=0.0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(5, 1))


def _mse(model, batch):
    return (model(batch[:, :5])[:, 0] - batch[:, 5]) ** 2


def _fit(seed=0, **kw):
    model = _model(dropout=0.1)
    args = dict(n_iterations=30, batch_size=8, lr=1e-2, random_state=seed, record_every=10, progress=False)
    args.update(kw)
    return model, train(model, _toy(), _mse, **args)


def test_loss_decreases_on_toy_regression():
    model = _model()
    result = train(model, _toy(), _mse, n_iterations=300, batch_size=16, lr=5e-2, schedule="constant",
                   progress=False)
    assert result.batch_losses[-20:].mean() < 0.01 * result.batch_losses[:5].mean()
    assert torch.allclose(model[1].weight.detach(), torch.arange(1.0, 6.0)[None], atol=0.05)


def test_same_seed_identical_weights_and_history():
    torch.manual_seed(1)  # the global RNG state must not matter
    m1, r1 = _fit(seed=3)
    torch.manual_seed(2)
    m2, r2 = _fit(seed=3)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(r1.history, r2.history)
    np.testing.assert_array_equal(r1.batch_losses, r2.batch_losses)


def test_different_seed_different_run():
    m1, r1 = _fit(seed=3)
    m2, r2 = _fit(seed=4)
    assert not np.array_equal(r1.batch_losses, r2.batch_losses)
    assert not torch.equal(m1[1].weight, m2[1].weight)


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _fit(seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_weight_decay_is_applied():
    """A loss with zero gradient: only AdamW's decoupled decay can move the weights."""
    def no_signal(model, batch):
        return 0.0 * model[1](batch[:, :5])[:, 0]

    results = {}
    for wd in (0.0, 0.5):
        model = _model()
        w0 = model[1].weight.detach().clone()
        b0 = model[1].bias.detach().clone()
        train(model, _toy(), no_signal, n_iterations=20, lr=0.1, weight_decay=wd, schedule="constant",
              progress=False)
        results[wd] = model[1].weight.detach()
        assert torch.equal(model[1].bias.detach(), b0)  # biases are not decayed
    assert torch.equal(results[0.0], w0)
    np.testing.assert_allclose(results[0.5].numpy(), (w0 * (1 - 0.1 * 0.5) ** 20).numpy(), rtol=1e-5)


def test_history_shape_and_record_iterations():
    n = len(_toy())
    _, r = _fit(n_iterations=25, record_every=10)
    assert r.history.shape == (4, n)  # steps 0, 10, 20 and the final 25
    np.testing.assert_array_equal(r.record_iterations, [0, 10, 20, 25])
    assert r.n_iterations == 25 and len(r.batch_losses) == 25 and len(r.learning_rates) == 25
    # the recorded loss of every sample falls from the untrained to the trained model
    assert r.history[-1].mean() < r.history[0].mean()
    _, r0 = _fit(record_every=0)
    assert r0.history.shape == (0, n) and len(r0.record_iterations) == 0


def test_history_is_eval_mode_loss():
    """Recorded values are the eval-mode (no dropout) per-sample losses of the trained model."""
    model, r = _fit(n_iterations=10, record_every=10)
    with torch.no_grad():
        model.eval()
        expected = _mse(model, _toy()).double().numpy()
    np.testing.assert_allclose(r.history[-1], expected, rtol=1e-6)


def test_iterations_counted_exactly():
    calls = []

    def counting(model, batch):
        calls.append(len(batch))
        return _mse(model, batch)

    train(_model(), _toy(n=10), counting, n_iterations=7, batch_size=4, progress=False)
    assert calls == [4] * 7
    calls.clear()
    train(_model(), _toy(n=3), counting, n_iterations=2, batch_size=16, progress=False)
    assert calls == [3, 3]  # batch capped at N


def test_batches_cover_every_sample_equally():
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(batch_indices(10, 4, 5, g))  # 20 draws = two full permutations
    assert np.bincount(idx.numpy(), minlength=10).tolist() == [2] * 10


def test_lr_schedules():
    assert learning_rate(0, 100, 1.0, "constant") == 1.0
    assert learning_rate(99, 100, 1.0, "constant") == 1.0
    assert learning_rate(0, 100, 1.0, "cosine") == 1.0
    assert learning_rate(50, 100, 1.0, "cosine") == pytest.approx(0.5)
    assert learning_rate(99, 100, 1.0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert learning_rate(50, 100, 1.0, "cosine", final_lr_fraction=0.1) == pytest.approx(0.55)
    assert [learning_rate(s, 100, 1.0, "cosine", warmup=4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(4, 100, 1.0, "cosine", warmup=4) == 1.0
    _, r = _fit(n_iterations=20, schedule="cosine")
    np.testing.assert_allclose(r.learning_rates, [learning_rate(s, 20, 1e-2) for s in range(20)])
    assert np.all(np.diff(r.learning_rates) < 0)


@pytest.mark.parametrize("kw, error", [
    (dict(n_iterations=0), ValueError), (dict(n_iterations=2.5), ValueError), (dict(batch_size=0), ValueError),
    (dict(lr=0.0), ValueError), (dict(weight_decay=-1.0), ValueError), (dict(schedule="step"), ValueError),
    (dict(record_every=-1), ValueError)])
def test_bad_arguments(kw, error):
    args = dict(n_iterations=5, progress=False)
    args.update(kw)
    with pytest.raises(error):
        train(_model(), _toy(), _mse, **args)


def test_bad_inputs_and_losses():
    with pytest.raises(ValueError, match="empty"):
        train(_model(), torch.zeros(0, 6), _mse, n_iterations=1, progress=False)
    with pytest.raises(TypeError):
        train(_model(), np.zeros((4, 6)), _mse, n_iterations=1, progress=False)
    with pytest.raises(ValueError, match="per-sample"):
        train(_model(), _toy(), lambda m, b: _mse(m, b).mean(), n_iterations=1, progress=False)
    with pytest.raises(FloatingPointError):
        train(_model(), _toy(), lambda m, b: _mse(m, b) * float("nan"), n_iterations=1, progress=False)
