"""LoRA through peft: the attention projections for `target_modules: auto`, every Linear
layer of the encoder for `all-linear`; refuse names that do not exist in the model, and
train the task head in full. Each adapter's dropout is folded into its A matrix, so the
backward pass keeps a 1-byte mask, not two float activations (bit-identical; issue 25)."""

from __future__ import annotations

from typing import Any

import torch

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import LoraTrainParams

# Attention query/key/value projections per architecture (model_type in config.json).
ATTENTION_PROJECTIONS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "camembert": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "mpnet": ["q", "k", "v"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj"],
    "modernbert": ["Wqkv"],
}


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last-name components of the model's Linear layers."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)})


def encoder_linear_modules(model: torch.nn.Module, head_modules: tuple[str, ...]) -> list[str]:
    """Full names of the model's Linear layers outside the task head: every attention
    projection, attention output, intermediate and output layer of every block. A layer
    under a head module (trained in full) or tied to the input embeddings (an MLM decoder)
    is left out."""
    output_embeddings = getattr(model, "get_output_embeddings", None)
    tied = output_embeddings() if callable(output_embeddings) else None
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module is not tied
        and not any(part in head_modules for part in name.split("."))
    ]


def attention_projections(model: torch.nn.Module, available: list[str]) -> list[str]:
    """The architecture's attention query/key/value projections (by model_type), or the Linear
    layers named like them."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    targets = ATTENTION_PROJECTIONS.get(model_type)
    if targets is None:
        targets = [name for name in available if any(key in name.lower() for key in ("query", "key", "value"))]
        if not targets:
            raise ReprotuneError(
                f"train_lora.target_modules: 'auto'/'attention' does not know model type '{model_type}'; "
                f"use all-linear or name them explicitly, from: {', '.join(available)}"
            )
    return targets


def resolve_target_modules(
    model: torch.nn.Module, requested: str | list[str], head_modules: tuple[str, ...]
) -> list[str]:
    """`attention` (what `auto` means): the query/key/value projections; `all-linear`: every
    Linear layer of the encoder, by full name; a list: checked against the model. Neither
    wins everywhere (README, LoRA at its best), so `auto` keeps the LoRA paper's choice."""
    available = [name for name in linear_module_names(model) if name not in head_modules]
    if requested == "all-linear":
        return encoder_linear_modules(model, head_modules)
    if requested in ("auto", "attention"):
        return attention_projections(model, available)
    missing = [name for name in requested if name not in available]
    if missing:
        raise ReprotuneError(
            f"train_lora.target_modules: '{missing[0]}' is not a Linear module of this model; "
            f"available: {', '.join(available)}"
        )
    return list(requested)


def apply_lora(
    model: torch.nn.Module,
    params: LoraTrainParams,
    task_type: str | None,
    head_modules: tuple[str, ...],
    section: str = "train_lora",
) -> Any:
    """Wrap the model in a peft LoRA model; the head is fully trained and saved with the adapter.
    A combination peft refuses (e.g. DoRA with `bias: lora_only`) is one error line."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    heads = [name for name in head_modules if name in present]
    if params.init_lora_weights in BASE_CHANGING_INITS and heads:
        raise ReprotuneError(
            f"{section}.init_lora_weights: {params.init_lora_weights} rewrites the base weights, and peft converts "
            "its adapter back for the unchanged base without the trained task head; use default or gaussian"
        )
    try:
        config = LoraConfig(
            task_type=task_type,
            r=params.r,
            lora_alpha=params.alpha,  # type: ignore[arg-type]  # peft annotates int, uses it as a float scale
            lora_dropout=params.dropout,
            bias=params.bias,
            target_modules=resolve_target_modules(model, params.target_modules, head_modules),
            modules_to_save=heads or None,
            use_rslora=params.use_rslora,
            use_dora=params.use_dora,
            init_lora_weights=True if params.init_lora_weights == "default" else params.init_lora_weights,
        )
        wrapped = get_peft_model(model, config)
    except (ValueError, NotImplementedError, TypeError) as exc:
        chosen = (
            f"use_dora={params.use_dora}, use_rslora={params.use_rslora}, "
            f"init_lora_weights={params.init_lora_weights}, bias={params.bias}"
        )
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReprotuneError(f"{section}: peft does not support this LoRA combination ({chosen}): {reason}") from exc
    lean_lora_dropout(wrapped)
    return wrapped


BASE_CHANGING_INITS = ("pissa", "olora")
"""Initialisations that rewrite the base weights; peft 0.21 converts such an adapter back to a
plain LoRA (path_initial_model_for_weight_conversion) without the fully trained head, so the
shipped model would lose its head: refused until peft keeps it."""


HEAD_MARKER = ".modules_to_save."
"""peft keeps the fully trained head's copy under this name component."""


def lora_optimizer(model: Any, params: LoraTrainParams, args: Any) -> Any | None:
    """The optimizer for LoRA+ (`loraplus_lr_ratio`: peft's create_loraplus_optimizer) and a
    separate head learning rate (`head_learning_rate`: the head's parameters move into their
    own groups); None when neither is set, so the Trainer builds its usual one."""
    if params.loraplus_lr_ratio is None and params.head_learning_rate is None:
        return None
    from transformers import Trainer
    from transformers.trainer_pt_utils import get_parameter_names

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {key: value for key, value in kwargs.items() if key != "lr"}
    if params.loraplus_lr_ratio is not None:
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(
            model,
            optimizer_cls,
            lr=params.learning_rate,
            loraplus_lr_ratio=params.loraplus_lr_ratio,
            loraplus_weight_decay=params.weight_decay,
            **kwargs,
        )
    else:
        decay = {name for name in get_parameter_names(model, [torch.nn.LayerNorm]) if "bias" not in name}
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for name, p in trainable if name in decay], "weight_decay": params.weight_decay},
            {"params": [p for name, p in trainable if name not in decay], "weight_decay": 0.0},
        ]
        optimizer = optimizer_cls(groups, lr=params.learning_rate, **kwargs)
    if params.head_learning_rate is not None:
        split_head_groups(model, optimizer, params.head_learning_rate)
    return optimizer


def split_head_groups(model: Any, optimizer: Any, head_lr: float) -> None:
    """Move the head's parameters out of each group into a twin group at `head_lr` (same
    weight decay); before the first step, so no optimizer state exists yet."""
    head = {id(p) for name, p in model.named_parameters() if HEAD_MARKER in f".{name}"}
    for group in list(optimizer.param_groups):
        moved = [p for p in group["params"] if id(p) in head]
        if not moved:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in head]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": moved, "lr": head_lr})
    optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]


class _DropoutThenA(torch.autograd.Function):
    """`lora_A(dropout(x))` that keeps a 1-byte mask for the backward pass instead of the
    float mask and the dropped-out input (8 bytes per element, per adapted layer), and keeps
    x in the dtype it arrived in: peft's cast to the adapter's fp32 happens here instead, so
    under bf16 autocast a bf16 activation is not kept a second time at twice the size. The
    backward pass rebuilds the same ops from the mask under the forward's autocast state and
    differentiates them, so values and gradients are bit-identical to peft's
    `lora_A(nn.Dropout(x.to(lora_A.weight.dtype)))`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        cast = x.to(weight.dtype)  # peft's input cast (lean_lora_dropout turns peft's own off)
        noise = torch.empty_like(cast).bernoulli_(1 - p)  # what aten's CPU dropout does, same RNG use
        noise.div_(1 - p)
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.p = p
        ctx.save_for_backward(x, weight, noise != 0)
        return torch.nn.functional.linear(cast * noise, weight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, mask = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        noise = mask.to(weight.dtype).div_(1 - ctx.p)
        inputs = [x.detach().requires_grad_(ctx.needs_input_grad[0]), weight.detach().requires_grad_(True)]
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            out = torch.nn.functional.linear(inputs[0].to(weight.dtype) * noise, inputs[1])
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad))
        return (next(grads) if ctx.needs_input_grad[0] else None), next(grads), None


class DropoutLoraA(torch.nn.Linear):
    """peft's lora_A Linear with the adapter's dropout and peft's input cast folded in (same
    parameters and state-dict keys); in eval mode, or without autograd, cast, plain dropout,
    then Linear."""

    dropout_p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout_p == 0:
            return super().forward(x.to(self.weight.dtype))
        if not torch.is_grad_enabled() or not self.weight.requires_grad:
            return super().forward(torch.nn.functional.dropout(x.to(self.weight.dtype), self.dropout_p, True))
        return _DropoutThenA.apply(x, self.weight, self.dropout_p)


def lean_lora_dropout(model: torch.nn.Module) -> int:
    """Fold each plain LoRA adapter's dropout into its A matrix (DropoutLoraA) and return
    how many were folded. peft's nn.Dropout keeps a float mask and the dropped-out copy of
    the input for every adapted layer: with dropout on q/k/v that is more activation memory
    than full fine-tuning's weight gradients. Where every adapter of a layer is folded, peft's
    cast of the input to the adapter's dtype is turned off for that layer: DropoutLoraA casts
    it itself and keeps the uncast input. DoRA and other variants keep peft's path."""
    from peft.tuners.lora import LoraLayer

    folded = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in list(module.lora_dropout.items()):
            lora_a = module.lora_A[name] if name in module.lora_A else None
            if (
                type(dropout) is not torch.nn.Dropout
                or dropout.p == 0
                or name in module.lora_variant
                or type(lora_a) is not torch.nn.Linear
                or lora_a.bias is not None
            ):
                continue
            lora_a.__class__ = DropoutLoraA
            lora_a.dropout_p = float(dropout.p)
            module.lora_dropout[name] = torch.nn.Identity()
            folded += 1
        if module.lora_A and all(isinstance(a, DropoutLoraA) for a in module.lora_A.values()):
            module.cast_input_dtype_enabled = False  # each DropoutLoraA casts its own input
    return folded
