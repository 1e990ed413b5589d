"""Trust Region Policy Optimisation (Schulman et al. 2015) for continuous actions.

Notation: T samples in a batch (time steps of one or more environments, flattened), O observation
dims, D action dims, P policy parameters.

Batch for `TRPOAgent.update` (numpy arrays or tensors, float32; moved to the agent's device):
    obs         (T, O)           observations s_t
    actions     (T, D)           RAW policy samples a_t, as returned by `act` (not the clipped copy
                                 that was sent to the environment)
    log_probs   (T,) or (T, 1)   log pi_old(a_t | s_t), as returned by `act`
    returns     (T,)             value targets, advantages + V(s_t) (see `compute_gae`)
    advantages  (T,)             GAE advantages (see `compute_gae`)

Rollout side: `compute_gae` turns per-step rewards and values into the last two keys. It
bootstraps through time-limit truncation from V(final observation); only true termination
stops the bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Tuple

import numpy as np
import torch
from torch import nn

from agents.common import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    as_float_tensor,
    build_optimizer,
    diag_gaussian_entropy,
    diag_gaussian_log_prob,
    kl_diag_gaussian_per_dim,
)

_ADV_EPS = 1e-8
_SHS_EPS = 1e-12


# ----------------------------------------------------------------------------- flat helpers


def _flat_params(module: nn.Module) -> torch.Tensor:
    """All parameters of `module` as one detached vector (P,), in `parameters()` order."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _set_flat_params(module: nn.Module, flat_params: torch.Tensor) -> None:
    """Copy a (P,) vector into the parameters of `module`, in `parameters()` order."""
    params = list(module.parameters())
    sizes = [p.numel() for p in params]
    if flat_params.numel() != sum(sizes):
        raise ValueError(f"flat_params has {flat_params.numel()} values, the module has {sum(sizes)} parameters")
    with torch.no_grad():
        for p, piece in zip(params, torch.split(flat_params, sizes), strict=True):
            p.copy_(piece.view_as(p))


def _flat_grads(grads: tuple[torch.Tensor | None, ...], params: tuple[nn.Parameter, ...]) -> torch.Tensor:
    """Gradients as one vector (P,); a None gradient (unused parameter) counts as zeros."""
    return torch.cat(
        [torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


# ----------------------------------------------------------------------------- maths


def _conjugate_gradient(Avp, b: torch.Tensor, nsteps: int, residual_tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve A x = b for symmetric positive-definite A, given only v -> A v.

    b (P,) -> x (P,). Stops after `nsteps` iterations or once the squared residual is below
    `residual_tol`. The stopping test runs on the device (no host sync): once converged, the
    remaining iterations leave x unchanged.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = r.dot(r)
    for _ in range(nsteps):
        active = r_dot_r >= residual_tol
        Ap = Avp(p)
        p_dot_Ap = p.dot(Ap)
        alpha = torch.where(active & (p_dot_Ap != 0), r_dot_r / p_dot_Ap, torch.zeros_like(r_dot_r))
        x = x + alpha * p
        r = r - alpha * Ap
        new_r_dot_r = r.dot(r)
        beta = torch.where(active & (r_dot_r != 0), new_r_dot_r / r_dot_r, torch.zeros_like(r_dot_r))
        p = torch.where(active, r + beta * p, p)
        r_dot_r = torch.where(active, new_r_dot_r, r_dot_r)
    return x


def _kl_old_to_new(
    old_mean: torch.Tensor, old_log_std: torch.Tensor, new_mean: torch.Tensor, new_log_std: torch.Tensor
) -> torch.Tensor:
    """KL(old || new) of diagonal Gaussians summed over D. Shapes (..., D) -> (...)."""
    return kl_diag_gaussian_per_dim(old_mean, old_log_std, new_mean, new_log_std).sum(dim=-1)


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over a rollout in time order.

    All inputs (T,) or (T, N) for N parallel environments:
        rewards[t]      r_t
        values[t]       V(s_t)
        next_values[t]  V(s_{t+1}); for a step that ended by truncation, V(final observation)
        terminated[t]   1.0 if s_{t+1} is terminal (no bootstrap), else 0.0
        dones[t]        1.0 if the episode ended at t (terminated OR truncated): the trace stops
    delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t
    A_t = delta_t + gamma lambda (1 - dones_t) A_{t+1}, with A_T = 0 (next_values[T-1] is the
    bootstrap of the unfinished last step). Returns (advantages, returns = advantages + values),
    float32 with the input's shape.
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    next_values = np.asarray(next_values, dtype=np.float32)
    not_terminal = 1.0 - np.asarray(terminated, dtype=np.float32)
    not_done = 1.0 - np.asarray(dones, dtype=np.float32)
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = np.zeros_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, (advantages + values).astype(np.float32)


def _explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - Var(targets - predictions) / Var(targets); 0-dim tensor (0 when targets are constant)."""
    target_var = targets.var(unbiased=False)
    ratio = (targets - predictions).var(unbiased=False) / target_var.clamp_min(1e-12)
    return torch.where(target_var > 1e-12, 1.0 - ratio, torch.zeros_like(ratio))


# ----------------------------------------------------------------------------- networks


def _tanh_mlp(in_dim: int, layer_sizes: Tuple[int, ...]) -> nn.Sequential:
    """Linear -> tanh for each size, orthogonal weights (gain sqrt 2), zero biases."""
    layers: list[nn.Module] = []
    for size in layer_sizes:
        linear = nn.Linear(in_dim, size)
        nn.init.orthogonal_(linear.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
        in_dim = size
    return nn.Sequential(*layers)


def _orthogonal_linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)
    return linear


class GaussianPolicy(nn.Module):
    """obs (B, O) -> (mean (B, D), log_std (B, D)); log_std is one state-independent parameter."""

    def __init__(self, obs_dim: int, act_dim: int, layer_sizes: Tuple[int, ...]) -> None:
        super().__init__()
        self.torso = _tanh_mlp(obs_dim, layer_sizes)
        self.mean_head = _orthogonal_linear(layer_sizes[-1] if layer_sizes else obs_dim, act_dim, gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean_head(self.torso(obs))
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return mean, log_std


class ValueNetwork(nn.Module):
    """obs (B, O) -> V(s) (B, 1)."""

    def __init__(self, obs_dim: int, layer_sizes: Tuple[int, ...]) -> None:
        super().__init__()
        self.torso = _tanh_mlp(obs_dim, layer_sizes)
        self.head = _orthogonal_linear(layer_sizes[-1] if layer_sizes else obs_dim, 1, gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs))

    def mse_backward(self, obs: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """obs (B, O), returns (B,) -> loss mean_b (V(s_b) - R_b)^2; its gradient goes into each
        parameter's `.grad` (replacing what was there), the values autograd would give.

        Backpropagation written out for Linear -> tanh layers: on the value regression's small
        minibatches (128 rows through (64, 64) layers) autograd's bookkeeping cost more than the
        products, and an update runs value_epochs * T / minibatch of these steps.
        """
        with torch.no_grad():  # (not a decorator: mutation testing skips decorated functions)
            linears = [m for m in self.torso if isinstance(m, nn.Linear)] + [self.head]
            inputs = [obs]  # inputs[i] feeds linears[i]
            for linear in linears[:-1]:
                inputs.append(torch.tanh(torch.addmm(linear.bias, inputs[-1], linear.weight.t())))
            values = torch.addmm(self.head.bias, inputs[-1], self.head.weight.t()).squeeze(-1)
            error = values - returns
            grad_out = error.mul(2.0 / error.shape[0]).unsqueeze(-1)  # dLoss/dV (B, 1)
            for i in range(len(linears) - 1, -1, -1):
                linear = linears[i]
                linear.weight.grad = grad_out.t() @ inputs[i]
                linear.bias.grad = grad_out.sum(dim=0)
                if i > 0:  # through the tanh that produced inputs[i]: d tanh = 1 - tanh^2
                    grad_out = (grad_out @ linear.weight).mul_(1.0 - inputs[i].square())
            return error.square().mean()


def _make_fisher_vector_product(
    params: tuple[nn.Parameter, ...],
    mean: torch.Tensor,
    log_std: torch.Tensor,
    old_log_std: torch.Tensor,
    damping: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v (P,) -> (H + damping I) v, H the Hessian of mean_s KL(old || theta) at theta = theta_old.

    `mean`, `log_std` (B, D): the policy's outputs at theta_old, still attached to their graph
    (the old distribution is these values, detached). At theta_old the KL's Hessian is exactly
    its Gauss-Newton part J^T M J, J the Jacobian of (mean, log_std) with respect to `params` and
    M = diag(exp(-2 log_std_old), 2) / B the Gaussian's Fisher in those coordinates. Both Jacobian
    products reuse the one forward graph: J^T u is a backward pass, and J v is the backward pass
    of the linear map u -> J^T u (the double-vjp trick).
    """
    batch = mean.shape[0]
    mean_weight = torch.exp(-2.0 * old_log_std) / batch
    log_std_weight = 2.0 / batch
    dummy_mean = torch.zeros_like(mean, requires_grad=True)
    dummy_log_std = torch.zeros_like(log_std, requires_grad=True)
    jt_dummy = torch.autograd.grad(
        (mean, log_std), params, grad_outputs=(dummy_mean, dummy_log_std), create_graph=True, allow_unused=True
    )
    jt_dummy_used = [(g, p) for g, p in zip(jt_dummy, params, strict=True) if g is not None]

    def fisher_vector_product(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [p.numel() for p in params])
        used_pieces = [
            piece.view_as(p) for piece, g, p in zip(pieces, jt_dummy, params, strict=True) if g is not None
        ]
        jv_mean, jv_log_std = torch.autograd.grad(
            [g for g, _ in jt_dummy_used],
            (dummy_mean, dummy_log_std),
            grad_outputs=used_pieces,
            retain_graph=True,
            allow_unused=True,
        )
        jv_mean = torch.zeros_like(mean) if jv_mean is None else jv_mean
        jv_log_std = torch.zeros_like(log_std) if jv_log_std is None else jv_log_std
        grads = torch.autograd.grad(
            (mean, log_std),
            params,
            grad_outputs=(mean_weight * jv_mean, log_std_weight * jv_log_std),
            retain_graph=True,
            allow_unused=True,
        )
        return _flat_grads(grads, params) + damping * vector

    return fisher_vector_product


# ----------------------------------------------------------------------------- agent


def _numpy_layers(modules: list[nn.Linear]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W^T, b) of each Linear as float32 numpy copies."""
    return [
        (m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy()) for m in modules
    ]


def _numpy_tanh_mlp(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """tanh after every layer but the last (the head)."""
    for weight, bias in layers[:-1]:
        x = np.tanh(x @ weight + bias)
    weight, bias = layers[-1]
    return x @ weight + bias


class RolloutActor:
    """A numpy snapshot of the policy and value networks for collecting one rollout on the CPU.

    The networks do not change between two updates, and for a few observations per env step
    numpy's small products cost a fraction of torch's per-call overhead (the rollout, not the
    update, dominated TRPO's wall time on Pendulum). Same outputs as `TRPOAgent.act` up to float
    rounding; the exploration noise comes from `rng`. Take a new snapshot after every update.
    """

    def __init__(self, agent: TRPOAgent, rng: np.random.Generator) -> None:
        policy, value = agent.policy, agent.value
        linears = [m for m in policy.torso if isinstance(m, nn.Linear)]
        self._policy = _numpy_layers([*linears, policy.mean_head])
        self._value = _numpy_layers([*[m for m in value.torso if isinstance(m, nn.Linear)], value.head])
        log_std = policy.log_std.detach().clamp(LOG_STD_MIN, LOG_STD_MAX).cpu().numpy()
        self._log_std = log_std.astype(np.float32)
        self._std = np.exp(self._log_std)
        self._log_prob_const = float(-(log_std.sum() + 0.5 * log_std.size * math.log(2.0 * math.pi)))
        self._rng = rng

    def act(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """obs (n, O) float32 -> (raw action (n, D), log_prob (n,), value (n,))."""
        mean = _numpy_tanh_mlp(self._policy, obs)
        if deterministic:
            noise = np.zeros_like(mean)
        else:
            noise = self._rng.standard_normal(mean.shape, dtype=np.float32)
        action = mean + self._std * noise
        log_prob = self._log_prob_const - 0.5 * np.square(noise).sum(axis=-1)
        return action, log_prob.astype(np.float32), self.values(obs)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """obs (n, O) -> V(s) (n,)."""
        return _numpy_tanh_mlp(self._value, obs)[:, 0]


class TRPOAgent:
    """TRPO with a diagonal-Gaussian MLP policy and an MLP state-value baseline.

    `gamma` and `gae_lambda` are the rollout's discount and GAE parameters; the caller passes them
    to `compute_gae` (or uses `advantages_and_returns`). `action_low` / `action_high` bound the
    copy of the action sent to the environment (`env_action`); the policy itself is unbounded.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        device: torch.device,
        policy_layer_sizes: Tuple[int, ...],
        critic_layer_sizes: Tuple[int, ...],
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        target_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 0.1,
        backtrack_coeff: float = 0.8,
        backtrack_iters: int = 10,
        value_lr: float = 0.0003,
        value_epochs: int = 10,
        value_minibatch_size: int = 256,
        max_grad_norm: float = 0.5,
        normalize_advantages: bool = True,
        optimizer_type: str = "adam",
        sgd_momentum: float = 0.9,
    ):
        self.device = torch.device(device)
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.action_low = np.asarray(action_low, dtype=np.float32).reshape(act_dim)
        self.action_high = np.asarray(action_high, dtype=np.float32).reshape(act_dim)
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.target_kl = target_kl
        self.cg_iters = cg_iters
        self.cg_damping = cg_damping
        self.backtrack_coeff = backtrack_coeff
        self.backtrack_iters = backtrack_iters
        self.value_lr = value_lr
        self.value_epochs = value_epochs
        self.value_minibatch_size = value_minibatch_size
        self.max_grad_norm = max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.optimizer_type = optimizer_type
        self.sgd_momentum = sgd_momentum

        self.policy = GaussianPolicy(obs_dim, act_dim, tuple(policy_layer_sizes)).to(self.device)
        self.value = ValueNetwork(obs_dim, tuple(critic_layer_sizes)).to(self.device)
        self.value_optimizer = self._build_value_optimizer(self.value.parameters())
        self.num_updates = 0

    def _build_value_optimizer(self, params) -> torch.optim.Optimizer:
        # Fused optimiser kernels (one call updates every tensor) on CPU and CUDA: the value
        # regression is value_epochs * T / value_minibatch_size small steps, and torch's
        # per-tensor loop cost ~20% of a whole update (2048 samples, (64, 64) layers, 1 thread).
        group: dict[str, Any] = {"params": list(params)}
        if self.device.type in ("cpu", "cuda"):
            group["fused"] = True
        return build_optimizer([group], self.optimizer_type, self.value_lr, self.sgd_momentum)

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (n, O) (or (O,), treated as n = 1), tensor or numpy -> (action (n, D), log_prob (n, 1),
        value (n, 1)). The action is the RAW sample (the mean when deterministic); store it as is and
        send `env_action(action)` to the environment."""
        obs = as_float_tensor(obs, self.device)
        if obs.dim() == 1:
            obs = obs.unsqueeze(0)
        mean, log_std = self.policy(obs)
        action = mean if deterministic else mean + torch.exp(log_std) * torch.randn_like(mean)
        return action, diag_gaussian_log_prob(mean, log_std, action), self.value(obs)

    def env_action(self, action: torch.Tensor | np.ndarray) -> np.ndarray:
        """The copy of a raw action sent to the environment: numpy, clipped to the action bounds."""
        if isinstance(action, torch.Tensor):
            action = action.detach().cpu().numpy()
        return np.clip(action, self.action_low, self.action_high)

    def advantages_and_returns(
        self,
        rewards: np.ndarray,
        values: np.ndarray,
        next_values: np.ndarray,
        terminated: np.ndarray,
        dones: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`compute_gae` with this agent's `gamma` and `gae_lambda`."""
        return compute_gae(rewards, values, next_values, terminated, dones, self.gamma, self.gae_lambda)

    # ------------------------------------------------------------------ learning

    def _policy_objective(
        self, obs: torch.Tensor, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Surrogate L(theta) = mean_t exp(log pi_theta(a_t|s_t) - log pi_old(a_t|s_t)) A_t.

        obs (T, O), actions (T, D), old_log_probs (T,), advantages (T,) -> (surrogate (), mean (T, D),
        log_std (T, D)) at the current parameters (differentiable).
        """
        mean, log_std = self.policy(obs)
        log_probs = diag_gaussian_log_prob(mean, log_std, actions).squeeze(-1)
        surrogate = (torch.exp(log_probs - old_log_probs) * advantages).mean()
        return surrogate, mean, log_std

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One TRPO policy step and `value_epochs` epochs of value regression on `batch` (see the
        module docstring for keys and shapes). Returns the metrics as plain floats.

        The policy/* metrics describe the step actually taken: when the line search rejects every
        candidate, the parameters are restored exactly and step_norm, kl, improvement,
        expected_improvement and line_search_frac are 0.
        """
        obs = as_float_tensor(batch["obs"], self.device).reshape(-1, self.obs_dim)
        actions = as_float_tensor(batch["actions"], self.device).reshape(-1, self.act_dim)
        old_log_probs = as_float_tensor(batch["log_probs"], self.device).reshape(-1)
        returns = as_float_tensor(batch["returns"], self.device).reshape(-1)
        advantages = as_float_tensor(batch["advantages"], self.device).reshape(-1)
        if self.normalize_advantages:
            advantages = (advantages - advantages.mean()) / (advantages.std(unbiased=False) + _ADV_EPS)

        policy_metrics = self._update_policy(obs, actions, old_log_probs, advantages)
        value_metrics = self._update_value(obs, returns)
        self.num_updates += 1
        metrics = {**policy_metrics, **value_metrics}
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
        return dict(zip(metrics.keys(), values, strict=True))

    def _update_policy(
        self, obs: torch.Tensor, actions: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Natural-gradient step s = F^-1 g by conjugate gradient, scaled to the trust region
        (1/2 s^T F s = target_kl), then backtracking; theta_old is restored exactly when no
        candidate both improves the surrogate and keeps mean KL(old || new) <= target_kl."""
        params = tuple(self.policy.parameters())
        theta_old = _flat_params(self.policy)
        # One forward pass at theta_old serves the old distribution, the gradient and the FVP.
        surrogate_before, mean, log_std = self._policy_objective(obs, actions, old_log_probs, advantages)
        old_mean, old_log_std = mean.detach(), log_std.detach()
        gradient = _flat_grads(
            torch.autograd.grad(surrogate_before, params, retain_graph=True, allow_unused=True), params
        )
        fisher_vector_product = _make_fisher_vector_product(params, mean, log_std, old_log_std, self.cg_damping)
        step_direction = _conjugate_gradient(fisher_vector_product, gradient, self.cg_iters)
        shs = step_direction.dot(fisher_vector_product(step_direction))
        step_scale = torch.sqrt(2.0 * self.target_kl / shs.clamp_min(_SHS_EPS))
        full_step = step_scale * step_direction
        surrogate_before = surrogate_before.detach()
        expected_full_improvement = gradient.dot(full_step)
        step_is_usable = torch.isfinite(full_step).all() & (shs > _SHS_EPS)

        # Backtracking line search. One host sync per candidate tried: the first one (the full
        # step) is usually accepted.
        zero = torch.zeros((), device=self.device)
        fraction, surrogate_after, kl = zero, surrogate_before, zero
        accepted = False
        for k in range(self.backtrack_iters):
            candidate_fraction = self.backtrack_coeff**k
            _set_flat_params(self.policy, theta_old + candidate_fraction * full_step)
            with torch.no_grad():
                candidate_surrogate, candidate_mean, candidate_log_std = self._policy_objective(
                    obs, actions, old_log_probs, advantages
                )
                candidate_kl = _kl_old_to_new(old_mean, old_log_std, candidate_mean, candidate_log_std).mean()
            ok = step_is_usable & (candidate_surrogate > surrogate_before) & (candidate_kl <= self.target_kl)
            if bool(ok):
                accepted = True
                fraction = torch.full((), candidate_fraction, device=self.device)
                surrogate_after, kl = candidate_surrogate, candidate_kl
                break
        if not accepted:
            _set_flat_params(self.policy, theta_old)
        step = fraction * full_step if accepted else torch.zeros_like(theta_old)

        return {
            "policy/surrogate_before": surrogate_before,
            "policy/surrogate_after": surrogate_after,
            "policy/improvement": surrogate_after - surrogate_before,
            "policy/kl": kl,
            "policy/entropy": diag_gaussian_entropy(self.policy.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)),
            "policy/step_norm": step.norm(),
            "policy/expected_improvement": fraction * expected_full_improvement,
            "policy/line_search_frac": fraction,
            "policy/line_search_accepted": torch.full((), float(accepted), device=self.device),
        }

    def _update_value(self, obs: torch.Tensor, returns: torch.Tensor) -> dict[str, torch.Tensor]:
        """`value_epochs` epochs of shuffled minibatch MSE regression of V(obs) (T, O) onto returns (T,).

        loss/value is the mean minibatch loss over all steps; value/explained_variance is measured
        before the regression (the baseline the advantages were computed with, not a refit).
        """
        with torch.no_grad():
            explained_variance = _explained_variance(self.value(obs).squeeze(-1), returns)
        num_samples = obs.shape[0]
        # All epochs' shuffles at once: (value_epochs, T) permutations, then minibatch views.
        permutations = torch.rand(self.value_epochs, num_samples, device=self.device).argsort(dim=1)
        shuffled_obs, shuffled_returns = obs[permutations], returns[permutations]
        loss_sum = torch.zeros((), device=self.device)
        num_steps = 0
        params = list(self.value.parameters())
        for epoch_obs, epoch_returns in zip(shuffled_obs, shuffled_returns, strict=True):
            for minibatch_obs, minibatch_returns in zip(
                torch.split(epoch_obs, self.value_minibatch_size),
                torch.split(epoch_returns, self.value_minibatch_size),
                strict=True,
            ):
                loss = self.value.mse_backward(minibatch_obs, minibatch_returns)
                nn.utils.clip_grad_norm_(params, self.max_grad_norm, foreach=True)
                self.value_optimizer.step()
                loss_sum = loss_sum + loss
                num_steps += 1
        return {
            "loss/value": loss_sum / max(num_steps, 1),
            "value/explained_variance": explained_variance,
        }

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Networks, value optimiser and update counter (tensors and primitives only)."""
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`. The value optimiser keeps its saved moments but takes this
        agent's `value_lr` (and SGD momentum), so settings changed for a resumed run take effect."""
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
        self.num_updates = int(state["num_updates"])
        for group in self.value_optimizer.param_groups:
            group["lr"] = self.value_lr
            if "momentum" in group:
                group["momentum"] = self.sgd_momentum
