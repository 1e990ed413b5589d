"""The training engine: the shell (`Engine`, commands, evaluations, checkpoints, events) and one
training loop per algorithm (`rltui.engine.loops`). See `rltui.engine.shell`."""

from rltui.engine.shell import Engine, build_agent, make_policy

__all__ = ["Engine", "build_agent", "make_policy"]
