"""Proof of TRPO's maths: KL, conjugate gradient, Fisher-vector product, line search, GAE."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import agents.trpo as trpo
from agents.common import diag_gaussian_log_prob
from agents.trpo import (
    RolloutActor,
    TRPOAgent,
    _conjugate_gradient,
    _flat_grads,
    _flat_params,
    _kl_old_to_new,
    _make_fisher_vector_product,
    _set_flat_params,
    compute_gae,
)

torch.set_num_threads(1)

METRIC_KEYS = {
    "policy/surrogate_before",
    "policy/surrogate_after",
    "policy/improvement",
    "policy/kl",
    "policy/entropy",
    "policy/step_norm",
    "policy/expected_improvement",
    "policy/line_search_frac",
    "policy/line_search_accepted",
    "loss/value",
    "value/explained_variance",
}


def make_agent(obs_dim: int = 3, act_dim: int = 2, layers: tuple[int, ...] = (16, 16), **kwargs) -> TRPOAgent:
    return TRPOAgent(
        obs_dim,
        act_dim,
        -np.ones(act_dim, np.float32),
        np.ones(act_dim, np.float32),
        torch.device("cpu"),
        policy_layer_sizes=layers,
        critic_layer_sizes=layers,
        **kwargs,
    )


def make_batch(agent: TRPOAgent, num_samples: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """Actions sampled from the agent itself; advantages correlated with the action so that a
    policy step can improve the surrogate."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_samples, agent.obs_dim, generator=generator)
    actions, log_probs, _ = agent.act(obs)
    advantages = actions.sum(-1) + 0.1 * torch.randn(num_samples, generator=generator)
    returns = torch.randn(num_samples, generator=generator)
    return {"obs": obs, "actions": actions, "log_probs": log_probs, "returns": returns, "advantages": advantages}


def policy_tensors(agent: TRPOAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.policy.parameters()]


# ----------------------------------------------------------------------------- KL, CG, flat helpers


def test_kl_old_to_new_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    old_mean, new_mean = torch.randn(7, 4), torch.randn(7, 4)
    old_log_std, new_log_std = 0.5 * torch.randn(7, 4), 0.5 * torch.randn(7, 4)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(old_mean, old_log_std.exp()), torch.distributions.Normal(new_mean, new_log_std.exp())
    ).sum(-1)
    result = _kl_old_to_new(old_mean, old_log_std, new_mean, new_log_std)
    assert result.shape == (7,)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(_kl_old_to_new(old_mean, old_log_std, old_mean, old_log_std), torch.zeros(7))


@pytest.mark.parametrize("size", [1, 5, 20])
def test_conjugate_gradient_solves_spd_systems(size: int) -> None:
    generator = torch.Generator().manual_seed(size)
    m = torch.randn(size, size, generator=generator, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(size, dtype=torch.float64)
    b = torch.randn(size, generator=generator, dtype=torch.float64)
    x = _conjugate_gradient(lambda v: a @ v, b, nsteps=3 * size)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-8)


def test_conjugate_gradient_stops_at_convergence_and_handles_zero_rhs() -> None:
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    # Exact after 3 steps; extra iterations must not disturb (or divide by zero) the solution.
    torch.testing.assert_close(_conjugate_gradient(lambda v: a @ v, b, nsteps=50), torch.linalg.solve(a, b))
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.equal(_conjugate_gradient(lambda v: a @ v, zero, 10), zero)


def test_conjugate_gradient_is_exact_when_residual_norms_are_one() -> None:
    # b = e_1 makes r.r and p.Ap exactly 1 in the first iteration: no guard may mistake 1 for 0.
    identity = torch.eye(3, dtype=torch.float64)
    e1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(_conjugate_gradient(lambda v: identity @ v, e1, nsteps=1), e1)
    a = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]], dtype=torch.float64)
    # Conjugate directions reach the exact solution of a 3x3 system in 3 steps.
    torch.testing.assert_close(_conjugate_gradient(lambda v: a @ v, e1, nsteps=3), torch.linalg.solve(a, e1))


def test_kl_old_to_new_sums_over_the_last_dimension_of_any_batch_shape() -> None:
    torch.manual_seed(1)
    old_mean, new_mean = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    old_log_std, new_log_std = 0.3 * torch.randn(2, 3, 4), 0.3 * torch.randn(2, 3, 4)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(old_mean, old_log_std.exp()), torch.distributions.Normal(new_mean, new_log_std.exp())
    ).sum(-1)
    result = _kl_old_to_new(old_mean, old_log_std, new_mean, new_log_std)
    assert result.shape == (2, 3)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


def test_flat_param_helpers_round_trip() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    flat = _flat_params(module)
    assert flat.shape == (sum(p.numel() for p in module.parameters()),)
    _set_flat_params(module, flat + 1.0)
    torch.testing.assert_close(_flat_params(module), flat + 1.0)
    torch.testing.assert_close(module[0].bias, torch.zeros(4) + 1.0 + flat[12:16])
    with pytest.raises(ValueError, match="flat_params has 25 values, the module has 26 parameters"):
        _set_flat_params(module, flat[:-1])


def test_flat_grads_treats_missing_grads_as_zeros() -> None:
    params = (nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(4)))
    grads = (torch.full((2, 3), 2.0), None)
    flat = _flat_grads(grads, params)
    torch.testing.assert_close(flat, torch.cat([torch.full((6,), 2.0), torch.zeros(4)]))


# ----------------------------------------------------------------------------- Fisher-vector product


def test_fisher_vector_product_equals_hessian_of_mean_kl() -> None:
    torch.manual_seed(0)
    agent = make_agent(obs_dim=3, act_dim=2, layers=(5,), cg_damping=0.1)
    policy = agent.policy.double()
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([0.3, -0.4], dtype=torch.float64))
    obs = torch.randn(11, 3, dtype=torch.float64)
    with torch.no_grad():
        old_mean, old_log_std = policy(obs)
    named = list(policy.named_parameters())
    theta = _flat_params(policy)

    def mean_kl(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [p.numel() for _, p in named])
        params = {name: piece.view_as(p) for (name, p), piece in zip(named, pieces, strict=True)}
        mean, log_std = functional_call(policy, params, (obs,))
        return _kl_old_to_new(old_mean, old_log_std, mean, log_std).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta)
    mean, log_std = policy(obs)
    fvp = _make_fisher_vector_product(tuple(policy.parameters()), mean, log_std, old_log_std, damping=0.1)
    for seed in range(3):
        v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("subset", ["log_std_only", "mean_only", "with_an_unused_parameter"])
def test_fisher_vector_product_on_parameter_subsets(subset: str) -> None:
    """Parameters that move only the mean, only the log-std, or nothing: the FVP is still the KL
    Hessian restricted to them (zeros for an unused one) plus damping."""
    torch.manual_seed(0)
    policy = make_agent(obs_dim=3, act_dim=2, layers=(4,)).policy.double()
    obs = torch.randn(9, 3, dtype=torch.float64)
    with torch.no_grad():
        old_mean, old_log_std = policy(obs)
    unused = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    chosen = {
        "log_std_only": [policy.log_std],
        "mean_only": [p for name, p in policy.named_parameters() if name != "log_std"],
        "with_an_unused_parameter": [*policy.parameters(), unused],
    }[subset]
    names = {id(p): name for name, p in policy.named_parameters()}
    theta = torch.cat([p.detach().reshape(-1) for p in chosen])

    def mean_kl(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [p.numel() for p in chosen])
        overrides = {names[id(p)]: piece.view_as(p) for p, piece in zip(chosen, pieces, strict=True) if id(p) in names}
        mean, log_std = functional_call(policy, overrides, (obs,))
        return _kl_old_to_new(old_mean, old_log_std, mean, log_std).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta)
    mean, log_std = policy(obs)
    fvp = _make_fisher_vector_product(tuple(chosen), mean, log_std, old_log_std, damping=0.05)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(fvp(v), hessian @ v + 0.05 * v, rtol=1e-8, atol=1e-10)


# ----------------------------------------------------------------------------- update


def test_constructor_defaults_are_the_seed_values() -> None:
    agent = TRPOAgent(3, 2, [-1.0, -1.0], [1.0, 1.0], torch.device("cpu"), (8,), (8,))
    expected = dict(
        gamma=0.99, gae_lambda=0.95, target_kl=0.01, cg_iters=10, cg_damping=0.1, backtrack_coeff=0.8,
        backtrack_iters=10, value_lr=0.0003, value_epochs=10, value_minibatch_size=256, max_grad_norm=0.5,
        normalize_advantages=True, optimizer_type="adam", sgd_momentum=0.9,
    )
    for name, value in expected.items():
        assert getattr(agent, name) == value, name
    group = agent.value_optimizer.param_groups[0]
    assert isinstance(agent.value_optimizer, torch.optim.Adam)
    assert group["lr"] == 0.0003 and group["eps"] == 1e-5 and group["fused"] is True
    sgd = make_agent(optimizer_type="sgd").value_optimizer.param_groups[0]
    assert sgd["momentum"] == 0.9 and sgd["fused"] is True


def test_action_bounds_are_stored_flat_as_float32() -> None:
    agent = TRPOAgent(3, 2, np.array([[-1.0, -2.0]]), np.array([[1.0, 2.0]]), torch.device("cpu"), (8,), (8,))
    assert agent.action_low.shape == agent.action_high.shape == (2,)
    assert agent.action_low.dtype == agent.action_high.dtype == np.float32
    clipped = agent.env_action(torch.tensor([[5.0, -5.0]]))
    assert clipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, [[1.0, -2.0]])


def test_update_returns_all_metrics_as_floats_and_counts() -> None:
    torch.manual_seed(0)
    agent = make_agent()
    metrics = agent.update(make_batch(agent))
    assert set(metrics) == METRIC_KEYS
    assert all(type(value) is float and np.isfinite(value) for value in metrics.values())
    assert agent.num_updates == 1
    agent.update(make_batch(agent, seed=1))
    assert agent.num_updates == 2
    assert metrics["policy/line_search_accepted"] == 1.0
    assert metrics["policy/improvement"] > 0
    assert 0 < metrics["policy/line_search_frac"] <= 1


def test_accepted_step_respects_the_trust_region() -> None:
    for seed in range(5):
        torch.manual_seed(seed)
        agent = make_agent(target_kl=0.005)
        batch = make_batch(agent, seed=seed)
        obs = batch["obs"]
        with torch.no_grad():
            old_mean, old_log_std = agent.policy(obs)
        metrics = agent.update(batch)
        assert metrics["policy/line_search_accepted"] == 1.0
        with torch.no_grad():
            new_mean, new_log_std = agent.policy(obs)
        kl = _kl_old_to_new(old_mean, old_log_std, new_mean, new_log_std).mean().item()
        assert 0 < kl <= agent.target_kl
        assert kl == pytest.approx(metrics["policy/kl"], rel=1e-5)


def test_rejected_step_restores_parameters_exactly() -> None:
    torch.manual_seed(0)
    # Zero advantages: no candidate improves the surrogate, so every one is rejected.
    agent = make_agent(normalize_advantages=False)
    batch = make_batch(agent)
    batch["advantages"] = torch.zeros_like(batch["advantages"])
    before = policy_tensors(agent)
    metrics = agent.update(batch)
    assert metrics["policy/line_search_accepted"] == 0.0
    assert metrics["policy/line_search_frac"] == 0.0
    assert metrics["policy/step_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))


def test_rejection_after_trying_every_candidate_restores_parameters_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    agent = make_agent(backtrack_iters=4)
    batch = make_batch(agent)
    before = policy_tensors(agent)
    # A trust region no candidate can satisfy: every candidate's KL is reported as too large.
    real_kl = trpo._kl_old_to_new
    calls = []

    def inflated_kl(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return real_kl(*args) + 1.0

    monkeypatch.setattr(trpo, "_kl_old_to_new", inflated_kl)
    metrics = agent.update(batch)
    assert len(calls) == 4  # each candidate was tried
    assert metrics["policy/line_search_accepted"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))


def test_normalize_advantages_is_applied_inside_update() -> None:
    def policy_after_update(normalize: bool, standardise_first: bool) -> torch.Tensor:
        torch.manual_seed(0)
        agent = make_agent(normalize_advantages=normalize)
        batch = make_batch(agent)
        advantages = 50.0 * batch["advantages"] + 7.0
        if standardise_first:
            advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
        batch["advantages"] = advantages
        torch.manual_seed(1)
        agent.update(batch)
        return _flat_params(agent.policy)

    normalized_inside = policy_after_update(normalize=True, standardise_first=False)
    normalized_outside = policy_after_update(normalize=False, standardise_first=True)
    raw = policy_after_update(normalize=False, standardise_first=False)
    torch.testing.assert_close(normalized_inside, normalized_outside, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(normalized_inside, raw, atol=1e-4)


def test_update_accepts_numpy_batches_and_column_log_probs() -> None:
    torch.manual_seed(0)
    agent = make_agent()
    batch = {key: value.numpy() for key, value in make_batch(agent).items()}
    assert batch["log_probs"].shape == (256, 1)
    metrics = agent.update(batch)
    assert metrics["policy/line_search_accepted"] == 1.0


def test_value_regression_fits_the_returns() -> None:
    torch.manual_seed(0)
    agent = make_agent(value_lr=3e-3, value_epochs=20)
    batch = make_batch(agent)
    batch["returns"] = batch["obs"][:, 0] * 2.0 - 1.0
    first = agent.update(batch)["loss/value"]
    for _ in range(5):
        last = agent.update(batch)
    assert last["loss/value"] < 0.2 * first
    assert last["value/explained_variance"] > 0.8


def test_sgd_optimizer_and_unknown_optimizer() -> None:
    assert isinstance(make_agent(optimizer_type="sgd").value_optimizer, torch.optim.SGD)
    assert isinstance(make_agent().value_optimizer, torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer_type"):
        make_agent(optimizer_type="rmsprop")


# ----------------------------------------------------------------------------- acting


def test_act_returns_raw_samples_with_their_log_prob() -> None:
    torch.manual_seed(0)
    agent = make_agent(act_dim=2)
    with torch.no_grad():
        agent.policy.log_std.fill_(1.5)  # std 4.5: most samples fall outside [-1, 1]
    obs = torch.randn(64, 3)
    actions, log_probs, values = agent.act(obs)
    assert actions.shape == (64, 2) and log_probs.shape == (64, 1) and values.shape == (64, 1)
    assert (actions.abs() > 1).any(), "the stored action must be the raw, unclipped sample"
    with torch.no_grad():
        mean, log_std = agent.policy(obs)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1, keepdim=True)
    torch.testing.assert_close(log_probs, expected)
    torch.testing.assert_close(log_probs, diag_gaussian_log_prob(mean, log_std, actions))
    env_actions = agent.env_action(actions)
    assert isinstance(env_actions, np.ndarray)
    np.testing.assert_array_equal(env_actions, np.clip(actions.numpy(), -1.0, 1.0))

    deterministic, _, _ = agent.act(obs.numpy(), deterministic=True)
    torch.testing.assert_close(deterministic, mean)
    single, single_log_prob, single_value = agent.act(obs[0])
    assert single.shape == (1, 2) and single_log_prob.shape == (1, 1) and single_value.shape == (1, 1)


def test_rollout_actor_matches_act() -> None:
    """The numpy snapshot used for rollouts gives act()'s mean, values and log-probs."""
    torch.manual_seed(0)
    agent = make_agent(act_dim=2)
    with torch.no_grad():
        agent.policy.log_std.copy_(torch.tensor([0.3, -0.7]))
        for name, parameter in [*agent.policy.named_parameters(), *agent.value.named_parameters()]:
            if name.endswith("bias"):  # biases start at zero; a sign slip on them would not show
                parameter.add_(0.2 * torch.randn_like(parameter))
    obs = torch.randn(32, 3)
    actor = RolloutActor(agent, np.random.default_rng(0))
    mean, _, values = agent.act(obs, deterministic=True)
    det_action, _, det_values = actor.act(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(det_action, mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det_values, values[:, 0].numpy(), rtol=1e-5, atol=1e-6)

    actions, log_probs, _ = actor.act(obs.numpy())
    with torch.no_grad():
        mean, log_std = agent.policy(obs)
    expected = diag_gaussian_log_prob(mean, log_std, torch.from_numpy(actions))[:, 0]
    np.testing.assert_allclose(log_probs, expected.numpy(), rtol=1e-5, atol=1e-5)
    assert actions.dtype == np.float32 and log_probs.dtype == np.float32
    assert not np.allclose(actions, det_action), "stochastic samples must differ from the mean"
    # The exploration noise is the rng's standard normal draw, scaled by the std and added.
    noise = np.random.default_rng(0).standard_normal((32, 2), dtype=np.float32)
    np.testing.assert_allclose(actions, det_action + np.exp([0.3, -0.7]) * noise, rtol=1e-5, atol=1e-6)


def test_log_std_is_clamped_to_its_bounds_everywhere() -> None:
    """A log-std parameter beyond [-20, 2] acts as the bound in the policy, the rollout snapshot and
    the entropy metric."""
    torch.manual_seed(0)
    agent = make_agent(act_dim=2)
    with torch.no_grad():
        agent.policy.log_std.copy_(torch.tensor([-25.0, 3.0]))
    obs = torch.randn(16, 3)
    _, log_std = agent.policy(obs)
    torch.testing.assert_close(log_std, torch.tensor([-20.0, 2.0]).expand(16, 2))
    _, actor_log_probs, _ = RolloutActor(agent, np.random.default_rng(1)).act(obs.numpy())
    noise = np.random.default_rng(1).standard_normal((16, 2), dtype=np.float32).astype(np.float64)
    # log N(mean + std z; mean, std) = -sum(log_std) - log(2 pi) - |z|^2 / 2 with log_std (-20, 2)
    expected = 18.0 - math.log(2.0 * math.pi) - 0.5 * (noise**2).sum(-1)
    np.testing.assert_allclose(actor_log_probs, expected, rtol=1e-5)
    metrics = agent.update(make_batch(agent))
    entropy = torch.distributions.Normal(0.0, torch.tensor([-20.0, 2.0]).exp()).entropy().sum()
    assert metrics["policy/entropy"] == pytest.approx(float(entropy), rel=1e-6)


def test_orthogonal_initialisation_gains() -> None:
    agent = make_agent(obs_dim=3, act_dim=2, layers=(8, 8))
    torso = [m for m in agent.policy.torso if isinstance(m, nn.Linear)]
    value_torso = [m for m in agent.value.torso if isinstance(m, nn.Linear)]
    for layer in [*torso, *value_torso]:  # gain sqrt(2): W W^T = 2 I (rows <= columns) or W^T W = 2 I
        w = layer.weight.detach().double()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, 2.0 * torch.eye(gram.shape[0], dtype=torch.float64), rtol=1e-5, atol=1e-5)
    mean_rows = agent.policy.mean_head.weight.detach().double()
    torch.testing.assert_close(mean_rows @ mean_rows.T, 1e-4 * torch.eye(2, dtype=torch.float64), rtol=1e-4, atol=1e-9)
    value_row = agent.value.head.weight.detach().double()
    assert float(value_row.norm()) == pytest.approx(1.0, rel=1e-5)
    for layer in [*torso, *value_torso, agent.policy.mean_head, agent.value.head]:
        assert torch.count_nonzero(layer.bias) == 0


def test_networks_without_hidden_layers_are_linear() -> None:
    agent = make_agent(obs_dim=3, act_dim=2, layers=())
    obs = torch.randn(5, 3)
    mean, _ = agent.policy(obs)
    head = agent.policy.mean_head
    torch.testing.assert_close(mean, obs @ head.weight.T + head.bias)
    torch.testing.assert_close(agent.value(obs), obs @ agent.value.head.weight.T + agent.value.head.bias)


def test_policy_initialisation() -> None:
    agent = make_agent(act_dim=3, layers=(8, 8))
    assert torch.equal(agent.policy.log_std.detach(), torch.zeros(3))
    head = agent.policy.mean_head.weight.detach()
    assert head.abs().max() < 0.05  # orthogonal with gain 0.01
    mean, log_std = agent.policy(torch.randn(4, 3))
    assert mean.shape == (4, 3) and log_std.shape == (4, 3)
    with torch.no_grad():
        agent.policy.log_std.fill_(5.0)
    assert agent.policy(torch.randn(4, 3))[1].max().item() == 2.0


# ----------------------------------------------------------------------------- GAE


def test_compute_gae_bootstraps_truncation_and_cuts_termination() -> None:
    # t=1 ends by truncation (bootstrap from V(final obs) = 10), t=3 by termination (no bootstrap).
    rewards = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    values = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    next_values = np.array([1.0, 10.0, 2.0, 7.0], np.float32)
    terminated = np.array([0, 0, 0, 1], np.float32)
    dones = np.array([0, 1, 0, 1], np.float32)
    advantages, returns = compute_gae(rewards, values, next_values, terminated, dones, gamma=0.9, gae_lambda=0.8)
    # delta = [1 + .9*1 - .5, 2 + .9*10 - 1, 3 + .9*2 - 1.5, 4 - 2] = [1.4, 10, 3.3, 2]
    # A3 = 2; A2 = 3.3 + .72*2 = 4.74; A1 = 10 (trace cut); A0 = 1.4 + .72*10 = 8.6
    np.testing.assert_allclose(advantages, [8.6, 10.0, 4.74, 2.0], rtol=1e-6)
    np.testing.assert_allclose(returns, [9.1, 11.0, 6.24, 4.0], rtol=1e-6)
    assert advantages.dtype == np.float32 and returns.dtype == np.float32


def test_compute_gae_bootstraps_the_unfinished_last_step_and_handles_env_columns() -> None:
    rewards = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    values = np.zeros((2, 2), np.float32)
    next_values = np.array([[0.0, 0.0], [5.0, 0.0]], np.float32)
    zeros = np.zeros((2, 2), np.float32)
    advantages, _ = compute_gae(rewards, values, next_values, zeros, zeros, gamma=0.5, gae_lambda=1.0)
    # env 0: A1 = 1 + .5*5 = 3.5, A0 = 1 + .5*3.5 = 2.75; env 1: all zero
    np.testing.assert_allclose(advantages, [[2.75, 0.0], [3.5, 0.0]])
    single, _ = compute_gae(rewards[:, 0], values[:, 0], next_values[:, 0], zeros[:, 0], zeros[:, 0], 0.5, 1.0)
    np.testing.assert_allclose(single, advantages[:, 0])


def test_advantages_and_returns_uses_the_agents_gamma_and_lambda() -> None:
    agent = make_agent(gamma=0.9, gae_lambda=0.8)
    args = (
        np.array([1.0, 2.0], np.float32),
        np.array([0.5, 1.0], np.float32),
        np.array([1.0, 3.0], np.float32),
        np.zeros(2, np.float32),
        np.zeros(2, np.float32),
    )
    for got, expected in zip(agent.advantages_and_returns(*args), compute_gae(*args, gamma=0.9, gae_lambda=0.8), strict=True):
        np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- checkpoints, device


@pytest.mark.parametrize("optimizer_type", ["adam", "sgd"])
def test_a_restored_agent_keeps_the_moments_but_takes_its_own_value_lr(optimizer_type) -> None:
    torch.manual_seed(0)
    saved = make_agent(optimizer_type=optimizer_type, sgd_momentum=0.9)
    saved.update(make_batch(saved))
    restored = make_agent(optimizer_type=optimizer_type, sgd_momentum=0.5, value_lr=0.0123)
    restored.load_state_dict(saved.state_dict())
    (group,) = restored.value_optimizer.param_groups
    assert group["lr"] == 0.0123
    assert group.get("momentum") == (0.5 if optimizer_type == "sgd" else None)
    first_moment = "exp_avg" if optimizer_type == "adam" else "momentum_buffer"
    saved_state = saved.value_optimizer.state_dict()["state"]
    for key, value in restored.value_optimizer.state_dict()["state"].items():
        assert torch.equal(value[first_moment], saved_state[key][first_moment])


def test_state_dict_round_trips_through_weights_only_load() -> None:
    torch.manual_seed(0)
    agent = make_agent()
    agent.update(make_batch(agent))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    torch.manual_seed(1)
    restored = make_agent()
    restored.load_state_dict(state)
    assert restored.num_updates == 1
    obs = torch.randn(5, 3)
    for a, b in zip(agent.act(obs, deterministic=True), restored.act(obs, deterministic=True), strict=True):
        assert torch.equal(a, b)
    batch = make_batch(agent, seed=3)
    torch.manual_seed(2)
    first = agent.update(batch)
    torch.manual_seed(2)
    second = restored.update(batch)
    assert first == second  # optimiser state restored too


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_update_on_cuda() -> None:
    torch.manual_seed(0)
    agent = TRPOAgent(3, 2, -np.ones(2), np.ones(2), torch.device("cuda"), (16, 16), (16, 16))
    assert next(agent.policy.parameters()).is_cuda
    batch = {key: value.cpu().numpy() for key, value in make_batch(agent).items()}
    metrics = agent.update(batch)
    assert set(metrics) == METRIC_KEYS
    actions, _, _ = agent.act(torch.randn(4, 3))
    assert actions.is_cuda
