"""Pins the VALUES agents/trpo.py computes against an independent computation written here.

The policy is re-evaluated functionally in float64 from a flat parameter vector; the surrogate
exp(log pi_theta - log pi_old) * A and the KL come from torch.distributions; the Fisher matrix is
the dense Hessian of the mean KL(old || theta), the natural-gradient step a torch.linalg.solve;
the line search, GAE and the value regression are re-done with plain loops and a plain
torch.optim.Adam. None of the agent's own maths helpers builds an expected value.

The value-regression test reproduces the agent's minibatch shuffles by reseeding torch's global
generator: it pins the convention torch.rand((value_epochs, T)).argsort(dim=1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from agents.trpo import TRPOAgent, ValueNetwork, compute_gae

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 2, 2


def make_agent(layers: tuple[int, ...] = (4,), **kwargs) -> TRPOAgent:
    torch.manual_seed(0)
    return TRPOAgent(
        OBS_DIM,
        ACT_DIM,
        -np.ones(ACT_DIM, np.float32),
        np.ones(ACT_DIM, np.float32),
        torch.device("cpu"),
        policy_layer_sizes=layers,
        critic_layer_sizes=layers,
        **kwargs,
    )


# ----------------------------------------------------------------------------- independent policy maths


class FunctionalPolicy:
    """The agent's policy as a float64 function of a flat parameter vector, in parameters() order:
    tanh layers, a linear mean head and a state-independent log-std clamped to [-20, 2]."""

    def __init__(self, agent: TRPOAgent) -> None:
        self.named_shapes = [(name, p.shape) for name, p in agent.policy.named_parameters()]
        self.theta = torch.cat([p.detach().double().reshape(-1) for p in agent.policy.parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes = [math.prod(shape) for _, shape in self.named_shapes]
        pieces = torch.split(theta, sizes)
        return {name: piece.view(shape) for (name, shape), piece in zip(self.named_shapes, pieces, strict=True)}

    def stats(self, theta: torch.Tensor, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.unflatten(theta)
        h = obs.double()
        layer = 0
        while f"torso.{layer}.weight" in params:
            h = torch.tanh(F.linear(h, params[f"torso.{layer}.weight"], params[f"torso.{layer}.bias"]))
            layer += 2  # Linear, Tanh, Linear, Tanh, ...
        mean = F.linear(h, params["mean_head.weight"], params["mean_head.bias"])
        log_std = params["log_std"].clamp(-20.0, 2.0).expand_as(mean)
        return mean, log_std

    def distribution(self, theta: torch.Tensor, obs: torch.Tensor) -> Normal:
        mean, log_std = self.stats(theta, obs)
        return Normal(mean, log_std.exp())


class Problem:
    """Surrogate and mean KL(old || theta) of one batch, with the advantages the agent will use."""

    def __init__(self, agent: TRPOAgent, batch: dict[str, torch.Tensor]) -> None:
        self.policy = FunctionalPolicy(agent)
        self.theta_old = self.policy.theta
        self.obs = batch["obs"].double()
        self.actions = batch["actions"].double()
        self.old_log_probs = batch["log_probs"].double().reshape(-1)
        advantages = batch["advantages"].double()
        if agent.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)
        self.advantages = advantages
        with torch.no_grad():
            self.old = self.policy.distribution(self.theta_old, self.obs)

    def surrogate(self, theta: torch.Tensor) -> torch.Tensor:
        log_probs = self.policy.distribution(theta, self.obs).log_prob(self.actions).sum(-1)
        return (torch.exp(log_probs - self.old_log_probs) * self.advantages).mean()

    def mean_kl(self, theta: torch.Tensor) -> torch.Tensor:
        return kl_divergence(self.old, self.policy.distribution(theta, self.obs)).sum(-1).mean()

    def fisher(self, damping: float) -> torch.Tensor:
        hessian = torch.autograd.functional.hessian(self.mean_kl, self.theta_old)
        return hessian + damping * torch.eye(self.theta_old.numel(), dtype=torch.float64)

    def gradient(self) -> torch.Tensor:
        return torch.autograd.functional.jacobian(self.surrogate, self.theta_old)

    def full_step(self, damping: float, target_kl: float) -> torch.Tensor:
        """sqrt(2 target_kl / s^T F s) s with s = F^-1 g from a dense solve."""
        fisher = self.fisher(damping)
        direction = torch.linalg.solve(fisher, self.gradient())
        return torch.sqrt(2.0 * target_kl / (direction @ fisher @ direction)) * direction

    def line_search(self, full_step: torch.Tensor, coeff: float, iters: int, target_kl: float):
        """(fraction, candidate log) of the first candidate that improves and keeps the mean KL within
        target_kl; fraction 0.0 when none does. The log has (fraction, improvement, kl) per try."""
        before = float(self.surrogate(self.theta_old))
        log = []
        for k in range(iters):
            fraction = coeff**k
            candidate = self.theta_old + fraction * full_step
            improvement = float(self.surrogate(candidate)) - before
            kl = float(self.mean_kl(candidate))
            log.append((fraction, improvement, kl))
            if improvement > 0 and kl <= target_kl:
                return fraction, log
        return 0.0, log


def agent_theta(agent: TRPOAgent) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in agent.policy.parameters()])


def make_batch(agent: TRPOAgent, seed: int, samples: int = 64, advantage: str = "linear") -> dict[str, torch.Tensor]:
    """Actions sampled from the agent; advantages a function of the action (and some noise)."""
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(samples, OBS_DIM, generator=generator)
    torch.manual_seed(seed)
    actions, log_probs, _ = agent.act(obs)
    if advantage == "linear":
        advantages = actions[:, 0] - 0.5 * actions[:, 1]
    else:  # a peak at a_0 = 1: too long a step along a_0 overshoots it
        advantages = -((actions[:, 0] - 1.0) ** 2)
    advantages = advantages + 0.1 * torch.randn(samples, generator=generator)
    return {
        "obs": obs,
        "actions": actions,
        "log_probs": log_probs,
        "returns": torch.randn(samples, generator=generator),
        "advantages": advantages,
    }


def assert_close_vectors(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """||actual - expected|| <= rel * ||expected||."""
    error = float((actual - expected).norm())
    assert error <= rel * float(expected.norm()), (error, float(expected.norm()))


def assert_policy_metrics(metrics: dict[str, float], problem: Problem, theta_new: torch.Tensor, frac: float) -> None:
    """Every policy/* metric against the independent computation at the accepted parameters."""
    step = theta_new - problem.theta_old
    before = float(problem.surrogate(problem.theta_old))
    after = float(problem.surrogate(theta_new))
    with torch.no_grad():
        entropy = problem.policy.distribution(theta_new, problem.obs[:1]).entropy().sum()
    approx = dict(rel=1e-4, abs=1e-6)
    assert metrics["policy/surrogate_before"] == pytest.approx(before, **approx)
    assert metrics["policy/surrogate_after"] == pytest.approx(after, **approx)
    assert metrics["policy/improvement"] == pytest.approx(after - before, rel=1e-3, abs=1e-6)
    assert metrics["policy/kl"] == pytest.approx(float(problem.mean_kl(theta_new)), rel=1e-3, abs=1e-7)
    assert metrics["policy/entropy"] == pytest.approx(float(entropy), **approx)
    assert metrics["policy/step_norm"] == pytest.approx(float(step.norm()), rel=1e-4, abs=1e-7)
    expected_improvement = float(problem.gradient() @ step)
    assert metrics["policy/expected_improvement"] == pytest.approx(expected_improvement, rel=2e-3, abs=1e-7)
    assert metrics["policy/line_search_frac"] == frac
    assert metrics["policy/line_search_accepted"] == (1.0 if frac > 0 else 0.0)


# ----------------------------------------------------------------------------- the natural-gradient step


@pytest.mark.parametrize(
    ("damping", "normalize", "seed"),
    [(1e-3, True, 1), (1e-3, True, 9), (1e-3, False, 5), (0.1, True, 1), (0.1, False, 0)],
)
def test_full_step_is_the_damped_natural_gradient_of_a_dense_solve(damping: float, normalize: bool, seed: int) -> None:
    target_kl = 1e-3
    agent = make_agent(target_kl=target_kl, cg_iters=100, cg_damping=damping, normalize_advantages=normalize)
    batch = make_batch(agent, seed)
    problem = Problem(agent, batch)
    full_step = problem.full_step(damping, target_kl)
    frac, log = problem.line_search(full_step, agent.backtrack_coeff, agent.backtrack_iters, target_kl)
    assert frac == 1.0 and log[0][2] < 0.99 * target_kl  # premise: the full step is accepted, clearly

    metrics = agent.update(batch)

    theta_new = agent_theta(agent)
    step = theta_new - problem.theta_old
    assert_close_vectors(step, full_step, rel=2e-3)
    # The step fills the trust region of the quadratic model: 1/2 s^T (H + damping I) s = target_kl.
    fisher = problem.fisher(damping)
    assert float(0.5 * step @ fisher @ step) == pytest.approx(target_kl, rel=2e-3)
    # For a step this small the true KL is close to the model's (less the damping's share).
    kl = float(problem.mean_kl(theta_new))
    assert 0.85 * target_kl < kl <= target_kl
    assert_policy_metrics(metrics, problem, theta_new, frac)


def test_step_moves_the_mean_towards_positive_advantage_actions() -> None:
    agent = make_agent(target_kl=0.01, cg_iters=50)
    batch = make_batch(agent, seed=4, samples=256)  # advantage a_0 - 0.5 a_1
    problem = Problem(agent, batch)
    with torch.no_grad():
        mean_before = problem.policy.stats(problem.theta_old, problem.obs)[0]
    metrics = agent.update(batch)
    theta_new = agent_theta(agent)
    with torch.no_grad():
        mean_after = problem.policy.stats(theta_new, problem.obs)[0]
    shift = (mean_after - mean_before).mean(0)
    assert shift[0] > 0.02 and shift[1] < -0.01, shift
    # The improvement, measured with torch.distributions, is real and is the one reported.
    improvement = float(problem.surrogate(theta_new) - problem.surrogate(problem.theta_old))
    assert improvement > 0.01
    assert metrics["policy/improvement"] == pytest.approx(improvement, rel=1e-3)


# ----------------------------------------------------------------------------- the line search


LINE_SEARCH_CASES = [
    # (target_kl, seed): what the independent line search finds for it.
    pytest.param(0.5, 3, 1.0, id="full-step-accepted-though-half-would-do"),
    pytest.param(0.5, 0, 0.5, id="full-step-breaks-the-kl-bound"),
    pytest.param(0.5, 1, 0.5, id="full-step-does-not-improve"),
    pytest.param(2.0, 1, 0.25, id="two-steps-do-not-improve"),
]


@pytest.mark.parametrize(("target_kl", "seed", "expected_frac"), LINE_SEARCH_CASES)
def test_line_search_accepts_the_first_candidate_that_improves_within_the_bound(
    target_kl: float, seed: int, expected_frac: float
) -> None:
    agent = make_agent(target_kl=target_kl, cg_iters=100, cg_damping=1e-3, backtrack_coeff=0.5, backtrack_iters=5)
    batch = make_batch(agent, seed, samples=128)
    problem = Problem(agent, batch)
    full_step = problem.full_step(1e-3, target_kl)
    frac, log = problem.line_search(full_step, 0.5, 5, target_kl)
    assert frac == expected_frac
    for _, improvement, kl in log:  # premise: no decision is a near tie
        assert abs(improvement) > 5e-3 and abs(kl - target_kl) > 0.02 * target_kl
    if expected_frac == 1.0:  # the half step would be accepted too: the first one wins
        half = problem.theta_old + 0.5 * full_step
        assert problem.surrogate(half) > problem.surrogate(problem.theta_old) and problem.mean_kl(half) <= target_kl

    metrics = agent.update(batch)

    theta_new = agent_theta(agent)
    assert_close_vectors(theta_new - problem.theta_old, frac * full_step, rel=2e-3)
    assert_policy_metrics(metrics, problem, theta_new, frac)


@pytest.mark.parametrize(("target_kl", "seed"), [(0.5, 0), (0.5, 1)], ids=["kl-too-large", "no-improvement"])
def test_rejected_line_search_restores_the_parameters_exactly(target_kl: float, seed: int) -> None:
    # One candidate only: the full step, which the cases above show is rejected.
    agent = make_agent(target_kl=target_kl, cg_iters=100, cg_damping=1e-3, backtrack_coeff=0.5, backtrack_iters=1)
    batch = make_batch(agent, seed, samples=128)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    problem = Problem(agent, batch)
    metrics = agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))
    for name in ("kl", "step_norm", "expected_improvement", "line_search_frac", "line_search_accepted", "improvement"):
        assert metrics[f"policy/{name}"] == 0.0, name
    assert metrics["policy/surrogate_after"] == metrics["policy/surrogate_before"]
    assert metrics["policy/surrogate_before"] == pytest.approx(float(problem.surrogate(problem.theta_old)), abs=1e-6)


# ----------------------------------------------------------------------------- advantages


def test_normalize_advantages_on_and_off_in_the_surrogate() -> None:
    for normalize in (True, False):
        agent = make_agent(normalize_advantages=normalize)
        batch = make_batch(agent, seed=2)
        batch["advantages"] = 3.0 * batch["advantages"] + 2.0
        advantages = batch["advantages"].double()
        expected = advantages.mean()  # ratio 1 at theta_old: the surrogate is the mean advantage
        if normalize:
            expected = ((advantages - advantages.mean()) / (advantages.std(unbiased=False) + 1e-8)).mean()
        metrics = agent.update(batch)
        assert metrics["policy/surrogate_before"] == pytest.approx(float(expected), abs=1e-6)


def gae_by_forward_sums(rewards, values, next_values, terminated, dones, gamma, lam) -> np.ndarray:
    """A_t = sum_k (gamma lam)^k delta_{t+k}, the sum stopping after the first step that ends an
    episode; one environment column at a time, in float64."""
    steps, envs = rewards.shape
    advantages = np.zeros((steps, envs))
    for env in range(envs):
        for t in range(steps):
            total, weight = 0.0, 1.0
            for k in range(t, steps):
                delta = rewards[k, env] + gamma * (1 - terminated[k, env]) * next_values[k, env] - values[k, env]
                total += weight * delta
                if dones[k, env]:
                    break
                weight *= gamma * lam
            advantages[t, env] = total
    return advantages


def test_compute_gae_by_hand_with_termination_truncation_and_two_envs() -> None:
    # env 0: truncated at t=1 (bootstrap from V(final obs) = 4), then unfinished (bootstrap 2 at t=2).
    # env 1: terminated at t=0 (no bootstrap), then terminated again at t=2.
    rewards = np.array([[1.0, 2.0], [0.0, 1.0], [1.0, 3.0]], np.float32)
    values = np.array([[1.0, 1.0], [2.0, 0.5], [1.0, 2.0]], np.float32)
    next_values = np.array([[2.0, 9.0], [4.0, 1.0], [2.0, 9.0]], np.float32)
    terminated = np.array([[0, 1], [0, 0], [0, 1]], np.float32)
    dones = np.array([[0, 1], [1, 0], [0, 1]], np.float32)
    advantages, returns = compute_gae(rewards, values, next_values, terminated, dones, gamma=0.5, gae_lambda=0.5)
    # env 0: delta = [1 + 1 - 1, 0 + 2 - 2, 1 + 1 - 1] = [1, 0, 1]; A2 = 1, A1 = 0 (trace cut), A0 = 1
    # env 1: delta = [2 - 1, 1 + .5 - .5, 3 - 2] = [1, 1, 1]; A2 = 1, A1 = 1 + .25 = 1.25, A0 = 1
    np.testing.assert_allclose(advantages, [[1.0, 1.0], [0.0, 1.25], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(returns, advantages + values, rtol=1e-6)
    assert advantages.shape == returns.shape == (3, 2)


def test_compute_gae_of_one_step_from_plain_lists_is_float32() -> None:
    # Python floats are float64: every input must be converted, or the outputs come back float64.
    advantages, returns = compute_gae([[1.0, 2.0]], [[0.5, 1.0]], [[2.0, 3.0]], [[0.0, 1.0]], [[0.0, 1.0]], 0.5, 0.9)
    np.testing.assert_allclose(advantages, [[1.5, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(returns, [[2.0, 2.0]], rtol=1e-6)
    assert advantages.dtype == returns.dtype == np.float32


def test_compute_gae_equals_forward_sums_on_random_rollouts() -> None:
    rng = np.random.default_rng(0)
    steps, envs = 12, 3
    rewards, values, next_values = (rng.normal(size=(steps, envs)).astype(np.float32) for _ in range(3))
    dones = (rng.uniform(size=(steps, envs)) < 0.25).astype(np.float32)
    terminated = dones * (rng.uniform(size=(steps, envs)) < 0.5)
    assert terminated.sum() > 0 and (dones - terminated).sum() > 0
    advantages, returns = compute_gae(rewards, values, next_values, terminated, dones, 0.93, 0.7)
    expected = gae_by_forward_sums(rewards, values, next_values, terminated, dones, 0.93, 0.7)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- value regression


def value_forward(params: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
    """tanh layers and a linear head from the value network's parameters, (T, O) -> (T,)."""
    h = obs
    for index in range(0, len(params) - 2, 2):
        h = torch.tanh(F.linear(h, params[index], params[index + 1]))
    return F.linear(h, params[-2], params[-1]).squeeze(-1)


@pytest.mark.parametrize(
    ("optimizer", "epochs", "samples", "scale"),
    [
        ("adam", 3, 50, 1.0),  # 50 = 3 minibatches of 16 and one of 2, per epoch
        ("sgd", 3, 50, 1.0),
        ("adam", 1, 12, 0.1),  # a single step; returns with a variance below 1
    ],
)
def test_value_regression_matches_plain_minibatch_descent(
    optimizer: str, epochs: int, samples: int, scale: float
) -> None:
    agent = make_agent(
        layers=(6,), value_epochs=epochs, value_minibatch_size=16, value_lr=0.01, max_grad_norm=0.3,
        optimizer_type=optimizer,
    )
    batch = make_batch(agent, seed=5, samples=samples)
    obs, returns = batch["obs"], scale * (3.0 * batch["obs"][:, 0] + batch["returns"])
    batch["returns"] = returns
    params = [p.detach().clone().requires_grad_(True) for p in agent.value.parameters()]
    if optimizer == "adam":
        reference_optimizer = torch.optim.Adam(params, lr=0.01, eps=1e-5)
    else:
        reference_optimizer = torch.optim.SGD(params, lr=0.01, momentum=agent.sgd_momentum)
    with torch.no_grad():
        predictions = value_forward(params, obs).double().numpy()
    target = returns.double().numpy()
    explained_variance = 1.0 - np.var(target - predictions) / np.var(target)

    torch.manual_seed(9)
    metrics = agent.update(batch)
    torch.manual_seed(9)
    permutations = torch.rand(epochs, samples).argsort(dim=1)  # the agent's shuffles
    losses = []
    for permutation in permutations:
        for start in range(0, samples, 16):
            index = permutation[start : start + 16]
            loss = ((value_forward(params, obs[index]) - returns[index]) ** 2).mean()
            reference_optimizer.zero_grad()
            loss.backward()
            norm = torch.sqrt(sum((p.grad**2).sum() for p in params))
            if norm > 0.3:
                for p in params:
                    p.grad.mul_(0.3 / (norm + 1e-6))
            reference_optimizer.step()
            losses.append(float(loss.detach()))

    assert len(losses) == epochs * math.ceil(samples / 16)
    assert metrics["loss/value"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert metrics["value/explained_variance"] == pytest.approx(explained_variance, rel=1e-5, abs=1e-6)
    for actual, expected in zip(agent.value.parameters(), params, strict=True):
        torch.testing.assert_close(actual.detach(), expected.detach(), rtol=1e-5, atol=1e-6)


def test_vanishing_gradient_takes_no_step() -> None:
    """s^T F s below its floor: the step is not usable, however far the scaling would stretch it."""
    agent = make_agent(normalize_advantages=False, cg_iters=50)
    with torch.no_grad():  # std e^-5: a Fisher of ~e^10 along the mean makes s^T F s tiny
        agent.policy.log_std.fill_(-5.0)
    batch = make_batch(agent, seed=3)
    problem = Problem(agent, batch)
    mean, std = problem.old.mean, problem.old.stddev
    # advantages 1e-6 z_0: g.g ~ 2e-8, well above CG's residual floor, but s^T F s ~ 9e-13 < 1e-12
    batch["advantages"] = (1e-6 * (problem.actions[:, 0] - mean[:, 0]) / std[:, 0]).float()
    gradient = Problem(agent, batch).gradient()
    assert float(gradient @ gradient) > 1e-9
    before = [p.detach().clone() for p in agent.policy.parameters()]
    metrics = agent.update(batch)
    assert metrics["policy/line_search_accepted"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))


def test_non_finite_advantages_take_no_step_and_report_a_zero_step() -> None:
    agent = make_agent(normalize_advantages=False)
    batch = make_batch(agent, seed=3)
    batch["advantages"][5] = float("nan")
    before = [p.detach().clone() for p in agent.policy.parameters()]
    metrics = agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))
    assert metrics["policy/step_norm"] == 0.0 and metrics["policy/line_search_accepted"] == 0.0


def test_explained_variance_is_zero_for_constant_returns() -> None:
    agent = make_agent()
    batch = make_batch(agent, seed=1)
    batch["returns"] = torch.full_like(batch["returns"], 2.5)
    assert agent.update(batch)["value/explained_variance"] == 0.0


@pytest.mark.parametrize("layers", [(), (6,), (5, 7), (4, 4, 3)])
def test_value_mse_backward_gives_autograd_loss_and_gradients(layers: tuple[int, ...]) -> None:
    """The hand-written backward pass of the value regression, against autograd on the same network."""
    torch.manual_seed(3)
    network = ValueNetwork(4, layers)
    with torch.no_grad():
        for p in network.parameters():  # non-zero biases, so their gradients are tested too
            p.add_(0.3 * torch.randn_like(p))
    obs, returns = torch.randn(11, 4), 5.0 * torch.randn(11)
    for p in network.parameters():
        p.grad = torch.full_like(p, 7.0)  # stale gradients are replaced, not added to
    loss = network.mse_backward(obs, returns)
    manual = [p.grad.clone() for p in network.parameters()]

    expected_loss = ((network(obs).squeeze(-1) - returns) ** 2).mean()
    expected = torch.autograd.grad(expected_loss, list(network.parameters()))
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    assert len(manual) == len(expected) == 2 * (len(layers) + 1)
    for actual, reference in zip(manual, expected, strict=True):
        torch.testing.assert_close(actual, reference, rtol=1e-5, atol=1e-6)
