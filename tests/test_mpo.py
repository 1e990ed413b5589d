"""The maths and bookkeeping of agents/mpo.py (fast: small networks, a few updates each)."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from agents import mpo
from agents.mpo import (
    DUAL_RAW_MIN,
    Critic,
    DiagonalGaussianPolicy,
    LayerNormMLP,
    MPOAgent,
    SmallInitLinear,
    retrace_target,
)

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, BATCH = 3, 2, 16


def make_agent(**overrides) -> MPOAgent:
    torch.manual_seed(0)
    options = dict(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        action_low=-np.ones(ACT_DIM, dtype=np.float32),
        action_high=np.ones(ACT_DIM, dtype=np.float32),
        device="cpu",
        policy_layer_sizes=(32, 32),
        critic_layer_sizes=(32, 32),
        action_samples=8,
    )
    options.update(overrides)
    return MPOAgent(**options)


def make_batch(seed: int = 0, batch: int = BATCH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions_raw = rng.normal(0.0, 1.0, (batch, ACT_DIM)).astype(np.float32)
    return {
        "obs": rng.normal(size=(batch, OBS_DIM)).astype(np.float32),
        "actions_exec": np.clip(actions_raw, -1.0, 1.0),
        "actions_raw": actions_raw,
        "rewards": rng.normal(size=batch).astype(np.float32),
        "next_obs": rng.normal(size=(batch, OBS_DIM)).astype(np.float32),
        "terminated": np.zeros(batch, dtype=np.float32),
    }


def make_sequence_batch(steps: int, seed: int = 0, batch: int = BATCH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions_raw = rng.normal(0.0, 1.0, (batch, steps, ACT_DIM)).astype(np.float32)
    dones = (rng.uniform(size=(batch, steps)) < 0.2).astype(np.float32)
    return {
        "obs": rng.normal(size=(batch, steps, OBS_DIM)).astype(np.float32),
        "actions_exec": np.clip(actions_raw, -1.0, 1.0),
        "actions_raw": actions_raw,
        "rewards": rng.normal(size=(batch, steps)).astype(np.float32),
        "next_obs": rng.normal(size=(batch, steps, OBS_DIM)).astype(np.float32),
        "terminated": dones * (rng.uniform(size=(batch, steps)) < 0.5),
        "dones": dones,
        "behaviour_log_probs": rng.normal(-2.0, 0.5, (batch, steps)).astype(np.float32),
    }


def agent_tensors(agent: MPOAgent) -> dict[str, object]:
    """Every tensor and primitive of the agent's state_dict, flattened; tensors cloned."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value.detach().clone()
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{prefix}/{index}", item)
        else:
            flat[prefix] = value

    walk("", agent.state_dict())
    return flat


def assert_same_tensors(before: dict[str, object], after: dict[str, object]) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


# ---------------------------------------------------------------------- networks


def test_layer_norm_mlp_structure() -> None:
    torch.manual_seed(0)
    mlp = LayerNormMLP(5, (16, 8, 4), activate_final=False)
    x = torch.randn(7, 5)
    expected = mlp(x)
    manual = torch.tanh(mlp.input_norm(mlp.input_linear(x)))
    manual = mlp.hidden[1](torch.nn.functional.elu(mlp.hidden[0](manual)))
    torch.testing.assert_close(expected, manual)
    final = LayerNormMLP(5, (16, 8), activate_final=True)
    assert (final(x) >= -1.0).all()  # ELU output is bounded below by -1


def test_small_init_linear_is_truncated_with_zero_bias() -> None:
    torch.manual_seed(0)
    layer = SmallInitLinear(200, 100, std=0.01)
    assert layer.weight.abs().max() <= 0.02 + 1e-7
    # N(0, 0.01^2) truncated at +-2 std has std 0.01 * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.0088.
    assert 0.0085 < layer.weight.std() < 0.0091
    assert abs(float(layer.weight.detach().mean())) < 2e-4
    assert torch.count_nonzero(layer.bias) == 0


def test_layer_norm_mlp_defaults_to_a_linear_last_layer_and_needs_a_layer() -> None:
    torch.manual_seed(0)
    mlp = LayerNormMLP(4, (16, 8))
    x = 5.0 * torch.randn(64, 4)
    manual = mlp.hidden[0](torch.tanh(mlp.input_norm(mlp.input_linear(x))))
    torch.testing.assert_close(mlp(x), manual)
    assert (mlp(x) < -1.0).any()  # no ELU at the end
    with pytest.raises(ValueError, match="^layer_sizes must name at least one layer$"):
        LayerNormMLP(4, ())


def test_policy_mean_head_has_unit_gain_fan_in_initialisation() -> None:
    torch.manual_seed(0)
    policy = DiagonalGaussianPolicy(3, 64, (256,))
    assert float(policy.mean_head.weight.detach().std()) == pytest.approx(1.0 / 16.0, rel=0.03)  # 1 / sqrt(fan_in)
    assert torch.count_nonzero(policy.mean_head.bias) == 0


def test_critic_sampled_pass_matches_forward_and_clips_actions() -> None:
    torch.manual_seed(0)
    critic = Critic(4, 3, (64, 32), np.full(3, -0.5), np.full(3, 0.5))
    obs = torch.randn(5, 4)
    actions = 2.0 * torch.randn(5, 7, 3)
    expected = critic(obs.unsqueeze(1).expand(5, 7, 4), actions).squeeze(-1)
    torch.testing.assert_close(critic.forward_sampled(obs, actions), expected, rtol=1e-5, atol=1e-6)
    clipped = critic(obs, actions[:, 0].clamp(-0.5, 0.5))
    torch.testing.assert_close(critic(obs, actions[:, 0]), clipped)


def test_critic_sampled_pass_in_uneven_chunks_reuses_its_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mpo, "INFERENCE_CHUNK_ROWS", 15)  # 2 states of 7 actions per chunk
    torch.manual_seed(0)
    critic = Critic(4, 3, (16, 8), np.full(3, -1.0), np.full(3, 1.0))
    for batch in (5, 3, 6):
        obs, actions = torch.randn(batch, 4), torch.randn(batch, 7, 3)
        expected = critic(obs.unsqueeze(1).expand(batch, 7, 4), actions).squeeze(-1)
        torch.testing.assert_close(critic.forward_sampled(obs, actions), expected, rtol=1e-5, atol=1e-6)


def test_scratch_buffers_reuse_storage_only_when_it_fits() -> None:
    scratch = mpo.ScratchBuffers()
    like = torch.zeros(1)
    first = scratch.get("a", (6, 3), like)
    assert first.shape == (6, 3) and first.dtype == torch.float32
    assert scratch.get("a", (6, 3), like).data_ptr() == first.data_ptr()
    fewer = scratch.get("a", (4, 3), like)
    assert fewer.shape == (4, 3) and fewer.data_ptr() == first.data_ptr()  # the first rows
    more = scratch.get("a", (8, 3), like)
    assert more.shape == (8, 3) and more.data_ptr() != first.data_ptr()
    assert scratch.get("a", (8, 3), like).data_ptr() == more.data_ptr()  # the larger one is kept
    other_width = scratch.get("a", (2, 5), like)
    assert other_width.shape == (2, 5)
    double = scratch.get("a", (2, 5), torch.zeros(1, dtype=torch.float64))
    assert double.dtype == torch.float64 and double.data_ptr() != other_width.data_ptr()
    assert scratch.get("b", (2, 5), torch.zeros(1, dtype=torch.float64)).data_ptr() != double.data_ptr()


def test_policy_samples_are_mean_plus_std_times_the_generators_noise() -> None:
    torch.manual_seed(0)
    policy = DiagonalGaussianPolicy(3, 2, (8,), np.array([-2.0, -1.0]), np.array([2.0, 1.0])).double()
    mean = torch.tensor([[0.5, -0.2], [1.9, 0.9]], dtype=torch.float64)
    log_std = torch.tensor([[0.1, -0.5], [0.3, 0.2]], dtype=torch.float64)
    raw, executed = policy.sample_action_raw_and_exec(mean, log_std, False, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(raw, mean + log_std.exp() * noise, rtol=0, atol=1e-15)
    low, high = torch.tensor([-2.0, -1.0], dtype=torch.float64), torch.tensor([2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(executed, torch.maximum(torch.minimum(raw, high), low))
    torch.testing.assert_close(policy.sample_action(mean, log_std, True), torch.maximum(torch.minimum(mean, high), low))
    obs = torch.randn(4, 3, dtype=torch.float64)
    torch.manual_seed(7)
    raw_many, executed_many = policy.sample_actions_raw_and_exec(obs, 5)
    torch.manual_seed(7)
    torch.testing.assert_close(policy.sample_actions(obs, 5), executed_many)
    assert raw_many.shape == (4, 5, 2) and not torch.equal(raw_many, executed_many)


def test_policy_forward_sanitises_and_samples_inside_bounds() -> None:
    torch.manual_seed(0)
    policy = DiagonalGaussianPolicy(3, 2, (16,), np.array([-2.0, -1.0]), np.array([2.0, 1.0]))
    with torch.no_grad():
        policy.log_std_head.bias.fill_(10.0)
        policy.mean_head.bias[0] = float("nan")
    mean, log_std = policy(torch.randn(4, 3))
    assert torch.isfinite(mean).all() and (log_std <= 2.0).all()
    heads = DiagonalGaussianPolicy(3, 4, (8,))
    with torch.no_grad():  # head outputs nan, +inf, -inf and a value below the log-std floor
        for head in (heads.mean_head, heads.log_std_head):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([float("nan"), float("inf"), -float("inf"), -30.0]))
    head_mean, head_log_std = heads(torch.randn(2, 3))
    assert torch.equal(head_mean, torch.tensor([[0.0, 0.0, 0.0, -30.0]] * 2))
    assert torch.equal(head_log_std, torch.tensor([[0.0, 0.0, 0.0, -20.0]] * 2))
    raw, executed = policy.sample_actions_raw_and_exec(torch.randn(4, 3), 50)
    assert raw.shape == executed.shape == (4, 50, 2)
    assert (executed[..., 0].abs() <= 2.0).all() and (executed[..., 1].abs() <= 1.0).all()
    deterministic_raw, _ = policy.sample_action_raw_and_exec(mean, log_std, True)
    torch.testing.assert_close(deterministic_raw, mean)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments: \['unknown'\]"):
        policy.sample_action(mean, log_std, False, unknown=1)
    generator = torch.Generator().manual_seed(3)
    first = policy.sample_action(mean, log_std, False, generator=generator)
    second = policy.sample_action(mean, log_std, False, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second)
    assert {id(p) for p in policy.head_parameters()} == {
        id(p) for p in [*policy.mean_head.parameters(), *policy.log_std_head.parameters()]
    }


# ---------------------------------------------------------------------- KL and E-step


def test_kl_per_dimension_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    mean_p, mean_q = torch.randn(10, 4), torch.randn(10, 4)
    log_std_p, log_std_q = 0.5 * torch.randn(10, 4), 0.5 * torch.randn(10, 4)
    expected = kl_divergence(Normal(mean_p, log_std_p.exp()), Normal(mean_q, log_std_q.exp()))
    actual = make_agent()._kl_diag_gaussian_per_dim(mean_p, log_std_p, mean_q, log_std_q)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_e_step_weights_are_softmax_of_q_over_temperature() -> None:
    agent = make_agent()
    q_values = torch.randn(6, 9)
    temperature = torch.tensor(0.7)
    weights, _ = agent._compute_weights_and_temperature_loss(q_values, 0.1, temperature)
    torch.testing.assert_close(weights, torch.softmax(q_values / 0.7, dim=-1))
    assert not weights.requires_grad


@pytest.mark.parametrize(("spread", "raises"), [(10.0, True), (0.01, False)])
def test_temperature_gradient_moves_eta_towards_the_kl_bound(spread: float, raises: bool) -> None:
    agent = make_agent()
    torch.manual_seed(1)
    q_values = spread * torch.randn(32, 20)
    epsilon = 0.1
    temperature = torch.tensor(1.0, requires_grad=True)
    weights, loss = agent._compute_weights_and_temperature_loss(q_values, epsilon, temperature)
    loss.backward()
    kl = agent._compute_nonparametric_kl_from_weights(weights).mean()
    assert (kl > epsilon) == raises
    # dL/d eta = epsilon - KL(weights || uniform): descent raises eta exactly when KL > epsilon.
    torch.testing.assert_close(temperature.grad, epsilon - kl, rtol=1e-4, atol=1e-5)
    assert (temperature.grad < 0) == raises


def test_nonparametric_kl_of_uniform_weights_is_zero() -> None:
    agent = make_agent()
    kl = agent._compute_nonparametric_kl_from_weights(torch.full((3, 5), 0.2))
    torch.testing.assert_close(kl, torch.zeros(3))
    one_hot = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(agent._compute_nonparametric_kl_from_weights(one_hot), torch.tensor([math.log(4)]))


@pytest.mark.parametrize("which", ["alpha_mean", "alpha_std"])
@pytest.mark.parametrize("kl_exceeds", [True, False])
def test_alpha_duals_rise_when_the_m_step_kl_exceeds_its_bound(which: str, kl_exceeds: bool) -> None:
    agent = make_agent(
        mstep_kl_epsilon=1e-6 if kl_exceeds else 10.0,
        target_networks_update_period=1000,
        init_log_alpha_mean=1.0,
        init_log_alpha_stddev=1.0,
        lambda_lr=0.05,
    )
    agent.update(make_batch(0))  # syncs the targets
    with torch.no_grad():  # move the online policy away from the target in every dimension
        head = agent.policy.mean_head if which == "alpha_mean" else agent.policy.log_std_head
        head.bias.add_(0.5)
    before = agent.duals[which].detach().clone()
    assert agent.update(make_batch(1)) is not None
    change = agent.duals[which].detach() - before
    assert ((change > 0) if kl_exceeds else (change < 0)).all(), change


# ---------------------------------------------------------------------- critic targets


def test_retrace_target_by_hand_with_an_episode_end_inside_the_window() -> None:
    gamma = 0.9
    q_taken = torch.tensor([[1.0, 2.0, 3.0]])
    next_value = torch.tensor([[4.0, 5.0, 6.0]])
    rewards = torch.tensor([[0.5, 1.0, 2.0]])
    traces = torch.tensor([[0.3, 0.5, 0.8]])  # c_0 is never used
    no_end = torch.zeros(1, 3)
    # deltas: 0.5 + 0.9*4 - 1 = 3.1; 1 + 0.9*5 - 2 = 3.5; 2 + 0.9*6 - 3 = 4.4
    full = retrace_target(q_taken, next_value, rewards, no_end, no_end, traces, gamma)
    torch.testing.assert_close(full, torch.tensor([1.0 + 3.1 + 0.9 * 0.5 * 3.5 + 0.81 * 0.5 * 0.8 * 4.4]))
    # Truncated at t=1: delta_1 still bootstraps, nothing after t=1 counts.
    ended = torch.tensor([[0.0, 1.0, 0.0]])
    truncated = retrace_target(q_taken, next_value, rewards, no_end, ended, traces, gamma)
    torch.testing.assert_close(truncated, torch.tensor([1.0 + 3.1 + 0.9 * 0.5 * 3.5]))
    # Terminated at t=1: delta_1 = 1 - 2 = -1 (no bootstrap), nothing after t=1 counts.
    terminated = retrace_target(q_taken, next_value, rewards, ended, ended, traces, gamma)
    torch.testing.assert_close(terminated, torch.tensor([1.0 + 3.1 + 0.9 * 0.5 * -1.0]))
    # An end at the last step changes nothing inside the window.
    last = torch.tensor([[0.0, 0.0, 1.0]])
    torch.testing.assert_close(retrace_target(q_taken, next_value, rewards, no_end, last, traces, gamma), full)


def test_retrace_update_runs_and_uses_the_window_start() -> None:
    agent = make_agent(use_retrace=True, retrace_steps=3, retrace_mc_actions=4)
    batch = make_sequence_batch(3)
    target = agent._retrace_q_target({key: torch.as_tensor(value) for key, value in batch.items()})
    assert target.shape == (BATCH,) and torch.isfinite(target).all()
    metrics = agent.update(batch)
    assert metrics is not None and all(math.isfinite(value) for value in metrics.values())
    with pytest.raises(KeyError, match=r"MPO batch is missing \['dones'\]"):
        agent.update({key: value for key, value in batch.items() if key != "dones"})
    with pytest.raises(ValueError, match=r"must be \(B, L, O\), got \(16, 3\)"):
        agent.update({**batch, "obs": batch["obs"][:, 0]})


def test_one_step_target_bootstraps_through_truncation_only() -> None:
    batch = make_batch(0)
    batch["rewards"] = np.zeros(BATCH, dtype=np.float32)
    truncated = make_agent().update({**batch, "terminated": np.zeros(BATCH, dtype=np.float32)})
    terminated = make_agent().update({**batch, "terminated": np.ones(BATCH, dtype=np.float32)})
    assert terminated["q/target_mean"] == 0.0
    assert abs(truncated["q/target_mean"]) > 1e-6


# ---------------------------------------------------------------------- bookkeeping


def test_target_networks_sync_on_the_first_update_and_every_period() -> None:
    period = 3
    agent = make_agent(target_networks_update_period=period)
    with torch.no_grad():
        for parameter in agent.q.parameters():
            parameter.add_(0.1)
    previous_target = torch.nn.utils.parameters_to_vector(agent.q_target.parameters()).clone()
    for update in range(7):
        online_before = torch.nn.utils.parameters_to_vector(agent.q.parameters()).clone()
        policy_before = torch.nn.utils.parameters_to_vector(agent.policy.parameters()).clone()
        agent.update(make_batch(update))
        target = torch.nn.utils.parameters_to_vector(agent.q_target.parameters())
        policy_target = torch.nn.utils.parameters_to_vector(agent.policy_target.parameters())
        if update % period == 0:
            assert torch.equal(target, online_before), update
            assert torch.equal(policy_target, policy_before), update
        else:
            assert torch.equal(target, previous_target), update
        previous_target = target.clone()
    assert agent.num_updates == 7


@pytest.mark.parametrize("corrupt", ["obs_nan", "reward_inf", "next_obs_nan", "critic_inf"])
@pytest.mark.parametrize("prior_updates", [0, 1, 2])  # 1: an update that does not sync the targets
def test_non_finite_input_changes_nothing(corrupt: str, prior_updates: int) -> None:
    agent = make_agent(target_networks_update_period=2)
    for update in range(prior_updates):
        agent.update(make_batch(update))
    with torch.no_grad():  # a sync now would change the targets
        for parameter in [*agent.q.parameters(), *agent.policy.parameters()]:
            parameter.add_(0.01)
    batch = make_batch(9)
    if corrupt == "obs_nan":
        batch["obs"][3, 1] = np.nan
    elif corrupt == "reward_inf":
        batch["rewards"][0] = np.inf
    elif corrupt == "next_obs_nan":
        batch["next_obs"][5, 0] = np.nan
    else:
        with torch.no_grad():
            agent.q_target.head.bias.fill_(float("inf"))
            agent.q.head.bias.fill_(float("inf"))
    before = agent_tensors(agent)
    assert agent.update(batch) is None
    assert_same_tensors(before, agent_tensors(agent))
    assert agent.num_updates == prior_updates


def test_lambda_init_warns_that_it_is_ignored() -> None:
    message = "lambda_init=0.5 is ignored; the KL duals start from init_log_alpha_mean and init_log_alpha_stddev"
    with pytest.warns(UserWarning, match=message):
        make_agent(lambda_init=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_agent()


def test_unknown_optimizer_raises_and_sgd_works() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        make_agent(optimizer_type="rmsprop")
    agent = make_agent(optimizer_type="sgd")
    assert isinstance(agent.q_optimizer, torch.optim.SGD)
    assert agent.update(make_batch()) is not None
    for optimizer in make_agent(optimizer_type="Adam").q_optimizer, make_agent().dual_optimizer:
        assert isinstance(optimizer, torch.optim.Adam)
        assert all(group["fused"] is True and group["eps"] == 1e-5 for group in optimizer.param_groups)


def test_constructor_defaults_are_the_seed_values() -> None:
    agent = MPOAgent(OBS_DIM, ACT_DIM, None, None, torch.device("cpu"), (8,), (8,))
    expected = dict(
        obs_dim=OBS_DIM, act_dim=ACT_DIM, gamma=0.99, target_networks_update_period=100, policy_lr=0.0003,
        q_lr=0.0003, kl_epsilon=0.1, mstep_kl_epsilon=0.1, temperature_lr=0.0003, lambda_lr=0.0003,
        epsilon_penalty=0.001, max_grad_norm=1.0, action_samples=20, use_retrace=False, retrace_steps=2,
        retrace_mc_actions=8, retrace_lambda=0.95, optimizer_type="adam", sgd_momentum=0.9, m_steps=1,
    )
    for name, value in expected.items():
        assert getattr(agent, name) == value, name
    assert agent.device == torch.device("cpu")
    softplus = torch.nn.functional.softplus
    assert float(softplus(agent.duals["temperature"].detach()) + 1e-8) == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(agent.duals["penalty_temperature"], agent.duals["temperature"])
    torch.testing.assert_close(agent.duals["alpha_mean"].detach(), torch.full((ACT_DIM,), 10.0))
    torch.testing.assert_close(agent.duals["alpha_std"].detach(), torch.full((ACT_DIM,), 1000.0))
    assert [group["lr"] for group in agent.dual_optimizer.param_groups] == [0.0003, 0.0003]
    assert agent.q_optimizer.param_groups[0]["lr"] == agent.policy_optimizer.param_groups[0]["lr"] == 0.0003
    for network in (agent.policy, agent.policy_target, agent.q, agent.q_target):  # default bounds [-1, 1]^D
        assert torch.equal(network.action_low, -torch.ones(ACT_DIM))
        assert torch.equal(network.action_high, torch.ones(ACT_DIM))
    sgd = make_agent(optimizer_type="sgd").q_optimizer.param_groups[0]
    assert sgd["momentum"] == 0.9


def test_networks_get_the_agents_bounds_and_frozen_targets() -> None:
    agent = make_agent(action_low=np.array([-1.0, -0.5], np.float32), action_high=np.array([2.0, 0.5], np.float32))
    for network in (agent.policy, agent.policy_target, agent.q, agent.q_target):
        torch.testing.assert_close(network.action_low, torch.tensor([-1.0, -0.5]))
        torch.testing.assert_close(network.action_high, torch.tensor([2.0, 0.5]))
    for target in (agent.policy_target, agent.q_target):
        assert not target.training and not any(p.requires_grad for p in target.parameters())


@pytest.mark.parametrize("name", ["action_samples", "m_steps", "retrace_steps", "retrace_mc_actions"])
def test_counts_below_one_are_refused(name: str) -> None:
    message = "^action_samples, m_steps, retrace_steps and retrace_mc_actions must be >= 1$"
    with pytest.raises(ValueError, match=message):
        make_agent(**{name: 0})
    assert getattr(make_agent(**{name: 1}), name) == 1
    with pytest.raises(ValueError, match="^target_networks_update_period must be >= 1$"):
        make_agent(target_networks_update_period=0)
    assert make_agent(target_networks_update_period=1).target_networks_update_period == 1


def test_action_bounds_are_broadcast_or_refused() -> None:
    policy = DiagonalGaussianPolicy(3, 2, (8,), np.float32(-0.5), np.array([0.5]))
    assert torch.equal(policy.action_low, torch.full((2,), -0.5)) and policy.action_low.dtype == torch.float32
    assert torch.equal(policy.action_high, torch.full((2,), 0.5))
    default = Critic(3, 2, (8,), None, None)
    assert torch.equal(default.action_low, -torch.ones(2)) and torch.equal(default.action_high, torch.ones(2))
    assert default.action_low.dtype == torch.float32
    with pytest.raises(ValueError, match="action bounds have 3 values, expected 2"):
        Critic(3, 2, (8,), np.zeros(3), np.ones(2))


def test_inverse_softplus_round_trips_and_refuses_non_positive_values() -> None:
    for value in (1e-6, 0.7, 3.0):
        assert math.log1p(math.exp(mpo._inverse_softplus(value))) == pytest.approx(value, rel=1e-9)
    with pytest.raises(ValueError, match="expected a positive value, got 0.0"):
        mpo._inverse_softplus(0.0)


def test_batch_values_become_float32_tensors() -> None:
    agent = make_agent()
    for value in (torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.int64), np.ones(2), [1.0, 2.0]):
        tensor = agent._to_device_tensor(value)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32


def test_sample_gaussian_uses_the_given_generator_and_dtype() -> None:
    mean = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    log_std = torch.tensor([[0.0, -1.0], [0.5, 1.0]], dtype=torch.float64)
    samples = mpo._sample_gaussian(mean, log_std, 3, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert samples.dtype == torch.float64
    torch.testing.assert_close(samples, mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise, rtol=0, atol=1e-15)


def test_a_projected_temperature_stays_positive() -> None:
    agent = make_agent(temperature_lr=0.0)
    with torch.no_grad():
        agent.duals["temperature"].fill_(-30.0)
    metrics = agent.update(make_batch())
    assert agent.duals["temperature"].item() == DUAL_RAW_MIN
    # softplus(-18) + 1e-8: the offset keeps eta away from 0 even at the projection bound.
    assert metrics["dual/temperature"] == pytest.approx(math.log1p(math.exp(-18.0)) + 1e-8, rel=1e-5)


def test_duals_initialisation_and_projection() -> None:
    agent = make_agent(temperature_init=0.5, init_log_alpha_mean=10.0, init_log_alpha_stddev=1000.0)
    softplus = torch.nn.functional.softplus
    torch.testing.assert_close(softplus(agent.duals["temperature"]) + 1e-8, torch.tensor(0.5))
    assert agent.duals["alpha_mean"].shape == agent.duals["alpha_std"].shape == (ACT_DIM,)
    torch.testing.assert_close(agent.duals["alpha_mean"].detach(), torch.full((ACT_DIM,), 10.0))
    torch.testing.assert_close(agent.duals["alpha_std"].detach(), torch.full((ACT_DIM,), 1000.0))
    with torch.no_grad():
        agent.duals["temperature"].fill_(-30.0)
        agent.duals["alpha_mean"].fill_(-30.0)
    metrics = agent.update(make_batch())
    assert (agent.duals["temperature"] >= DUAL_RAW_MIN).all()
    assert (agent.duals["alpha_mean"] >= DUAL_RAW_MIN).all()
    assert metrics["dual/temperature"] > 0


def test_action_penalty_dual_only_when_epsilon_penalty_is_positive() -> None:
    with_penalty = make_agent(epsilon_penalty=0.001)
    assert "penalty_temperature" in with_penalty.duals
    metrics = with_penalty.update(make_batch())
    assert metrics["dual/penalty_temperature"] > 0
    assert "loss/penalty_temperature" in metrics
    without = make_agent(epsilon_penalty=0.0)
    assert "penalty_temperature" not in without.duals
    assert "dual/penalty_temperature" not in without.update(make_batch())


def _mean_after_updates_from_out_of_bounds(epsilon_penalty: float, updates: int) -> float:
    """Policy mean after `updates` updates, starting at 3 (bounds are [-1, 1]) under a flat critic."""
    agent = make_agent(
        epsilon_penalty=epsilon_penalty,
        policy_lr=1e-2,
        q_lr=0.0,
        target_networks_update_period=1,
        init_log_alpha_mean=-5.0,
        init_log_alpha_stddev=-5.0,
    )
    with torch.no_grad():
        agent.policy.mean_head.bias.fill_(3.0)
        agent.q.head.weight.zero_()  # Q is the same for every action: the E-step weights are uniform
    for update in range(updates):
        agent.update(make_batch(update))
    return agent.policy(torch.as_tensor(make_batch(0)["next_obs"]))[0].mean().item()


def test_action_penalty_pulls_an_out_of_bounds_mean_back() -> None:
    assert _mean_after_updates_from_out_of_bounds(0.001, 5) < 2.0
    assert _mean_after_updates_from_out_of_bounds(0.0, 5) > 2.5


def test_metrics_are_plain_floats_with_the_spec_names() -> None:
    metrics = make_agent().update(make_batch())
    required = {
        "loss/q", "loss/policy", "loss/temperature", "loss/dual", "kl/nonparametric", "kl/mean",
        "kl/std", "dual/temperature", "dual/alpha_mean", "dual/alpha_std", "dual/penalty_temperature",
        "q/mean", "q/min", "q/max", "policy/std_mean", "policy/entropy", "weights/entropy",
        "policy/param_delta",
    }
    assert required <= metrics.keys()
    assert all(type(value) is float for value in metrics.values())
    assert metrics["policy/param_delta"] > 0


def test_m_steps_split_the_policy_learning_rate() -> None:
    agent = make_agent(m_steps=4, policy_lr=0.001)
    assert agent.policy_optimizer.param_groups[0]["lr"] == pytest.approx(0.00025)
    assert agent.update(make_batch()) is not None


def test_state_dict_round_trip_through_torch_load_weights_only() -> None:
    agent = make_agent()
    for update in range(3):
        agent.update(make_batch(update))
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make_agent(temperature_init=2.0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.num_updates == 3
    assert_same_tensors(agent_tensors(agent), agent_tensors(restored))
    torch.manual_seed(5)
    expected = agent.update(make_batch(7))
    torch.manual_seed(5)
    assert restored.update(make_batch(7)) == expected


@pytest.mark.parametrize("optimizer_type", ["adam", "sgd"])
def test_a_restored_agent_keeps_the_moments_but_takes_its_own_learning_rates(optimizer_type) -> None:
    saved = make_agent(optimizer_type=optimizer_type, sgd_momentum=0.9)
    saved.update(make_batch(0))
    state = saved.state_dict()
    restored = make_agent(optimizer_type=optimizer_type, sgd_momentum=0.5, q_lr=0.011, policy_lr=0.006, m_steps=3,
                          temperature_lr=0.013, lambda_lr=0.017)
    restored.load_state_dict(state)
    groups = {name: getattr(restored, f"{name}_optimizer").param_groups for name in ("q", "policy", "dual")}
    assert [g["lr"] for g in groups["q"]] == [0.011]
    assert [g["lr"] for g in groups["policy"]] == [pytest.approx(0.002)]
    assert [g["lr"] for g in groups["dual"]] == [0.013, 0.017]
    momenta = {g.get("momentum") for group in groups.values() for g in group}
    assert momenta == ({0.5} if optimizer_type == "sgd" else {None})
    first_moment = "exp_avg" if optimizer_type == "adam" else "momentum_buffer"
    for name in ("q", "policy", "dual"):  # the saved moments are kept
        saved_state = getattr(saved, f"{name}_optimizer").state_dict()["state"]
        restored_state = getattr(restored, f"{name}_optimizer").state_dict()["state"]
        for key, value in saved_state.items():
            assert torch.equal(restored_state[key][first_moment], value[first_moment])


def test_act_with_logp_shapes_and_tensor_batches() -> None:
    agent = make_agent()
    action, raw, log_prob = agent.act_with_logp(np.zeros(OBS_DIM, dtype=np.float32))
    assert action.shape == raw.shape == (ACT_DIM,) and isinstance(log_prob, float)
    actions, raws, log_probs = agent.act_with_logp(np.zeros((5, OBS_DIM), dtype=np.float32), deterministic=True)
    assert actions.shape == (5, ACT_DIM) and log_probs.shape == (5,) and log_probs.dtype == np.float32
    assert np.all(np.abs(agent.act(np.zeros((4, OBS_DIM)))) <= 1.0)
    obs = np.random.default_rng(0).normal(size=(6, OBS_DIM)).astype(np.float32)
    with torch.no_grad():
        mean = agent.policy(torch.as_tensor(obs))[0].clamp(-1.0, 1.0).numpy()
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), mean)
    assert not np.array_equal(agent.act(obs), agent.act(obs))  # stochastic by default
    tensor_batch = {key: torch.as_tensor(value) for key, value in make_batch().items()}
    assert agent.update(tensor_batch) is not None
    assert agent._expected_q_current(torch.zeros(4, OBS_DIM)).shape == (4,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_honoured() -> None:
    agent = make_agent(device="cuda")
    assert next(agent.q.parameters()).is_cuda and agent.duals["temperature"].is_cuda
    assert agent.update(make_batch()) is not None
    assert agent.act(np.zeros(OBS_DIM, dtype=np.float32)).shape == (ACT_DIM,)
