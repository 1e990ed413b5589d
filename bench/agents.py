"""Speed of the agents' updates (a benchmark, not a test).

MPO: updates/s of ``MPOAgent.update`` for the two configurations of issue 2 and for the
pendulum-mpo preset's networks (issue 12), next to the FLOP
ceiling measured in the same run (GFLOP/s of a matrix product with the critic's largest layer
shape, divided by the FLOPs one update needs). TRPO: seconds per update on a 2048-sample batch.

    .venv/bin/python bench/agents.py [--device cpu|cuda] [--threads 1] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.mpo import MPOAgent  # noqa: E402


@dataclass(frozen=True)
class MPOCase:
    name: str
    obs_dim: int
    act_dim: int
    action_samples: int
    layer_sizes: tuple[int, ...]
    batch_size: int
    goal_updates_per_s: float | None


MPO_CASES = (
    MPOCase("(a) obs 3, act 1, N 20, (256, 256)", 3, 1, 20, (256, 256), 256, 42.0),
    MPOCase("(b) obs 17, act 6, N 64, (512, 256)", 17, 6, 64, (512, 256), 256, 7.5),
    MPOCase("(c) pendulum-mpo: obs 3, act 1, N 20, (64, 64)", 3, 1, 20, (64, 64), 256, None),
)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mlp_flops(rows: int, sizes: list[int]) -> float:
    """Multiply-adds of a stack of Linear layers, counted as 2 FLOPs each."""
    return 2.0 * rows * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def mpo_update_flops(case: MPOCase) -> float:
    """Matrix-product FLOPs of one update (backward counted as twice the forward)."""
    critic = [case.obs_dim + case.act_dim, *case.layer_sizes, 1]
    policy = [case.obs_dim, *case.layer_sizes, 2 * case.act_dim]
    batch, samples = case.batch_size, case.action_samples
    target_critic = mlp_flops(batch * samples, critic)
    critic_train = 3.0 * mlp_flops(batch, critic)
    target_policy = mlp_flops(batch, policy)
    policy_train = 3.0 * mlp_flops(batch, policy)
    return target_critic + critic_train + target_policy + policy_train


def matmul_gflops(rows: int, in_dim: int, out_dim: int, device: torch.device, seconds: float) -> float:
    """Sustained GFLOP/s of (rows, in_dim) @ (in_dim, out_dim) into a preallocated output."""
    left = torch.randn(rows, in_dim, device=device)
    right = torch.randn(in_dim, out_dim, device=device)
    out = torch.empty(rows, out_dim, device=device)
    torch.mm(left, right, out=out)
    synchronize(device)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(left, right, out=out)
        repeats += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    return 2.0 * rows * in_dim * out_dim * repeats / elapsed / 1e9


def mpo_batch(case: MPOCase, rng: np.random.Generator) -> dict[str, np.ndarray]:
    batch, obs_dim, act_dim = case.batch_size, case.obs_dim, case.act_dim
    actions = rng.uniform(-1.0, 1.0, (batch, act_dim)).astype(np.float32)
    return {
        "obs": rng.standard_normal((batch, obs_dim)).astype(np.float32),
        "actions_exec": actions,
        "actions_raw": actions,
        "rewards": rng.standard_normal(batch).astype(np.float32),
        "next_obs": rng.standard_normal((batch, obs_dim)).astype(np.float32),
        "terminated": (rng.uniform(size=batch) < 0.01).astype(np.float32),
    }


def bench_mpo(case: MPOCase, device: torch.device, seconds: float) -> None:
    rng = np.random.default_rng(0)
    agent = MPOAgent(
        case.obs_dim,
        case.act_dim,
        -np.ones(case.act_dim, dtype=np.float32),
        np.ones(case.act_dim, dtype=np.float32),
        device,
        case.layer_sizes,
        case.layer_sizes,
        action_samples=case.action_samples,
    )
    batches = [mpo_batch(case, rng) for _ in range(8)]
    for batch in batches[:3]:
        agent.update(batch)
    synchronize(device)
    updates, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        agent.update(batches[updates % len(batches)])
        updates += 1
    synchronize(device)
    rate = updates / (time.perf_counter() - start)

    biggest = max(zip(case.layer_sizes[:-1], case.layer_sizes[1:], strict=True), key=lambda shape: shape[0] * shape[1])
    gflops = matmul_gflops(case.batch_size * case.action_samples, *biggest, device, min(seconds, 3.0))
    flops = mpo_update_flops(case)
    ceiling = gflops * 1e9 / flops
    print(
        f"MPO {case.name}, batch {case.batch_size}: {rate:.1f} updates/s"
        f"{'' if case.goal_updates_per_s is None else f' (goal {case.goal_updates_per_s})'}; "
        f"ceiling {ceiling:.1f} updates/s = {gflops:.1f} GFLOP/s / {flops / 1e9:.2f} GFLOP per update; "
        f"ratio {rate / ceiling:.2f}"
    )


def bench_trpo(device: torch.device, seconds: float) -> None:
    try:
        from agents.trpo import TRPOAgent
    except ImportError as error:
        print(f"TRPO: skipped ({error})")
        return
    obs_dim, act_dim, samples = 3, 1, 2048
    agent = TRPOAgent(
        obs_dim,
        act_dim,
        -np.ones(act_dim, dtype=np.float32),
        np.ones(act_dim, dtype=np.float32),
        device,
        (64, 64),
        (64, 64),
    )
    obs = torch.randn(samples, obs_dim, device=device)
    with torch.no_grad():
        actions, log_probs, _ = agent.act(obs, False)
    batch = {
        "obs": obs,
        "actions": actions,
        "log_probs": log_probs.reshape(-1),
        "returns": torch.randn(samples, device=device),
        "advantages": torch.randn(samples, device=device),
    }
    agent.update(batch)
    synchronize(device)
    updates, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or updates < 3:
        agent.update(batch)
        updates += 1
    synchronize(device)
    per_update = (time.perf_counter() - start) / updates
    print(f"TRPO 2048 samples, (64, 64): {per_update:.3f} s per update ({updates} updates)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per figure")
    parser.add_argument("--only", choices=["a", "b", "c", "trpo"], action="append", help="run only these figures")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/agents.py: --device cuda: no CUDA device is available", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s)")
    selected = set(args.only or ["a", "b", "c", "trpo"])
    for key, case in zip("abc", MPO_CASES, strict=True):
        if key in selected:
            bench_mpo(case, device, args.seconds)
    if "trpo" in selected:
        bench_trpo(device, args.seconds)


if __name__ == "__main__":
    main()
