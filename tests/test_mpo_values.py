"""Pins the VALUES agents/mpo.py computes against an independent computation written here.

Nothing below calls the agent's own maths helpers to build an expected value: the networks are
re-evaluated with torch.nn.functional, densities and KLs come from torch.distributions, the
Retrace target from a backward recursion with explicit Python loops, and one whole update is
re-implemented with plain torch.optim.Adam / SGD and the same samples. Sign-only checks would let
a dropped gamma, a swapped KL or online-for-target networks pass; these compare numbers.

Randomness is controlled by reseeding torch's global generator and re-drawing: the test pins the
sampling convention of one update, noise ~ torch.randn((B, N, D)) for the E-step samples at the
learning states, then (Retrace only) torch.randn((B * L, M, D)) for the bootstrap samples.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from agents.mpo import Critic, DiagonalGaussianPolicy, MPOAgent, retrace_target

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 3, 2
LOW = np.array([-1.0, -0.5], dtype=np.float32)  # asymmetric bounds: low/high mix-ups show
HIGH = np.array([1.0, 0.8], dtype=np.float32)
GAMMA = 0.9
TOL = dict(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- independent networks


def torso_forward(torso: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Linear -> LayerNorm -> tanh, then Linear -> ELU per further layer (activate_final=True)."""
    first, norm = torso.input_linear, torso.input_norm
    h = F.linear(x, first.weight, first.bias)
    h = torch.tanh(F.layer_norm(h, (h.shape[-1],), norm.weight, norm.bias, 1e-5))
    for layer in torso.hidden:
        h = F.elu(F.linear(h, layer.weight, layer.bias))
    return h


def critic_value(critic: Critic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q(s, clip(a)) as (...,) with the bounds of this file."""
    clipped = torch.maximum(torch.minimum(actions, torch.as_tensor(HIGH)), torch.as_tensor(LOW))
    features = torso_forward(critic.torso, torch.cat([obs, clipped], dim=-1))
    return F.linear(features, critic.head.weight, critic.head.bias).squeeze(-1)


def policy_stats(policy: DiagonalGaussianPolicy, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log_std) with log_std clamped to [-20, 2]."""
    features = torso_forward(policy.torso, obs)
    mean = F.linear(features, policy.mean_head.weight, policy.mean_head.bias)
    log_std = F.linear(features, policy.log_std_head.weight, policy.log_std_head.bias)
    return mean, log_std.clamp(-20.0, 2.0)


def clip_to_bounds(actions: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(actions, torch.as_tensor(HIGH)), torch.as_tensor(LOW))


def softplus_dual(raw: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(raw)) + 1e-8


def clip_gradients(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale all gradients together so that their joint L2 norm is at most max_norm."""
    total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params if p.grad is not None))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)


def number(value: torch.Tensor) -> float:
    return float(value.detach())


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


# ---------------------------------------------------------------------- agent and batches


def make_agent(**overrides) -> MPOAgent:
    torch.manual_seed(0)
    options = dict(
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        action_low=LOW,
        action_high=HIGH,
        device="cpu",
        policy_layer_sizes=(16, 16),
        critic_layer_sizes=(16, 16),
        gamma=GAMMA,
        action_samples=5,
        target_networks_update_period=2,
        policy_lr=1e-2,  # four different rates: a group given the wrong one shows
        q_lr=2e-2,
        temperature_lr=3e-2,
        lambda_lr=5e-3,
        temperature_init=0.7,
        kl_epsilon=0.1,
        mstep_kl_epsilon=0.01,
        init_log_alpha_mean=0.5,
        init_log_alpha_stddev=2.0,
        epsilon_penalty=0.05,
        max_grad_norm=0.5,
        retrace_steps=3,
        retrace_mc_actions=3,
        retrace_lambda=0.8,
    )
    options.update(overrides)
    return MPOAgent(**options)


def make_batch(seed: int, batch: int = 6) -> dict[str, torch.Tensor]:
    """1-step transitions, terminated mixing 0 and 1, raw actions partly outside the bounds."""
    generator = torch.Generator().manual_seed(seed)
    actions_raw = 1.5 * torch.randn(batch, ACT_DIM, generator=generator)
    return {
        "obs": torch.randn(batch, OBS_DIM, generator=generator),
        "actions_exec": clip_to_bounds(actions_raw),
        "actions_raw": actions_raw,
        "rewards": torch.randn(batch, generator=generator),
        "next_obs": torch.randn(batch, OBS_DIM, generator=generator),
        "terminated": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])[:batch],
    }


# Window ends (B=4, L=3): none; truncation at t=0; termination at t=1; truncation at t=1 and a
# termination at the last step.
WINDOW_TERMINATED = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
WINDOW_DONES = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
# log pi_target - log mu per step: importance ratios on both sides of 1.
RATIO_LOG_OFFSETS = torch.tensor([[0.6, -0.7, 0.4], [-0.5, 0.8, -0.9], [0.3, -0.4, 0.7], [-0.6, 0.5, -0.3]])


def log_prob_under(policy: DiagonalGaussianPolicy, obs: torch.Tensor, actions_raw: torch.Tensor) -> torch.Tensor:
    mean, log_std = policy_stats(policy, obs)
    return Normal(mean, log_std.exp()).log_prob(actions_raw).sum(-1)


def make_sequence_batch(seed: int, behaviour_reference: DiagonalGaussianPolicy) -> dict[str, torch.Tensor]:
    """Retrace windows (4, 3, ...) whose behaviour log-probs sit RATIO_LOG_OFFSETS away from the
    log-probs under `behaviour_reference` (the policy that will be the target one)."""
    generator = torch.Generator().manual_seed(seed)
    batch, steps = WINDOW_DONES.shape
    obs = torch.randn(batch, steps, OBS_DIM, generator=generator)
    actions_raw = 1.5 * torch.randn(batch, steps, ACT_DIM, generator=generator)
    with torch.no_grad():
        log_pi = log_prob_under(behaviour_reference, obs, actions_raw)
    return {
        "obs": obs,
        "actions_exec": clip_to_bounds(actions_raw),
        "actions_raw": actions_raw,
        "rewards": torch.randn(batch, steps, generator=generator),
        "next_obs": torch.randn(batch, steps, OBS_DIM, generator=generator),
        "terminated": WINDOW_TERMINATED.clone(),
        "dones": WINDOW_DONES.clone(),
        "behaviour_log_probs": log_pi - RATIO_LOG_OFFSETS,
    }


# ---------------------------------------------------------------------- independent Retrace


def retrace_by_loops(
    q_taken: torch.Tensor,
    next_value: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    traces: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Backward recursion G_t = delta_t + gamma c_{t+1} (1 - done_t) G_{t+1}, G_L = 0, in float64
    Python arithmetic; the target is Q_0 + G_0 for each row."""
    batch, steps = q_taken.shape
    out = []
    for b in range(batch):
        following = 0.0
        for t in reversed(range(steps)):
            delta = float(rewards[b, t]) + gamma * (1.0 - float(terminated[b, t])) * float(next_value[b, t])
            delta -= float(q_taken[b, t])
            carry = 0.0
            if t + 1 < steps and float(dones[b, t]) == 0.0:
                carry = gamma * float(traces[b, t + 1]) * following
            following = delta + carry
        out.append(float(q_taken[b, 0]) + following)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_retrace_target_equals_a_backward_recursion(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(3)
    batch, steps = 6, 4
    q_taken = torch.randn(batch, steps, generator=generator, dtype=dtype)
    next_value = torch.randn(batch, steps, generator=generator, dtype=dtype)
    rewards = torch.randn(batch, steps, generator=generator, dtype=dtype)
    dones = torch.tensor(
        [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1], [1, 0, 1, 0]], dtype=dtype
    )
    terminated = dones * torch.tensor([[1, 1, 0, 1]] * batch, dtype=dtype)
    traces = torch.rand(batch, steps, generator=generator, dtype=dtype) * 0.9 + 0.05
    expected = retrace_by_loops(q_taken, next_value, rewards, terminated, dones, traces, 0.9)
    actual = retrace_target(q_taken, next_value, rewards, terminated, dones, traces, 0.9)
    assert actual.dtype == dtype
    # float64 inputs keep float64 precision throughout (the discounts too).
    tolerance = TOL if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(actual.double(), expected, **tolerance)
    # Without ends, with traces 1 and V(s'_t) = Q(s_{t+1}, a_{t+1}) it is the n-step return.
    ones, zeros = torch.ones(batch, steps, dtype=dtype), torch.zeros(batch, steps, dtype=dtype)
    consistent = torch.cat([q_taken[:, 1:], next_value[:, -1:]], dim=1)
    n_step = (0.9 ** torch.arange(steps, dtype=dtype) * rewards).sum(-1) + 0.9**steps * next_value[:, -1]
    actual = retrace_target(q_taken, consistent, rewards, zeros, zeros, ones, 0.9)
    torch.testing.assert_close(actual, n_step, **TOL)


def reference_retrace_q_target(
    policy_target: DiagonalGaussianPolicy,
    q_target: Critic,
    batch: dict[str, torch.Tensor],
    noise: torch.Tensor,
    retrace_lambda: float,
    gamma: float,
) -> torch.Tensor:
    """The Retrace target of the spec, from the target networks; noise (B, L, M, D)."""
    with torch.no_grad():
        obs, next_obs = batch["obs"], batch["next_obs"]
        q_taken = critic_value(q_target, obs, batch["actions_exec"])
        next_mean, next_log_std = policy_stats(policy_target, next_obs)
        next_actions = next_mean.unsqueeze(2) + next_log_std.exp().unsqueeze(2) * noise
        next_obs_rows = next_obs.unsqueeze(2).expand(-1, -1, noise.shape[2], -1)
        next_value = critic_value(q_target, next_obs_rows, next_actions).mean(-1)
        log_pi = log_prob_under(policy_target, obs, batch["actions_raw"])
        ratio = torch.exp(log_pi - batch["behaviour_log_probs"])
        traces = retrace_lambda * torch.minimum(torch.ones_like(ratio), ratio)
    return retrace_by_loops(
        q_taken, next_value, batch["rewards"], batch["terminated"], batch["dones"], traces, gamma
    ).float()


def test_retrace_q_target_uses_the_target_networks_and_truncated_ratios() -> None:
    agent = make_agent(use_retrace=True)
    perturb_(agent.policy_target, seed=1)
    perturb_(agent.q_target, seed=2)
    batch = make_sequence_batch(5, agent.policy_target)
    ratios = torch.exp(RATIO_LOG_OFFSETS)
    assert (ratios > 1).any() and (ratios < 1).any()
    torch.manual_seed(11)
    actual = agent._retrace_q_target(batch)
    torch.manual_seed(11)
    noise = torch.randn(4 * 3, 3, ACT_DIM).reshape(4, 3, 3, ACT_DIM)
    expected = reference_retrace_q_target(agent.policy_target, agent.q_target, batch, noise, 0.8, GAMMA)
    torch.testing.assert_close(actual, expected, **TOL)
    # The test has teeth: the online networks give a different target.
    online = reference_retrace_q_target(agent.policy, agent.q, batch, noise, 0.8, GAMMA)
    assert (online - expected).abs().max() > 1e-3


# ---------------------------------------------------------------------- E-step and M-step pieces


def test_e_step_weights_and_temperature_loss_by_explicit_sums() -> None:
    agent = make_agent()
    generator = torch.Generator().manual_seed(4)
    q_values = 3.0 * torch.randn(5, 7, generator=generator)
    eta, epsilon = 0.6, 0.2
    weights, loss = agent._compute_weights_and_temperature_loss(q_values, epsilon, torch.tensor(eta))
    expected_weights = torch.zeros(5, 7, dtype=torch.float64)
    log_sum_exps = []
    for i in range(5):
        exps = [math.exp(float(q_values[i, j]) / eta) for j in range(7)]
        for j in range(7):
            expected_weights[i, j] = exps[j] / sum(exps)
        log_sum_exps.append(math.log(sum(exps)))
    expected_loss = eta * (epsilon + sum(log_sum_exps) / 5 - math.log(7))
    torch.testing.assert_close(weights.double(), expected_weights, **TOL)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)


def test_nonparametric_kl_and_weight_entropy_metrics_by_explicit_sums() -> None:
    agent = make_agent()
    weights = torch.softmax(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)), dim=-1)
    kl = agent._compute_nonparametric_kl_from_weights(weights)
    for i in range(4):
        expected = sum(float(w) * math.log(6 * float(w)) for w in weights[i])
        assert float(kl[i]) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_decoupled_m_step_kls_and_weighted_log_likelihood() -> None:
    agent = make_agent()
    perturb_(agent.policy_target, seed=3, scale=0.3)
    generator = torch.Generator().manual_seed(6)
    states = torch.randn(5, OBS_DIM, generator=generator)
    with torch.no_grad():
        target_mean, target_log_std = policy_stats(agent.policy_target, states)
    noise = torch.randn(5, 4, ACT_DIM, generator=generator)
    sampled = target_mean.unsqueeze(1) + target_log_std.exp().unsqueeze(1) * noise
    weights = torch.softmax(torch.randn(5, 4, generator=generator), dim=-1)

    nll, kl_mean, kl_std, _, _ = agent._policy_losses(states, sampled, weights, target_mean, target_log_std)

    mean, log_std = policy_stats(agent.policy, states)
    target_std, std = target_log_std.exp(), log_std.exp()
    expected_kl_mean = kl_divergence(Normal(target_mean, target_std), Normal(mean, target_std)).mean(0)
    expected_kl_std = kl_divergence(Normal(target_mean, target_std), Normal(target_mean, std)).mean(0)
    lp_mean = Normal(mean.unsqueeze(1), target_std.unsqueeze(1)).log_prob(sampled).sum(-1)
    lp_std = Normal(target_mean.unsqueeze(1), std.unsqueeze(1)).log_prob(sampled).sum(-1)
    expected_nll = -(weights * (lp_mean + lp_std)).sum(-1).mean()
    assert kl_mean.shape == kl_std.shape == (ACT_DIM,)
    torch.testing.assert_close(kl_mean, expected_kl_mean, **TOL)
    torch.testing.assert_close(kl_std, expected_kl_std, **TOL)
    torch.testing.assert_close(nll, expected_nll, **TOL)
    # Direction matters: KL(online || target) differs for these statistics.
    reverse = kl_divergence(Normal(mean, target_std), Normal(target_mean, target_std)).mean(0)
    reverse_std = kl_divergence(Normal(target_mean, std), Normal(target_mean, target_std)).mean(0)
    assert (reverse_std - expected_kl_std).abs().max() > 1e-4
    assert torch.allclose(reverse, expected_kl_mean)  # equal stds: the mean KL is symmetric


# ---------------------------------------------------------------------- one whole update


class ReferenceMPO:
    """A plain re-implementation of one MPO update (spec section 2) on copies of an agent's state.

    Networks are copied as parameter holders only; every forward pass, density, KL, dual loss,
    gradient clip and optimiser step here is written independently of agents/mpo.py.
    """

    def __init__(self, agent: MPOAgent, optimizer: str, use_retrace: bool) -> None:
        self.policy = copy.deepcopy(agent.policy)
        self.policy_target = copy.deepcopy(agent.policy_target)
        self.q = copy.deepcopy(agent.q)
        self.q_target = copy.deepcopy(agent.q_target)
        self.raw = {name: p.detach().clone().requires_grad_(True) for name, p in agent.duals.items()}
        self.num_updates = agent.num_updates
        self.period = agent.target_networks_update_period
        self.num_samples = agent.action_samples
        self.m_steps = agent.m_steps
        self.max_grad_norm = agent.max_grad_norm
        self.kl_epsilon = agent.kl_epsilon
        self.mstep_kl_epsilon = agent.mstep_kl_epsilon
        self.epsilon_penalty = agent.epsilon_penalty
        self.use_retrace = use_retrace
        self.mc_actions = agent.retrace_mc_actions
        self.retrace_lambda = agent.retrace_lambda
        temperatures = [self.raw["temperature"]] + (
            [self.raw["penalty_temperature"]] if "penalty_temperature" in self.raw else []
        )
        dual_groups = [
            {"params": temperatures, "lr": agent.temperature_lr},
            {"params": [self.raw["alpha_mean"], self.raw["alpha_std"]], "lr": agent.lambda_lr},
        ]

        def build(params, lr: float) -> torch.optim.Optimizer:
            if optimizer == "adam":
                return torch.optim.Adam(params, lr=lr, eps=1e-5)
            return torch.optim.SGD(params, lr=lr, momentum=agent.sgd_momentum)

        self.q_optimizer = build(list(self.q.parameters()), agent.q_lr)
        self.policy_optimizer = build(list(self.policy.parameters()), agent.policy_lr / agent.m_steps)
        self.dual_optimizer = build(dual_groups, 1.0)

    def _step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        clip_gradients(params, self.max_grad_norm)
        optimizer.step()

    def _weights_and_dual_loss(self, values: torch.Tensor, epsilon: float, raw: torch.Tensor):
        eta = softplus_dual(raw)
        weights = torch.softmax(values / eta.detach(), dim=-1)
        loss = eta * (epsilon + torch.logsumexp(values / eta, dim=-1).mean() - math.log(values.shape[-1]))
        return weights, loss

    def _m_step(self, states, sampled_raw, weights, target_mean, target_std):
        mean, log_std = policy_stats(self.policy, states)
        std = log_std.exp()
        lp_mean = Normal(mean.unsqueeze(1), target_std.unsqueeze(1)).log_prob(sampled_raw).sum(-1)
        lp_std = Normal(target_mean.unsqueeze(1), std.unsqueeze(1)).log_prob(sampled_raw).sum(-1)
        nll = -(weights * (lp_mean + lp_std)).sum(-1).mean()
        kl_mean = kl_divergence(Normal(target_mean, target_std), Normal(mean, target_std)).mean(0)
        kl_std = kl_divergence(Normal(target_mean, target_std), Normal(target_mean, std)).mean(0)
        return nll, kl_mean, kl_std, mean, log_std

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.num_updates % self.period == 0:
            self.policy_target.load_state_dict(self.policy.state_dict())
            self.q_target.load_state_dict(self.q.state_dict())
        if self.use_retrace:
            states, q_obs, q_actions = batch["obs"][:, 0], batch["obs"][:, 0], batch["actions_exec"][:, 0]
        else:
            states, q_obs, q_actions = batch["next_obs"], batch["obs"], batch["actions_exec"]
        size = states.shape[0]
        with torch.no_grad():
            target_mean, target_log_std = policy_stats(self.policy_target, states)
            target_std = target_log_std.exp()
            noise = torch.randn(size, self.num_samples, ACT_DIM)
            sampled_raw = target_mean.unsqueeze(1) + target_std.unsqueeze(1) * noise
            sampled_exec = clip_to_bounds(sampled_raw)
            sampled_q = critic_value(self.q_target, states.unsqueeze(1).expand(-1, self.num_samples, -1), sampled_exec)
            if self.use_retrace:
                steps = batch["obs"].shape[1]
                retrace_noise = torch.randn(size * steps, self.mc_actions, ACT_DIM).reshape(size, steps, -1, ACT_DIM)
                y = reference_retrace_q_target(
                    self.policy_target, self.q_target, batch, retrace_noise, self.retrace_lambda, GAMMA
                )
            else:
                y = batch["rewards"] + GAMMA * (1.0 - batch["terminated"]) * sampled_q.mean(-1)

        q_pred = critic_value(self.q, q_obs, q_actions)
        q_loss = ((q_pred - y) ** 2).mean()

        weights, temperature_loss = self._weights_and_dual_loss(sampled_q, self.kl_epsilon, self.raw["temperature"])
        policy_weights, dual_loss = weights, temperature_loss
        metrics: dict[str, float] = {}
        if self.epsilon_penalty > 0:
            cost = -torch.sqrt(((sampled_raw - sampled_exec) ** 2).sum(-1))
            penalty_weights, penalty_loss = self._weights_and_dual_loss(
                cost, self.epsilon_penalty, self.raw["penalty_temperature"]
            )
            policy_weights = weights + penalty_weights
            dual_loss = dual_loss + penalty_loss
            metrics["loss/penalty_temperature"] = number(penalty_loss)

        nll, kl_mean, kl_std, mean, log_std = self._m_step(states, sampled_raw, policy_weights, target_mean, target_std)
        alpha_mean, alpha_std = softplus_dual(self.raw["alpha_mean"]), softplus_dual(self.raw["alpha_std"])
        alpha_loss = (alpha_mean * (self.mstep_kl_epsilon - kl_mean.detach())).sum()
        alpha_loss = alpha_loss + (alpha_std * (self.mstep_kl_epsilon - kl_std.detach())).sum()
        metrics.update(
            {
                "loss/q": number(q_loss),
                "loss/temperature": number(temperature_loss),
                "loss/dual": number(alpha_loss),
                "kl/nonparametric": number((weights * torch.log(self.num_samples * weights)).sum(-1).mean()),
                "kl/mean": number(kl_mean.mean()),
                "kl/std": number(kl_std.mean()),
                "q/mean": number(q_pred.mean()),
                "q/min": number(q_pred.min()),
                "q/max": number(q_pred.max()),
                "q/target_mean": number(y.mean()),
                "q/sampled_min": number(sampled_q.min()),
                "q/sampled_max": number(sampled_q.max()),
                "policy/std_mean": number(log_std.exp().mean()),
                "policy/entropy": number(Normal(mean, log_std.exp()).entropy().sum(-1).mean()),
                "weights/entropy": number(-(weights * torch.log(weights)).sum(-1).mean()),
                "loss/policy_nll": number(nll),
            }
        )
        policy_before = torch.cat([p.detach().reshape(-1) for p in self.policy.parameters()])

        self._step(self.q_optimizer, list(self.q.parameters()), q_loss)
        self._step(self.dual_optimizer, list(self.raw.values()), dual_loss + alpha_loss)
        with torch.no_grad():
            for raw in self.raw.values():
                raw.clamp_(min=-18.0)

        alpha_mean = softplus_dual(self.raw["alpha_mean"]).detach()
        alpha_std = softplus_dual(self.raw["alpha_std"]).detach()
        for step in range(self.m_steps):
            nll, kl_mean, kl_std, _, _ = self._m_step(states, sampled_raw, policy_weights, target_mean, target_std)
            policy_loss = nll + (alpha_mean * kl_mean).sum() + (alpha_std * kl_std).sum()
            if step == 0:
                metrics["loss/policy"] = number(policy_loss)
            self._step(self.policy_optimizer, list(self.policy.parameters()), policy_loss)

        self.num_updates += 1
        policy_after = torch.cat([p.detach().reshape(-1) for p in self.policy.parameters()])
        metrics["policy/param_delta"] = number(torch.linalg.vector_norm(policy_after - policy_before))
        metrics["dual/temperature"] = number(softplus_dual(self.raw["temperature"]))
        metrics["dual/alpha_mean"] = number(alpha_mean.mean())
        metrics["dual/alpha_std"] = number(alpha_std.mean())
        if self.epsilon_penalty > 0:
            metrics["dual/penalty_temperature"] = number(softplus_dual(self.raw["penalty_temperature"]))
        return metrics


def assert_agent_matches_reference(agent: MPOAgent, reference: ReferenceMPO) -> None:
    pairs = [
        ("q", agent.q, reference.q),
        ("policy", agent.policy, reference.policy),
        ("q_target", agent.q_target, reference.q_target),
        ("policy_target", agent.policy_target, reference.policy_target),
    ]
    for label, actual, expected in pairs:
        for (name, a), b in zip(actual.named_parameters(), expected.parameters(), strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), **TOL, msg=lambda m, n=f"{label}.{name}": f"{n}: {m}")
    for name, raw in reference.raw.items():
        torch.testing.assert_close(agent.duals[name].detach(), raw.detach(), **TOL, msg=lambda m, n=name: f"{n}: {m}")
    assert agent.num_updates == reference.num_updates


UPDATE_CASES = [
    # (use_retrace, m_steps, optimizer, epsilon_penalty, first counter): the first counter 0 syncs
    # on the first of the two updates (period 2), 1 on the second; before a non-syncing update the
    # target networks are out of sync with the online ones.
    pytest.param(False, 1, "adam", 0.05, 0, id="1step-m1-adam-sync-first"),
    pytest.param(False, 2, "adam", 0.05, 1, id="1step-m2-adam-sync-second"),
    pytest.param(False, 2, "sgd", 0.0, 0, id="1step-m2-sgd-nopenalty-sync-first"),
    pytest.param(False, 1, "sgd", 0.05, 1, id="1step-m1-sgd-sync-second"),
    pytest.param(True, 1, "adam", 0.05, 1, id="retrace-m1-adam-sync-second"),
    pytest.param(True, 2, "adam", 0.0, 0, id="retrace-m2-adam-nopenalty-sync-first"),
    pytest.param(True, 1, "sgd", 0.05, 0, id="retrace-m1-sgd-sync-first"),
    pytest.param(True, 2, "sgd", 0.05, 1, id="retrace-m2-sgd-sync-second"),
]


@pytest.mark.parametrize(("use_retrace", "m_steps", "optimizer", "epsilon_penalty", "first_counter"), UPDATE_CASES)
def test_two_updates_match_an_independent_implementation(
    use_retrace: bool, m_steps: int, optimizer: str, epsilon_penalty: float, first_counter: int
) -> None:
    overrides = dict(
        use_retrace=use_retrace, m_steps=m_steps, optimizer_type=optimizer, epsilon_penalty=epsilon_penalty
    )
    if optimizer == "sgd":
        overrides.update(policy_lr=0.05, q_lr=0.1, temperature_lr=0.2, lambda_lr=0.02)
    agent = make_agent(**overrides)
    agent.num_updates = first_counter
    perturb_(agent.policy_target, seed=1)
    perturb_(agent.q_target, seed=2)
    reference = ReferenceMPO(agent, optimizer, use_retrace)
    for update in range(2):
        syncs = agent.num_updates % agent.target_networks_update_period == 0
        if use_retrace:
            batch = make_sequence_batch(20 + update, agent.policy if syncs else agent.policy_target)
        else:
            batch = make_batch(20 + update)
        torch.manual_seed(100 + update)
        metrics = agent.update(batch)
        torch.manual_seed(100 + update)
        expected_metrics = reference.update(batch)
        assert metrics is not None
        assert_agent_matches_reference(agent, reference)
        for name, value in expected_metrics.items():
            assert metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


# ---------------------------------------------------------------------- behaviour of a policy step


class SlopeCritic(Critic):
    """A target critic with Q(s, a) = slope * a_0: one side of action dimension 0 is clearly better."""

    def __init__(self, slope: float) -> None:
        super().__init__(OBS_DIM, ACT_DIM, (4,), LOW, HIGH)
        self.slope = slope

    def forward_sampled(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.slope * actions[..., 0]


@pytest.mark.parametrize("slope", [4.0, -4.0])
def test_policy_steps_move_the_mean_towards_high_q_actions(slope: float) -> None:
    agent = make_agent(
        action_samples=32,
        target_networks_update_period=10_000,
        m_steps=5,
        policy_lr=5e-3,
        init_log_alpha_mean=-5.0,
        init_log_alpha_stddev=-5.0,
        temperature_init=0.5,
        epsilon_penalty=0.0,
    )
    agent.num_updates = 1  # no sync: the target critic below stays
    agent.q_target = SlopeCritic(slope)
    batch = make_batch(3)
    with torch.no_grad():
        before, _ = policy_stats(agent.policy, batch["next_obs"])
    assert agent.update(batch) is not None
    with torch.no_grad():
        after, _ = policy_stats(agent.policy, batch["next_obs"])
    moved = (after - before)[:, 0] * math.copysign(1.0, slope)
    assert (moved > 0.03).all(), moved


def test_penalty_is_neutral_when_every_sample_is_inside_the_bounds() -> None:
    agent = make_agent(epsilon_penalty=0.05, temperature_init=0.3)
    agent.num_updates = 1  # no sync: the target policy below samples inside the bounds
    with torch.no_grad():
        agent.policy_target.log_std_head.bias.fill_(-12.0)
        agent.policy_target.log_std_head.weight.zero_()
        agent.policy_target.mean_head.weight.zero_()
        agent.policy_target.mean_head.bias.fill_(0.1)
    metrics = agent.update(make_batch(4))
    # Cost 0 everywhere: logsumexp_j(0) - log N = 0, so the loss is eta_p * eps_p exactly.
    assert metrics["loss/penalty_temperature"] == pytest.approx(0.3 * 0.05, rel=1e-5)


def test_penalty_loss_and_weights_with_samples_beyond_the_bounds() -> None:
    agent = make_agent(epsilon_penalty=0.05, temperature_init=0.3, action_samples=3)
    reference = ReferenceMPO(agent, "adam", use_retrace=False)
    agent.num_updates = reference.num_updates = 1
    with torch.no_grad():  # the same target policy for both, mean at the upper bound
        for policy in (agent.policy_target, reference.policy_target):
            policy.mean_head.weight.zero_()
            policy.mean_head.bias.copy_(torch.as_tensor(HIGH))
    batch = make_batch(5)
    torch.manual_seed(8)
    metrics = agent.update(batch)
    torch.manual_seed(8)
    expected = reference.update(batch)
    assert metrics["loss/penalty_temperature"] == pytest.approx(expected["loss/penalty_temperature"], rel=1e-5)
    # Costs <= 0 and not all equal: the loss is clearly below its flat-cost value eta_p * eps_p.
    assert expected["loss/penalty_temperature"] < 0.3 * 0.05 - 1e-2
    assert_agent_matches_reference(agent, reference)
