"""What the throughput harness needs to know about the machine: a label for the
results file, the peak FLOPS that MFU divides by, and peak memory per measurement
(GPU allocator peak, or the process's resident memory sampled on CPU)."""

from __future__ import annotations

import gc
import os
import re
import threading
from typing import Any

import torch

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), matched in order against the
# CUDA device name; the first match wins, so the PCIe H100 comes before the SXM one.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM / HBM3
    ("H200", 989.0),
    ("A100", 312.0),
)


def cuda() -> bool:
    return torch.cuda.is_available()


def device_name() -> str:
    return torch.cuda.get_device_name() if cuda() else "cpu"


def device_label() -> str:
    """A file-name-safe label: `cpu`, or the GPU name in lower case (nvidia-h100-80gb-hbm3)."""
    return re.sub(r"[^a-z0-9]+", "-", device_name().lower()).strip("-") or "unknown"


def peak_tflops(override: float | None) -> float | None:
    """--peak-tflops, else the table entry for this GPU, else None (CPU or unknown GPU)."""
    if override is not None:
        return override
    if not cuda():
        return None
    name = device_name()
    return next((value for key, value in PEAK_TFLOPS if key.lower() in name.lower()), None)


def synchronize() -> None:
    if cuda():
        torch.cuda.synchronize()


def _precision_switches() -> list[tuple[Any, str]]:
    """torch's TF32 switches: the fp32_precision API of torch >= 2.9 (global first, then per
    backend), else the legacy allow_tf32 flags. transformers >= 5 uses the new API where it
    exists, and reading a legacy flag after that raises, so the two are never mixed here."""
    backends = torch.backends
    if hasattr(backends, "fp32_precision"):
        owners = [
            backends,
            backends.cuda.matmul,
            backends.cudnn,
            getattr(backends.cudnn, "conv", None),
            getattr(backends.cudnn, "rnn", None),
        ]
        return [(owner, "fp32_precision") for owner in owners if owner is not None and hasattr(owner, "fp32_precision")]
    return [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]


class PrecisionFlags:
    """Snapshot of torch's process-wide TF32 switches. TrainingArguments(tf32=True) flips them
    for the whole process, so each configuration starts from the snapshot, not from whatever
    the previous one left behind."""

    def __init__(self) -> None:
        self.saved = [(owner, name, getattr(owner, name)) for owner, name in _precision_switches()]

    def restore(self) -> None:
        for owner, name, value in self.saved:
            setattr(owner, name, value)


def matmul_tf32() -> bool:
    """Whether fp32 CUDA matmuls currently run in TF32."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return matmul.fp32_precision == "tf32"
    return bool(matmul.allow_tf32)


def release_memory() -> None:
    """Free what the last row left behind, so the next row starts from empty memory."""
    gc.collect()
    if cuda():
        torch.cuda.empty_cache()


class MemoryMeter:
    """Peak memory over a `with` block: torch.cuda.max_memory_allocated on GPU; on CPU the
    highest resident set size seen by a 10 ms sampler (process-wide, libraries included)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.kind = "cuda_max_allocated" if cuda() else "cpu_rss_sampled"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryMeter:
        if cuda():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _rss_mb(self) -> float:
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:  # Linux fallback without psutil
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            self._stop.wait(0.01)

    def __exit__(self, *exc: Any) -> None:
        if cuda():
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb, self._rss_mb())


def cpu_bf16() -> bool:
    """Native CPU bf16 (AVX512-BF16/AMX): where `precision: auto` autocasts bf16 on CPU."""
    from reprotune.modeling.precision import cpu_bf16_support

    return cpu_bf16_support()[0]


def cpu_bf16_info() -> dict[str, Any]:
    from reprotune.modeling.precision import cpu_bf16_support

    native, why = cpu_bf16_support()
    return {"cpu_bf16": native, "cpu_bf16_detail": why}


def describe(peak_override: float | None) -> dict[str, Any]:
    """The device block of the results file."""
    import platform

    import transformers

    info: dict[str, Any] = {
        "name": device_name(),
        "label": device_label(),
        "cuda": cuda(),
        "peak_tflops": peak_tflops(peak_override),
        "peak_tflops_source": "flag" if peak_override is not None else ("table" if peak_tflops(None) else "n/a"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        **cpu_bf16_info(),
    }
    if cuda():
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["bf16"] = torch.cuda.is_bf16_supported()
        info["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return info
