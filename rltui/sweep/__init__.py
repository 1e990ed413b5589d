"""Sweeps on Ray Tune (`rltui sweep`, the `sweep` extra): many seeds and settings of one preset.

    <saves>/<sweep name>/
        sweep-plan.json        the base preset, the options and every trial (plan.py)
        <trial name>/          one ordinary run directory per (setting, seed), e.g.
                               policy_lr=0.0003,seed=0/ (preset.toml, metrics.jsonl, checkpoints/,
                               run.json whose `sweep` says what the trial records about its sweep)
        tune/                  Ray Tune's experiment state (what `--resume` restores)
        results.md, results.json   per setting: final and best evaluation return over seeds (results.py)

`plan` (options, trials; no Ray), `trial` (the Tune trainable: one Engine run), `driver` (Ray and
Tune), `progress` (the live view), `results` (the table). Only `driver` imports Ray at import time.
"""
