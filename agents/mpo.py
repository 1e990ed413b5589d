"""Maximum a posteriori Policy Optimisation (MPO) with decoupled KL constraints, after Acme.

Notation: B batch, L sequence length (``retrace_steps``), N sampled actions per state,
M ``retrace_mc_actions``, O observation dims, D action dims. Every batch value may be a numpy
array or a tensor; it is converted to float32 on the agent's device.

1-step batch (``use_retrace=False``), one transition per row:

    obs           (B, O)  s
    actions_exec  (B, D)  the action sent to the environment (clipped to the bounds)
    actions_raw   (B, D)  the policy sample before clipping (accepted; only Retrace reads it)
    rewards       (B,)    r
    next_obs      (B, O)  s'; for a time-limit truncation, the final observation
    terminated    (B,)    1.0 only for true termination; truncation keeps the bootstrap

Retrace batch (``use_retrace=True``), one window of L consecutive steps per row: the keys above
with shapes (B, L, ...) plus

    dones                (B, L)  1.0 where the episode ended at step t (terminated or
                                 truncated): nothing after t in the window counts
    behaviour_log_probs  (B, L)  log mu(actions_raw_t | obs_t) at acting time

Action penalisation (``epsilon_penalty > 0``) needs no batch keys: its cost is computed on the
actions sampled from the target policy during the update.

One update (``MPOAgent.update``), with the E-step and M-step on the next states s' (1-step) or
on the first state of each window (Retrace):
  0. hard-copy online -> target networks every ``target_networks_update_period`` updates,
     starting with the first;
  1. critic target without gradient: N actions sampled once from the target policy at s' feed
     one batched target-critic pass whose values give both the bootstrap (mean over N) and the
     E-step (Acme's reuse); Retrace has its own (B*L*(1+M)) pass;
  2. critic step on MSE(Q(s, a), y);
  3. E-step weights softmax_j(Q_ij / eta) and the temperature loss;
  4. decoupled M-step losses (mean with the target std, std with the target mean) and the
     per-dimension KL duals alpha_mean, alpha_std;
  5. one dual step (temperature, alphas, penalty temperature), raw duals projected to >= -18;
  6. ``m_steps`` policy steps at ``policy_lr / m_steps`` with the updated, detached alphas.
Non-finite batch values, targets, Q values or losses skip the update: ``update`` returns None and
no tensor of the agent changes. Metrics are read from the device once, as one stacked tensor.

Duals are stored raw: value = softplus(raw) + 1e-8.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Tuple, cast

import numpy as np
import torch
import torch.nn.functional as F
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

DUAL_RAW_MIN = -18.0
DUAL_OFFSET = 1e-8
ADAM_EPS = 1e-5
# Rows per chunk of the no-grad critic pass (whole states per chunk): large enough for efficient
# matrix products, small enough to keep the scratch buffers a few MB.
INFERENCE_CHUNK_ROWS = 2048


def _inverse_softplus(value: float) -> float:
    """raw such that softplus(raw) == value (value > 0)."""
    if value <= 0:
        raise ValueError(f"expected a positive value, got {value}")
    return value + math.log(-math.expm1(-value))


def _dual_value(raw: torch.Tensor) -> torch.Tensor:
    return F.softplus(raw) + DUAL_OFFSET


def _tanh_inplace(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1, in place; several times faster than torch.tanh on CPU."""
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def _sample_gaussian(
    mean: torch.Tensor, log_std: torch.Tensor, num_actions: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """num_actions reparameterised samples per row. mean, log_std (B, D) -> (B, num_actions, D)."""
    noise = torch.randn(
        (mean.shape[0], num_actions, mean.shape[1]), device=mean.device, dtype=mean.dtype, generator=generator
    )
    return mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise


def _as_bounds(value: np.ndarray | None, act_dim: int, default: float) -> torch.Tensor:
    if value is None:
        return torch.full((act_dim,), default, dtype=torch.float32)
    bounds = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if bounds.numel() == 1:
        bounds = bounds.expand(act_dim).clone()
    if bounds.numel() != act_dim:
        raise ValueError(f"action bounds have {bounds.numel()} values, expected {act_dim}")
    return bounds


class LayerNormMLP(nn.Module):
    """Acme's control torso: Linear -> LayerNorm -> tanh, then Linear -> ELU per further size.

    The ELU after the last layer only when ``activate_final``. Input (..., in_dim), output
    (..., layer_sizes[-1]).
    """

    def __init__(self, in_dim: int, layer_sizes: Tuple[int, ...], activate_final: bool = False):
        super().__init__()
        sizes = tuple(int(size) for size in layer_sizes)
        if not sizes:
            raise ValueError("layer_sizes must name at least one layer")
        self.input_linear = nn.Linear(in_dim, sizes[0])
        self.input_norm = nn.LayerNorm(sizes[0])
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.activate_final = activate_final
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.input_norm(self.input_linear(x)))
        last = len(self.hidden) - 1
        for index, layer in enumerate(self.hidden):
            h = layer(h)
            if index < last or self.activate_final:
                h = F.elu(h)
        return h

    @torch.no_grad()
    def forward_into(self, x: torch.Tensor, scratch: ScratchBuffers) -> torch.Tensor:
        """``forward`` without autograd, every intermediate written into reused scratch buffers.

        x (R, in_dim) -> (R, out_dim); the result is a scratch buffer, overwritten by the next call.
        """
        rows = x.shape[0]
        first = self.input_linear
        pre = torch.addmm(first.bias, x, first.weight.t(), out=scratch.get("pre0", (rows, first.out_features), x))
        h = scratch.get("h0", pre.shape, x)
        norm = self.input_norm
        torch.ops.aten.native_layer_norm.out(
            pre,
            list(norm.normalized_shape),
            norm.weight,
            norm.bias,
            norm.eps,
            out0=h,
            out1=scratch.get("ln_mean", (rows, 1), x),
            out2=scratch.get("ln_rstd", (rows, 1), x),
        )
        _tanh_inplace(h)
        last = len(self.hidden) - 1
        for index, module in enumerate(self.hidden):
            layer = cast(nn.Linear, module)
            out = scratch.get(f"h{index + 1}", (rows, layer.out_features), x)
            h = torch.addmm(layer.bias, h, layer.weight.t(), out=out)
            if index < last or self.activate_final:
                F.elu_(h)
        return h


class ScratchBuffers:
    """Named tensors reused across calls: a request is served by the first rows of a buffer whose
    other dimensions, dtype and device match, and that has at least as many rows.

    Large temporaries allocated afresh on every update cost page faults on CPU (glibc returns
    big blocks to the OS); the no-grad critic pass writes into these instead.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        shape = tuple(shape)
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.shape[1:] != shape[1:]
            or buffer.shape[0] < shape[0]
            or buffer.dtype != like.dtype
            or buffer.device != like.device
        ):
            buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer[: shape[0]]


class SmallInitLinear(nn.Linear):
    """Linear layer with weights ~ N(0, std^2) truncated at +-2 std and zero bias."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.01):
        super().__init__(in_features, out_features)
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
        nn.init.zeros_(self.bias)


class Critic(nn.Module):
    """Q(s, a): clip a to the bounds, LayerNormMLP on [obs, act], small-init head.

    obs (..., O), act (..., D) -> (..., 1).
    """

    action_low: torch.Tensor  # buffers (D,)
    action_high: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        layer_sizes: Tuple[int, ...],
        action_low: np.ndarray,
        action_high: np.ndarray,
    ):
        super().__init__()
        self.register_buffer("action_low", _as_bounds(action_low, act_dim, -1.0))
        self.register_buffer("action_high", _as_bounds(action_high, act_dim, 1.0))
        self.torso = LayerNormMLP(obs_dim + act_dim, layer_sizes, activate_final=True)
        self.head = SmallInitLinear(self.torso.out_dim, 1)
        self._scratch = ScratchBuffers()

    def _inputs(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        act = torch.clamp(act, min=self.action_low, max=self.action_high)
        return torch.cat([obs, act], dim=-1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(self._inputs(obs, act)))

    @torch.no_grad()
    def forward_sampled(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q of several actions per state in one no-grad pass, in chunks of whole states.

        obs (B, O) shared by the K actions, or (B, K, O); actions (B, K, D) -> (B, K).
        """
        batch, num_actions, act_dim = actions.shape
        obs_dim = obs.shape[-1]
        obs_rows = obs.unsqueeze(1) if obs.ndim == 2 else obs
        states_per_chunk = max(1, INFERENCE_CHUNK_ROWS // num_actions)
        values = torch.empty(batch, num_actions, dtype=actions.dtype, device=actions.device)
        head_weight = self.head.weight[0]
        for start in range(0, batch, states_per_chunk):
            stop = min(start + states_per_chunk, batch)
            inputs = self._scratch.get("inputs", (stop - start, num_actions, obs_dim + act_dim), actions)
            inputs[..., :obs_dim].copy_(obs_rows[start:stop])
            torch.clamp(actions[start:stop], min=self.action_low, max=self.action_high, out=inputs[..., obs_dim:])
            features = self.torso.forward_into(inputs.view(-1, obs_dim + act_dim), self._scratch)
            torch.mv(features, head_weight, out=values[start:stop].view(-1))
        return values.add_(self.head.bias)


class DiagonalGaussianPolicy(nn.Module):
    """pi(a|s) = N(mean(s), diag(exp(log_std(s))^2)); samples are clipped to the bounds to act.

    obs (B, O) -> mean, log_std (B, D). Default bounds [-1, 1]^D.
    """

    action_low: torch.Tensor  # buffers (D,)
    action_high: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        layer_sizes: Tuple[int, ...],
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
    ):
        super().__init__()
        self.register_buffer("action_low", _as_bounds(action_low, act_dim, -1.0))
        self.register_buffer("action_high", _as_bounds(action_high, act_dim, 1.0))
        self.torso = LayerNormMLP(obs_dim, layer_sizes, activate_final=True)
        self.mean_head = nn.Linear(self.torso.out_dim, act_dim)
        nn.init.kaiming_normal_(self.mean_head.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.mean_head.bias)
        # Small init: the policy starts with unit standard deviation in every state.
        self.log_std_head = SmallInitLinear(self.torso.out_dim, act_dim)

    def forward(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.forward_with_features(self.torso(obs))

    def forward_with_features(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = torch.nan_to_num(self.mean_head(features), nan=0.0, posinf=0.0, neginf=0.0)
        log_std = torch.nan_to_num(self.log_std_head(features), nan=0.0, posinf=0.0, neginf=0.0)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, actions_raw: torch.Tensor) -> torch.Tensor:
        """Diagonal Normal log density summed over D: (B, D) each -> (B, 1)."""
        return diag_gaussian_log_prob(mean, log_std, actions_raw)

    def _clip_to_env_bounds(self, actions_raw: torch.Tensor) -> torch.Tensor:
        return torch.clamp(actions_raw, min=self.action_low, max=self.action_high)

    def sample_action_raw_and_exec(
        self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_raw, a_exec), each (B, D): the mean when deterministic, else a reparameterised sample.

        Keyword: ``generator`` (torch.Generator) for the sampling noise.
        """
        generator = kwargs.pop("generator", None)
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
        if deterministic:
            actions_raw = mean
        else:
            noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
            actions_raw = mean + log_std.exp() * noise
        return actions_raw, self._clip_to_env_bounds(actions_raw)

    def sample_action(self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, **kwargs) -> torch.Tensor:
        return self.sample_action_raw_and_exec(mean, log_std, deterministic, **kwargs)[1]

    def sample_actions_raw_and_exec(self, obs: torch.Tensor, num_actions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """num_actions samples per state: obs (B, O) -> a_raw, a_exec (B, num_actions, D)."""
        mean, log_std = self(obs)
        actions_raw = _sample_gaussian(mean, log_std, num_actions)
        return actions_raw, self._clip_to_env_bounds(actions_raw)

    def sample_actions(self, obs: torch.Tensor, num_actions: int) -> torch.Tensor:
        return self.sample_actions_raw_and_exec(obs, num_actions)[1]

    def head_parameters(self):
        return [*self.mean_head.parameters(), *self.log_std_head.parameters()]


def _weights_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of E-step weights (B, N) -> (B,)."""
    return -(weights * torch.log(weights.clamp_min(1e-30))).sum(dim=-1)


class MPOAgent:
    """MPO learner: critic, Gaussian policy, their target copies, the duals and their optimisers."""

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
        target_networks_update_period: int = 100,
        policy_lr: float = 0.0003,
        q_lr: float = 0.0003,
        kl_epsilon: float = 0.1,
        mstep_kl_epsilon: float = 0.1,
        temperature_init: float = 1.0,
        temperature_lr: float = 0.0003,
        lambda_init: float = 1.0,
        lambda_lr: float = 0.0003,
        epsilon_penalty: float = 0.001,
        max_grad_norm: float = 1.0,
        action_samples: int = 20,
        use_retrace: bool = False,
        retrace_steps: int = 2,
        retrace_mc_actions: int = 8,
        retrace_lambda: float = 0.95,
        optimizer_type: str = "adam",
        sgd_momentum: float = 0.9,
        init_log_alpha_mean: float = 10.0,
        init_log_alpha_stddev: float = 1000.0,
        m_steps: int = 1,
    ):
        if lambda_init != 1.0:
            warnings.warn(
                f"MPOAgent: lambda_init={lambda_init} is ignored; the KL duals start from "
                "init_log_alpha_mean and init_log_alpha_stddev",
                stacklevel=2,
            )
        if action_samples < 1 or m_steps < 1 or retrace_steps < 1 or retrace_mc_actions < 1:
            raise ValueError("action_samples, m_steps, retrace_steps and retrace_mc_actions must be >= 1")
        if target_networks_update_period < 1:
            raise ValueError("target_networks_update_period must be >= 1")
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.device = torch.device(device)
        self.gamma = gamma
        self.target_networks_update_period = target_networks_update_period
        self.policy_lr = policy_lr
        self.q_lr = q_lr
        self.kl_epsilon = kl_epsilon
        self.mstep_kl_epsilon = mstep_kl_epsilon
        self.temperature_lr = temperature_lr
        self.lambda_lr = lambda_lr
        self.epsilon_penalty = epsilon_penalty
        self.max_grad_norm = max_grad_norm
        self.action_samples = action_samples
        self.use_retrace = use_retrace
        self.retrace_steps = retrace_steps
        self.retrace_mc_actions = retrace_mc_actions
        self.retrace_lambda = retrace_lambda
        self.optimizer_type = optimizer_type
        self.sgd_momentum = sgd_momentum
        self.m_steps = m_steps
        self.num_updates = 0

        def make_policy() -> DiagonalGaussianPolicy:
            return DiagonalGaussianPolicy(obs_dim, act_dim, policy_layer_sizes, action_low, action_high)

        def make_critic() -> Critic:
            return Critic(obs_dim, act_dim, critic_layer_sizes, action_low, action_high)

        self.policy = make_policy().to(self.device)
        self.policy_target = make_policy().to(self.device)
        self.q = make_critic().to(self.device)
        self.q_target = make_critic().to(self.device)
        for online, target in ((self.policy, self.policy_target), (self.q, self.q_target)):
            target.load_state_dict(online.state_dict())
            target.eval().requires_grad_(False)

        raw_temperature = _inverse_softplus(temperature_init - DUAL_OFFSET)
        duals = {
            "temperature": torch.tensor(raw_temperature),
            "alpha_mean": torch.full((act_dim,), float(init_log_alpha_mean)),
            "alpha_std": torch.full((act_dim,), float(init_log_alpha_stddev)),
        }
        if self.penalize_actions:
            duals["penalty_temperature"] = torch.tensor(raw_temperature)
        self.duals = nn.ParameterDict({name: nn.Parameter(value) for name, value in duals.items()}).to(self.device)
        temperatures = [self.duals["temperature"]]
        if self.penalize_actions:
            temperatures.append(self.duals["penalty_temperature"])

        self.q_optimizer = self._build_optimizer(self.q.parameters(), lr=q_lr)
        self.policy_optimizer = self._build_optimizer(self.policy.parameters(), lr=policy_lr / m_steps)
        self.dual_optimizer = self._build_optimizer(
            [
                {"params": temperatures, "lr": temperature_lr},
                {"params": [self.duals["alpha_mean"], self.duals["alpha_std"]], "lr": lambda_lr},
            ]
        )

    @property
    def penalize_actions(self) -> bool:
        return self.epsilon_penalty > 0

    # ------------------------------------------------------------------ helpers

    def _build_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        """``optimizer_type`` over params (tensors or groups); lr None: policy_lr.

        Adam uses the fused kernel (one call per step instead of ~10 small ops per tensor).
        """
        lr = self.policy_lr if lr is None else lr
        if self.optimizer_type.lower() == "adam":
            return torch.optim.Adam(params, lr=lr, eps=ADAM_EPS, fused=True)
        return build_optimizer(params, self.optimizer_type, lr, self.sgd_momentum)

    def _kl_diag_gaussian_per_dim(self, mean_p, log_std_p, mean_q, log_std_q):
        """KL(p || q) per action dimension, shapes (..., D)."""
        return kl_diag_gaussian_per_dim(mean_p, log_std_p, mean_q, log_std_q)

    def _compute_weights_and_temperature_loss(
        self, q_values: torch.Tensor, epsilon: float, temperature: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Acme-style E-step weights and dual temperature loss.

        q_values shape (B,N). Returns weights (B,N) detached and loss scalar.
        """
        q_values = q_values.detach()
        tempered = q_values / temperature
        weights = torch.softmax(tempered, dim=-1).detach()
        log_num_actions = math.log(q_values.shape[-1])
        loss = temperature * (epsilon + torch.logsumexp(tempered, dim=-1).mean() - log_num_actions)
        return weights, loss

    def _compute_nonparametric_kl_from_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Estimates KL(nonparametric || target) like Acme's diagnostics.

        weights shape (B,N). Returns (B,) KL.
        """
        num_actions = weights.shape[-1]
        return (weights * torch.log(num_actions * weights.clamp_min(1e-30))).sum(dim=-1)

    def _to_device_tensor(self, value: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Fast path for float32 host arrays -> device tensors."""
        return as_float_tensor(value, self.device)

    def _assert_finite_tensors(self, tensors: dict[str, torch.Tensor]) -> bool:
        """True when every value is finite; one device synchronisation for the whole dict."""
        values = torch.cat([tensor.reshape(-1) for tensor in tensors.values()])
        return bool(torch.isfinite(values).all().item())

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act_with_logp(
        self, obs: np.ndarray, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray, float | np.ndarray]:
        """obs (O,) or (n, O) -> (a_exec, a_raw, log_prob): a float, or (n,) for a batch."""
        obs_tensor = self._to_device_tensor(obs)
        single = obs_tensor.ndim == 1
        if single:
            obs_tensor = obs_tensor.unsqueeze(0)
        mean, log_std = self.policy(obs_tensor)
        actions_raw, actions_exec = self.policy.sample_action_raw_and_exec(mean, log_std, deterministic)
        log_prob = self.policy.log_prob(mean, log_std, actions_raw).squeeze(-1)
        actions_exec_np = actions_exec.cpu().numpy()
        actions_raw_np = actions_raw.cpu().numpy()
        log_prob_np = log_prob.cpu().numpy()
        if single:
            return actions_exec_np[0], actions_raw_np[0], float(log_prob_np[0])
        return actions_exec_np, actions_raw_np, log_prob_np

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.act_with_logp(obs, deterministic)[0]

    @torch.no_grad()
    def _expected_q_current(self, obs: torch.Tensor) -> torch.Tensor:
        """E_{a ~ pi}[Q(s, a)] with the online networks, ``action_samples`` samples: (B, O) -> (B,)."""
        mean, log_std = self.policy(obs)
        actions_exec = self.policy._clip_to_env_bounds(_sample_gaussian(mean, log_std, self.action_samples))
        return self.q.forward_sampled(obs, actions_exec).mean(dim=-1)

    # ------------------------------------------------------------------ critic targets

    def _retrace_q_target(self, batch: dict) -> torch.Tensor:
        """Retrace target for the first step of each window: sequences (B, L, ...) -> (B,).

        Q_ret = Q_0 + sum_t gamma^t (prod_{i=1..t} c_i) (prod_{i<t} (1 - done_i)) delta_t with
        delta_t = r_t + gamma (1 - term_t) V(s'_t) - Q_t, c_t = lambda min(1, pi_target / mu),
        Q and V from the target networks, V a mean over ``retrace_mc_actions`` samples.
        """
        with torch.no_grad():
            obs, next_obs = batch["obs"], batch["next_obs"]
            batch_size, steps = obs.shape[:2]
            rows = batch_size * steps
            mean, log_std = self.policy_target(torch.cat([obs, next_obs]).reshape(2 * rows, -1))
            mean_s, mean_next = mean[:rows], mean[rows:]
            log_std_s, log_std_next = log_std[:rows], log_std[rows:]
            next_actions = _sample_gaussian(mean_next, log_std_next, self.retrace_mc_actions)
            next_actions = self.policy_target._clip_to_env_bounds(next_actions)
            # One critic pass: slot 0 holds (s_t, a_t), slots 1..M hold (s'_t, a'_m).
            obs_rows = obs.reshape(rows, 1, -1)
            next_obs_rows = next_obs.reshape(rows, 1, -1).expand(rows, self.retrace_mc_actions, -1)
            q_all = self.q_target.forward_sampled(
                torch.cat([obs_rows, next_obs_rows], dim=1),
                torch.cat([batch["actions_exec"].reshape(rows, 1, -1), next_actions], dim=1),
            )
            q_taken = q_all[:, 0].reshape(batch_size, steps)
            next_value = q_all[:, 1:].mean(dim=-1).reshape(batch_size, steps)

            log_pi = self.policy_target.log_prob(mean_s, log_std_s, batch["actions_raw"].reshape(rows, -1))
            log_ratio = log_pi.reshape(batch_size, steps) - batch["behaviour_log_probs"]
            traces = self.retrace_lambda * torch.exp(log_ratio.clamp(max=0.0))
            return retrace_target(
                q_taken, next_value, batch["rewards"], batch["terminated"], batch["dones"], traces, self.gamma
            )

    # ------------------------------------------------------------------ update

    def _batch_tensors(self, batch: dict) -> dict[str, torch.Tensor]:
        keys = ["obs", "actions_exec", "rewards", "next_obs", "terminated"]
        if self.use_retrace:
            keys += ["actions_raw", "dones", "behaviour_log_probs"]
        missing = [key for key in keys if key not in batch]
        if missing:
            raise KeyError(f"MPO batch is missing {missing}")
        tensors = {key: self._to_device_tensor(batch[key]) for key in keys}
        if self.use_retrace:
            if tensors["obs"].ndim != 3:
                raise ValueError(f"Retrace batch obs must be (B, L, O), got {tuple(tensors['obs'].shape)}")
            for key in ("rewards", "terminated", "dones", "behaviour_log_probs"):
                tensors[key] = tensors[key].reshape(tensors["obs"].shape[:2])
        else:
            for key in ("rewards", "terminated"):
                tensors[key] = tensors[key].reshape(-1)
        return tensors

    def _sync_targets(self) -> dict[str, dict[str, torch.Tensor]]:
        """Hard-copy online -> target; returns the previous target state to undo a skipped update."""
        previous = {}
        for name, online, target in (("policy", self.policy, self.policy_target), ("q", self.q, self.q_target)):
            previous[name] = {key: value.clone() for key, value in target.state_dict().items()}
            target.load_state_dict(online.state_dict())
        return previous

    def _restore_targets(self, previous: dict[str, dict[str, torch.Tensor]]) -> None:
        self.policy_target.load_state_dict(previous["policy"])
        self.q_target.load_state_dict(previous["q"])

    def _policy_losses(
        self,
        states: torch.Tensor,
        sampled_raw: torch.Tensor,
        weights: torch.Tensor,
        target_mean: torch.Tensor,
        target_log_std: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoupled M-step on the online policy.

        states (B, O); sampled_raw (B, N, D); weights (B, N); target stats (B, D).
        Returns (weighted NLL scalar, KL_mean (D,), KL_std (D,), online mean, online log_std).
        """
        mean, log_std = self.policy(states)
        fixed_std = target_log_std.unsqueeze(1)
        fixed_mean = target_mean.unsqueeze(1)
        log_prob_mean = diag_gaussian_log_prob(mean.unsqueeze(1), fixed_std, sampled_raw).squeeze(-1)
        log_prob_std = diag_gaussian_log_prob(fixed_mean, log_std.unsqueeze(1), sampled_raw).squeeze(-1)
        nll = -(weights * (log_prob_mean + log_prob_std)).sum(dim=-1).mean()
        kl_mean = self._kl_diag_gaussian_per_dim(target_mean, target_log_std, mean, target_log_std).mean(dim=0)
        kl_std = self._kl_diag_gaussian_per_dim(target_mean, target_log_std, target_mean, log_std).mean(dim=0)
        return nll, kl_mean, kl_std, mean, log_std

    def _clip_and_step(self, optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
        torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm, foreach=True)
        optimizer.step()

    def update(self, batch: dict) -> dict | None:
        """One MPO update; the metrics of the spec as floats, or None when skipped (non-finite)."""
        tensors = self._batch_tensors(batch)
        previous_targets = None
        if self.num_updates % self.target_networks_update_period == 0:
            previous_targets = self._sync_targets()

        # 1. Critic target and the E/M-step samples (no gradient).
        with torch.no_grad():
            if self.use_retrace:
                states = tensors["obs"][:, 0]
                q_obs, q_actions = states, tensors["actions_exec"][:, 0]
            else:
                states = tensors["next_obs"]
                q_obs, q_actions = tensors["obs"], tensors["actions_exec"]
            target_mean, target_log_std = self.policy_target(states)
            sampled_raw = _sample_gaussian(target_mean, target_log_std, self.action_samples)
            sampled_exec = self.policy_target._clip_to_env_bounds(sampled_raw)
            sampled_q = self.q_target.forward_sampled(states, sampled_exec)
            if self.use_retrace:
                q_target_value = self._retrace_q_target(tensors)
            else:  # Acme's reuse: the E-step samples at s' also give the bootstrap.
                not_terminal = 1.0 - tensors["terminated"]
                q_target_value = tensors["rewards"] + self.gamma * not_terminal * sampled_q.mean(dim=-1)

        # 2. Critic loss.
        q_pred = self.q(q_obs, q_actions).squeeze(-1)
        q_loss = F.mse_loss(q_pred, q_target_value)

        # 3. E-step.
        temperature = _dual_value(self.duals["temperature"])
        weights, temperature_loss = self._compute_weights_and_temperature_loss(
            sampled_q, self.kl_epsilon, temperature
        )
        policy_weights = weights
        dual_loss_terms = [temperature_loss]
        if self.penalize_actions:
            cost = -torch.linalg.vector_norm(sampled_raw - sampled_exec, dim=-1)
            penalty_weights, penalty_loss = self._compute_weights_and_temperature_loss(
                cost, self.epsilon_penalty, _dual_value(self.duals["penalty_temperature"])
            )
            policy_weights = weights + penalty_weights
            dual_loss_terms.append(penalty_loss)

        # 4. M-step losses and the KL duals.
        nll, kl_mean, kl_std, online_mean, online_log_std = self._policy_losses(
            states, sampled_raw, policy_weights, target_mean, target_log_std
        )
        alpha_mean = _dual_value(self.duals["alpha_mean"])
        alpha_std = _dual_value(self.duals["alpha_std"])
        alpha_loss = (alpha_mean * (self.mstep_kl_epsilon - kl_mean.detach())).sum() + (
            alpha_std * (self.mstep_kl_epsilon - kl_std.detach())
        ).sum()

        pre_step = {
            "loss/q": q_loss.detach(),
            "loss/temperature": temperature_loss.detach(),
            "loss/dual": alpha_loss.detach(),
            "kl/nonparametric": self._compute_nonparametric_kl_from_weights(weights).mean(),
            "kl/mean": kl_mean.detach().mean(),
            "kl/std": kl_std.detach().mean(),
            "q/mean": q_pred.detach().mean(),
            "q/min": q_pred.detach().min(),
            "q/max": q_pred.detach().max(),
            "q/target_mean": q_target_value.mean(),
            "q/sampled_min": sampled_q.min(),
            "q/sampled_max": sampled_q.max(),
            "policy/std_mean": online_log_std.detach().exp().mean(),
            "policy/entropy": diag_gaussian_entropy(online_log_std.detach()).mean(),
            "weights/entropy": _weights_entropy(weights).mean(),
            "loss/policy_nll": nll.detach(),
        }
        if self.penalize_actions:
            pre_step["loss/penalty_temperature"] = dual_loss_terms[1].detach()
        if not self._assert_finite_tensors({**tensors, **pre_step}):
            if previous_targets is not None:
                self._restore_targets(previous_targets)
            return None

        policy_before = torch.nn.utils.parameters_to_vector(self.policy.parameters()).detach().clone()

        # 2. Critic step.
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self._clip_and_step(self.q_optimizer, list(self.q.parameters()))

        # 5. Dual step, then projection of the raw duals.
        dual_params = list(self.duals.parameters())
        self.dual_optimizer.zero_grad(set_to_none=True)
        torch.stack(dual_loss_terms).sum().add(alpha_loss).backward()
        self._clip_and_step(self.dual_optimizer, dual_params)
        with torch.no_grad():
            for raw in dual_params:
                raw.clamp_(min=DUAL_RAW_MIN)

        # 6. Policy steps with the updated, detached alphas.
        alpha_mean = _dual_value(self.duals["alpha_mean"]).detach()
        alpha_std = _dual_value(self.duals["alpha_std"]).detach()
        policy_params = list(self.policy.parameters())
        for step in range(self.m_steps):
            if step > 0:
                nll, kl_mean, kl_std, _, _ = self._policy_losses(
                    states, sampled_raw, policy_weights, target_mean, target_log_std
                )
            policy_loss = nll + (alpha_mean * kl_mean).sum() + (alpha_std * kl_std).sum()
            if step == 0:
                first_policy_loss = policy_loss.detach()
            self.policy_optimizer.zero_grad(set_to_none=True)
            policy_loss.backward()
            self._clip_and_step(self.policy_optimizer, policy_params)

        # 7. Counter and metrics (one device read).
        self.num_updates += 1
        with torch.no_grad():
            policy_after = torch.nn.utils.parameters_to_vector(self.policy.parameters())
            post_step = {
                "loss/policy": first_policy_loss,
                "dual/temperature": _dual_value(self.duals["temperature"]),
                "dual/alpha_mean": alpha_mean.mean(),
                "dual/alpha_std": alpha_std.mean(),
                "policy/param_delta": torch.linalg.vector_norm(policy_after - policy_before),
            }
            if self.penalize_actions:
                post_step["dual/penalty_temperature"] = _dual_value(self.duals["penalty_temperature"])
            metrics = {**pre_step, **post_step}
            values = torch.stack([value.reshape(()) for value in metrics.values()]).cpu().tolist()
        return dict(zip(metrics.keys(), values, strict=True))

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """Networks, targets, optimisers, raw duals and the update counter (tensors and primitives)."""
        return {
            "policy": self.policy.state_dict(),
            "policy_target": self.policy_target.state_dict(),
            "q": self.q.state_dict(),
            "q_target": self.q_target.state_dict(),
            "duals": self.duals.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "dual_optimizer": self.dual_optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`. The optimisers keep their saved moments but take this agent's
        learning rates (and SGD momentum), so settings changed for a resumed run take effect."""
        self.policy.load_state_dict(state["policy"])
        self.policy_target.load_state_dict(state["policy_target"])
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.duals.load_state_dict(state["duals"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.dual_optimizer.load_state_dict(state["dual_optimizer"])
        self.num_updates = int(state["num_updates"])
        self._apply_optimizer_settings()

    def _apply_optimizer_settings(self) -> None:
        """Learning rates (and SGD momentum) of this agent on every optimiser's parameter groups."""
        rates = [
            (self.q_optimizer.param_groups, [self.q_lr]),
            (self.policy_optimizer.param_groups, [self.policy_lr / self.m_steps]),
            (self.dual_optimizer.param_groups, [self.temperature_lr, self.lambda_lr]),
        ]
        for groups, lrs in rates:
            for group, lr in zip(groups, lrs, strict=True):
                group["lr"] = lr
                if "momentum" in group:
                    group["momentum"] = self.sgd_momentum


def retrace_target(
    q_taken: torch.Tensor,
    next_value: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    traces: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Retrace target of the first step of each window; every input (B, L) -> (B,).

    Q_ret = Q_0 + sum_t gamma^t (prod_{i=1..t} c_i) (prod_{i<t} (1 - done_i)) delta_t,
    delta_t = r_t + gamma (1 - term_t) V(s'_t) - Q_t. ``traces`` holds c_t (c_0 is unused).
    """
    steps = q_taken.shape[1]
    deltas = rewards + gamma * (1.0 - terminated) * next_value - q_taken
    ones = torch.ones_like(traces[:, :1])
    trace_products = torch.cumprod(torch.cat([ones, traces[:, 1:]], dim=1), dim=1)
    alive = torch.cumprod(torch.cat([ones, 1.0 - dones[:, :-1]], dim=1), dim=1)
    discounts = gamma ** torch.arange(steps, device=q_taken.device, dtype=q_taken.dtype)
    return q_taken[:, 0] + (discounts * trace_products * alive * deltas).sum(dim=1)
