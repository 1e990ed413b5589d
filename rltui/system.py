"""System metrics of a training process: its CPU use and memory, and its GPU's use and memory.

`SystemSampler.sample()` returns what can be measured here as "sys/..." metrics; what cannot (no
psutil, no NVIDIA GPU or driver, a CPU run) is simply absent, never an error. The engine adds a
sample to its UpdateMetrics at most once a second, so the values reach the run log, the charts and
the status bar like any other metric.

    sys/cpu_percent    the process's CPU use, percent of one core (2 busy cores: 200)
    sys/rss_mb         the process's resident memory, MiB
    sys/gpu_percent    the GPU's utilisation, percent (the device the run trains on)
    sys/gpu_mem_mb     the GPU memory in use, MiB (all processes on that GPU)
"""

from __future__ import annotations

import time
from typing import Any

SAMPLE_INTERVAL_S = 1.0
MIB = 1024 * 1024

CPU_PERCENT = "sys/cpu_percent"
RSS_MB = "sys/rss_mb"
GPU_PERCENT = "sys/gpu_percent"
GPU_MEM_MB = "sys/gpu_mem_mb"


class SystemSampler:
    """Samples this process (psutil) and, for a CUDA device, its GPU (NVML), at most once per
    `interval_s`. Every source that fails once is dropped for the rest of the run."""

    def __init__(self, device: str = "cpu", interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self._process = _process()
        self._gpu = _gpu_handle(device)

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def sample(self) -> dict[str, float]:
        """The metrics measurable now (possibly none)."""
        self._last = time.monotonic()
        metrics: dict[str, float] = {}
        if self._process is not None:
            try:
                metrics[CPU_PERCENT] = float(self._process.cpu_percent(None))
                metrics[RSS_MB] = self._process.memory_info().rss / MIB
            except Exception:  # noqa: BLE001 - a metric must never stop a run
                self._process = None
        if self._gpu is not None:
            try:
                import pynvml

                metrics[GPU_PERCENT] = float(pynvml.nvmlDeviceGetUtilizationRates(self._gpu).gpu)
                metrics[GPU_MEM_MB] = float(pynvml.nvmlDeviceGetMemoryInfo(self._gpu).used) / MIB
            except Exception:  # noqa: BLE001
                self._gpu = None
        return metrics


def _process() -> Any:
    try:
        import psutil

        process = psutil.Process()
        process.cpu_percent(None)  # the first call only sets the baseline
        return process
    except Exception:  # noqa: BLE001 - no psutil (or no /proc): no CPU and memory fields
        return None


def _gpu_handle(device: str) -> Any:
    """The NVML handle of the CUDA device `device` names ("cuda", "cuda:1"), None if not CUDA or
    NVML is missing. Found by UUID: torch's indices follow CUDA_VISIBLE_DEVICES, NVML's do not."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
        import torch

        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        pynvml.nvmlInit()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - no nvidia-ml-py, no driver, no such GPU: no GPU fields
        return None
