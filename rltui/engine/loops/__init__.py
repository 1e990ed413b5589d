"""The training loops, one per algorithm (`LOOPS[preset.algo]`)."""

from __future__ import annotations

from rltui.engine.loops.base import Counters, Loop, LoopContext
from rltui.engine.loops.mpo import MPOLoop
from rltui.engine.loops.trpo import TRPOLoop

LOOPS: dict[str, type[Loop]] = {loop.algo: loop for loop in (MPOLoop, TRPOLoop)}

__all__ = ["LOOPS", "Counters", "Loop", "LoopContext"]
