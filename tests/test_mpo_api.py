"""Pins the public API of agents/mpo.py to the seed document (trainers.mpo.agent).

Every signature below is copied from the seed; the test compares parameter names, kinds,
defaults and annotations (as written), and the return annotation.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from agents import mpo

SEED_SIGNATURES: list[tuple[str, str]] = [
    ('LayerNormMLP', 'def __init__(self, in_dim: int, layer_sizes: Tuple[int, ...], activate_final: bool = False)'),
    ('LayerNormMLP', 'def forward(self, x: torch.Tensor) -> torch.Tensor'),
    ('SmallInitLinear', 'def __init__(self, in_features: int, out_features: int, std: float = 0.01)'),
    ('Critic', 'def __init__(self, obs_dim: int, act_dim: int, layer_sizes: Tuple[int, ...], action_low: np.ndarray, action_high: np.ndarray)'),
    ('Critic', 'def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor'),
    ('DiagonalGaussianPolicy', 'def __init__(self, obs_dim: int, act_dim: int, layer_sizes: Tuple[int, ...], action_low: np.ndarray | None = None, action_high: np.ndarray | None = None)'),
    ('DiagonalGaussianPolicy', 'def forward(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]'),
    ('DiagonalGaussianPolicy', 'def forward_with_features(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]'),
    ('DiagonalGaussianPolicy', 'def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, actions_raw: torch.Tensor) -> torch.Tensor'),
    ('DiagonalGaussianPolicy', 'def _clip_to_env_bounds(self, actions_raw: torch.Tensor) -> torch.Tensor'),
    ('DiagonalGaussianPolicy', 'def sample_action_raw_and_exec(self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, **kwargs) -> tuple[torch.Tensor, torch.Tensor]'),
    ('DiagonalGaussianPolicy', 'def sample_action(self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, **kwargs) -> torch.Tensor'),
    ('DiagonalGaussianPolicy', 'def sample_actions_raw_and_exec(self, obs: torch.Tensor, num_actions: int) -> tuple[torch.Tensor, torch.Tensor]'),
    ('DiagonalGaussianPolicy', 'def sample_actions(self, obs: torch.Tensor, num_actions: int) -> torch.Tensor'),
    ('DiagonalGaussianPolicy', 'def head_parameters(self)'),
    ('MPOAgent', "def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray, device: torch.device, policy_layer_sizes: Tuple[int, ...], critic_layer_sizes: Tuple[int, ...], gamma: float = 0.99, target_networks_update_period: int = 100, policy_lr: float = 0.0003, q_lr: float = 0.0003, kl_epsilon: float = 0.1, mstep_kl_epsilon: float = 0.1, temperature_init: float = 1.0, temperature_lr: float = 0.0003, lambda_init: float = 1.0, lambda_lr: float = 0.0003, epsilon_penalty: float = 0.001, max_grad_norm: float = 1.0, action_samples: int = 20, use_retrace: bool = False, retrace_steps: int = 2, retrace_mc_actions: int = 8, retrace_lambda: float = 0.95, optimizer_type: str = 'adam', sgd_momentum: float = 0.9, init_log_alpha_mean: float = 10.0, init_log_alpha_stddev: float = 1000.0, m_steps: int = 1)"),
    ('MPOAgent', 'def _build_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer'),
    ('MPOAgent', 'def _kl_diag_gaussian_per_dim(self, mean_p, log_std_p, mean_q, log_std_q)'),
    ('MPOAgent', 'def _compute_weights_and_temperature_loss(self, q_values: torch.Tensor, epsilon: float, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]'),
    ('MPOAgent', 'def _compute_nonparametric_kl_from_weights(self, weights: torch.Tensor) -> torch.Tensor'),
    ('MPOAgent', 'def _to_device_tensor(self, value: np.ndarray | torch.Tensor) -> torch.Tensor'),
    ('MPOAgent', 'def _assert_finite_tensors(self, tensors: dict[str, torch.Tensor]) -> bool'),
    ('MPOAgent', 'def act_with_logp(self, obs: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, float]'),
    ('MPOAgent', 'def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray'),
    ('MPOAgent', 'def _expected_q_current(self, obs: torch.Tensor) -> torch.Tensor'),
    ('MPOAgent', 'def _retrace_q_target(self, batch: dict) -> torch.Tensor'),
    ('MPOAgent', 'def update(self, batch: dict) -> dict | None'),
]

# Where we deliberately differ from the seed's annotation (names, parameters and defaults never):
# act_with_logp returns a float log-prob for one observation but an (n,) array for a batch, which
# the seed's `float` does not say (and mypy flags).
CORRECTED_RETURNS = {
    ("MPOAgent", "act_with_logp"): "tuple[np.ndarray, np.ndarray, float | np.ndarray]",
}

SEED_BASES = {
    "LayerNormMLP": "Module",
    "SmallInitLinear": "Linear",
    "Critic": "Module",
    "DiagonalGaussianPolicy": "Module",
}


def _normalise(annotation: str | None) -> str | None:
    if annotation is None:
        return None
    return ast.unparse(ast.parse(annotation, mode="eval"))


def _expected(signature_line: str) -> tuple[str, list[tuple[str, str, str | None, str | None]], str | None]:
    """(name, [(param, kind, default source, annotation source)], return annotation) of a def line."""
    function = ast.parse(signature_line + ": pass").body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args
    positional = args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [
        (arg.arg, "POSITIONAL_OR_KEYWORD", None if default is None else ast.unparse(default),
         None if arg.annotation is None else ast.unparse(arg.annotation))
        for arg, default in zip(positional, defaults, strict=True)
    ]
    if args.kwarg is not None:
        params.append((args.kwarg.arg, "VAR_KEYWORD", None, None))
    returns = None if function.returns is None else ast.unparse(function.returns)
    return function.name, params, returns


def _actual(function) -> tuple[list[tuple[str, str, str | None, str | None]], str | None]:
    signature = inspect.signature(function)
    params = []
    for parameter in signature.parameters.values():
        default = None if parameter.default is inspect.Parameter.empty else ast.unparse(
            ast.parse(repr(parameter.default), mode="eval")
        )
        annotation = None if parameter.annotation is inspect.Parameter.empty else _normalise(parameter.annotation)
        params.append((parameter.name, parameter.kind.name, default, annotation))
    returns = None if signature.return_annotation is inspect.Signature.empty else _normalise(
        signature.return_annotation
    )
    return params, returns


@pytest.mark.parametrize(("class_name", "signature_line"), SEED_SIGNATURES)
def test_signature_matches_seed(class_name: str, signature_line: str) -> None:
    name, expected_params, expected_returns = _expected(signature_line)
    cls = getattr(mpo, class_name)
    assert name in vars(cls), f"{class_name}.{name} is missing"
    params, returns = _actual(getattr(cls, name))
    # Annotations are compared where the seed gives one; defaults and names always.
    assert [p[:3] for p in params] == [p[:3] for p in expected_params]
    for (param, _, _, annotation), (_, _, _, expected_annotation) in zip(params, expected_params, strict=True):
        if expected_annotation is not None:
            assert annotation == expected_annotation, f"{class_name}.{name}({param}) annotation"
    assert returns == CORRECTED_RETURNS.get((class_name, name), expected_returns)


@pytest.mark.parametrize(("class_name", "base_name"), sorted(SEED_BASES.items()))
def test_base_classes(class_name: str, base_name: str) -> None:
    assert getattr(mpo, class_name).__bases__[0].__name__ == base_name


def test_every_seed_class_exists() -> None:
    assert {class_name for class_name, _ in SEED_SIGNATURES} == {*SEED_BASES, "MPOAgent"}
