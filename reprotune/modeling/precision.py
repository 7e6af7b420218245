"""One precision decision for training, evaluation and predict.

`auto` means bf16 on GPUs that have it, fp16 on older GPUs, bf16 autocast on CPUs with
native bf16 (AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on ARM), fp32 elsewhere.
Native support is read from the CPU's feature flags, never guessed from the vendor: a
CPU without it emulates bf16 and runs slower than fp32, so `bf16` is refused there."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from reprotune.core.errors import ReprotuneError

CHOICES = ("auto", "fp32", "bf16", "fp16")
# Flags that mean bf16 matmuls in hardware: x86 (torch names = /proc/cpuinfo names), ARM.
X86_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
ARM_BF16_FLAGS = ("bf16", "sve_bf16")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Resolved:
    """What a precision setting means on this machine."""

    dtype: str  # fp32 | bf16 | fp16
    device: str  # cpu | cuda
    cpu_bf16: bool  # this CPU has native bf16, whatever was chosen
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    def autocast(self) -> AbstractContextManager:
        """The autocast context for this resolution; a no-op in fp32."""
        if self.dtype == "fp32":
            return nullcontext()
        return torch.autocast(self.device, dtype=self.torch_dtype)

    def trainer_flags(self) -> dict[str, bool]:
        """The HF TrainingArguments switches (bf16 on CPU autocasts via accelerate)."""
        return {"bf16": self.dtype == "bf16", "fp16": self.dtype == "fp16"}

    def info(self, prefix: str = "") -> dict[str, str | bool]:
        """Keys for the metrics/cost JSON, so a `dvc metrics diff` across machines explains itself."""
        return {f"{prefix}precision": self.dtype, f"{prefix}device": self.device, f"{prefix}cpu_bf16": self.cpu_bf16}


def _cpuinfo_flags() -> set[str]:
    """The `flags` (x86) / `Features` (ARM) words of /proc/cpuinfo; empty off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    words: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            words.update(value.split())
    return words


@lru_cache(maxsize=1)
def cpu_bf16_support() -> tuple[bool, str]:
    """(native bf16?, the flag that says so or why not). Prefers torch's own CPU feature
    probe (`torch.cpu.get_capabilities`, torch >= 2.10, cpuinfo-based, any OS); falls back
    to /proc/cpuinfo flags. bf16 autocast on CPU runs oneDNN kernels, so it needs mkldnn."""
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build lacks oneDNN (mkldnn), which CPU bf16 kernels need"
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        caps = dict(capabilities())
        source = "torch.cpu.get_capabilities"
    else:
        caps = {flag: True for flag in _cpuinfo_flags()}
        source = "/proc/cpuinfo"
        if not caps:
            return False, f"no CPU feature probe on {sys.platform} (torch {torch.__version__} lacks get_capabilities)"
    arm = str(caps.get("architecture", "")).lower() in ("aarch64", "arm64") or ("asimd" in caps and "avx" not in caps)
    flags = ARM_BF16_FLAGS if arm else X86_BF16_FLAGS
    found = [flag for flag in flags if caps.get(flag)]
    if found:
        return True, f"{found[0]} ({source})"
    return False, f"no {'/'.join(flags)} ({source})"


def _cuda_bf16() -> bool:
    return bool(torch.cuda.is_bf16_supported())


def resolve(precision: str, where: str) -> Resolved:
    """Resolve a `precision` param (named `where`, e.g. tasks.t.train_full.precision)."""
    if precision not in CHOICES:
        raise ReprotuneError(f"{where}: unknown precision '{precision}'; allowed: {', '.join(CHOICES)}")
    cpu_bf16, why = cpu_bf16_support()
    if torch.cuda.is_available():
        if precision == "fp32":
            return Resolved("fp32", "cuda", cpu_bf16, "fp32 asked")
        if precision == "auto":
            dtype = "bf16" if _cuda_bf16() else "fp16"
            return Resolved(dtype, "cuda", cpu_bf16, f"auto: GPU {'has' if dtype == 'bf16' else 'lacks'} bf16")
        return Resolved(precision, "cuda", cpu_bf16, f"{precision} asked")
    if precision == "fp16":
        raise ReprotuneError(
            f"{where}: 'fp16' needs a GPU; on CPU use 'auto', 'fp32' or 'bf16' (CPUs with native bf16)"
        )
    if precision == "bf16" and not cpu_bf16:
        raise ReprotuneError(
            f"{where}: 'bf16' needs a GPU or a CPU with native bf16 (AVX512-BF16/AMX), and this CPU has {why}; "
            "use 'auto' or 'fp32'"
        )
    if precision == "fp32":
        return Resolved("fp32", "cpu", cpu_bf16, "fp32 asked")
    if precision == "bf16":
        return Resolved("bf16", "cpu", True, f"bf16 asked; CPU has {why}")
    if cpu_bf16:
        return Resolved("bf16", "cpu", True, f"auto: CPU has native bf16, {why}")
    return Resolved("fp32", "cpu", False, f"auto: CPU lacks native bf16, {why}")


def frozen_linear_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The frozen floating-point parameters that only Linear layers use: what autocast casts
    to the low-precision dtype in every forward pass. A parameter also used by another kind
    of module (an MLM decoder tied to the input embeddings) is left out, since the embedding
    lookup and LayerNorm run in the parameter's own dtype."""
    linear: dict[int, torch.nn.Parameter] = {}
    elsewhere: set[int] = set()
    for module in model.modules():
        owned = module.named_parameters(recurse=False, remove_duplicate=False)
        for _, param in owned:
            if isinstance(module, torch.nn.Linear):
                linear[id(param)] = param
            else:
                elsewhere.add(id(param))
    return [
        param
        for key, param in linear.items()
        if key not in elsewhere and not param.requires_grad and param.dtype == torch.float32
    ]


def store_frozen_in_autocast_dtype(model: torch.nn.Module, resolved: Resolved) -> int:
    """Under bf16/fp16 autocast, keep the frozen Linear weights (LoRA's base model) in that
    dtype and return how many elements changed. Autocast re-casts a frozen fp32 weight in
    every forward pass (it caches casts only for tensors that require grad) and keeps the
    copy for the backward pass; casting once gives the same bf16 values, so results are
    bit-identical while each step skips the casts and the model holds half the bytes.
    Trained parameters (adapters, the head, `bias: all` biases) stay fp32."""
    if resolved.dtype == "fp32":
        return 0
    changed = 0
    for param in frozen_linear_weights(model):
        param.data = param.data.to(resolved.torch_dtype)
        changed += param.numel()
    return changed


def pad_multiple() -> int | None:
    """Batches padded to a multiple of 8 on CUDA (tensor cores want it); on CPU, no padding
    beyond the longest row."""
    return 8 if torch.cuda.is_available() else None
