"""The TRPO public API matches the seed API document (module `trainers.trpo.agent`) exactly:
every function, class and method, with the same parameter names, order, defaults and annotations.
The expected signatures are copied here so that the repository does not depend on ../shared."""

from __future__ import annotations

import inspect

import pytest

import agents.trpo as trpo

EXPECTED_FUNCTIONS = {
    "_flat_params": "(module: nn.Module) -> torch.Tensor",
    "_set_flat_params": "(module: nn.Module, flat_params: torch.Tensor) -> None",
    "_flat_grads": (
        "(grads: tuple[torch.Tensor | None, ...], params: tuple[nn.Parameter, ...]) -> torch.Tensor"
    ),
    "_conjugate_gradient": "(Avp, b: torch.Tensor, nsteps: int, residual_tol: float = 1e-10) -> torch.Tensor",
    "_kl_old_to_new": (
        "(old_mean: torch.Tensor, old_log_std: torch.Tensor, new_mean: torch.Tensor, "
        "new_log_std: torch.Tensor) -> torch.Tensor"
    ),
}

EXPECTED_TRPO_METHODS = {
    "__init__": (
        "(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray, "
        "device: torch.device, policy_layer_sizes: Tuple[int, ...], critic_layer_sizes: Tuple[int, ...], "
        "gamma: float = 0.99, gae_lambda: float = 0.95, target_kl: float = 0.01, cg_iters: int = 10, "
        "cg_damping: float = 0.1, backtrack_coeff: float = 0.8, backtrack_iters: int = 10, "
        "value_lr: float = 0.0003, value_epochs: int = 10, value_minibatch_size: int = 256, "
        "max_grad_norm: float = 0.5, normalize_advantages: bool = True, optimizer_type: str = 'adam', "
        "sgd_momentum: float = 0.9)"
    ),
    "_build_value_optimizer": "(self, params) -> torch.optim.Optimizer",
    "act": (
        "(self, obs: torch.Tensor, deterministic: bool = False) "
        "-> tuple[torch.Tensor, torch.Tensor, torch.Tensor]"
    ),
    "_policy_objective": (
        "(self, obs: torch.Tensor, actions: torch.Tensor, old_log_probs: torch.Tensor, "
        "advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]"
    ),
    "update": "(self, batch: dict[str, torch.Tensor]) -> dict[str, float]",
}


def render_signature(function: object) -> str:
    """The signature in the seed document's style: source-text annotations, repr() defaults."""
    signature = inspect.signature(function)
    parts = []
    for parameter in signature.parameters.values():
        text = parameter.name
        if parameter.annotation is not inspect.Parameter.empty:
            text += f": {parameter.annotation}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    rendered = f"({', '.join(parts)})"
    if signature.return_annotation is not inspect.Signature.empty:
        rendered += f" -> {signature.return_annotation}"
    return rendered


@pytest.mark.parametrize("name", sorted(EXPECTED_FUNCTIONS))
def test_function_signature(name: str) -> None:
    function = getattr(trpo, name)
    assert inspect.isfunction(function)
    assert render_signature(function) == EXPECTED_FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_TRPO_METHODS))
def test_trpo_agent_method_signature(name: str) -> None:
    assert inspect.isclass(trpo.TRPOAgent)
    method = trpo.TRPOAgent.__dict__[name]
    assert inspect.isfunction(method)
    assert render_signature(method) == EXPECTED_TRPO_METHODS[name]


def test_public_extras_used_by_the_engine() -> None:
    """Agreed in the team plan beside the seed API: GAE, the update counter and checkpoints."""
    assert render_signature(trpo.compute_gae) == (
        "(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, "
        "dones: np.ndarray, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]"
    )
    for name in ("state_dict", "load_state_dict"):
        assert inspect.isfunction(trpo.TRPOAgent.__dict__[name])
