"""The model with its task head as ONNX (torch.onnx.export, TorchScript exporter), and
int8 dynamic quantization of that file with onnxruntime.

`optimum` is not used: its exporters lag transformers 5. The TorchScript exporter needs
no extra package; its pitfalls are handled here: the wrapper is put in eval mode (the
exporter restores the wrapper's mode on every submodule afterwards), and the example
input is padded so the attention mask stays a graph input rather than a folded constant."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from reprotune.core.errors import ReprotuneError

HEAD_OUTPUTS = {
    "ForTokenClassification": ("logits",),
    "ForSequenceClassification": ("logits",),
    "ForQuestionAnswering": ("start_logits", "end_logits"),
    "ForMaskedLM": ("logits",),
}
"""Outputs per head, by the suffix of the transformers class name."""
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def output_names(model: Any) -> tuple[str, ...]:
    name = type(model).__name__
    for suffix, outputs in HEAD_OUTPUTS.items():
        if name.endswith(suffix):
            return outputs
    raise ReprotuneError(f"export: {name} has no known task head; exportable heads: {', '.join(sorted(HEAD_OUTPUTS))}")


def input_names(model: Any, tokenizer: Any) -> tuple[str, ...]:
    """The text inputs the tokenizer produces and the model's forward accepts."""
    accepted = set(inspect.signature(model.forward).parameters)
    produced = set(getattr(tokenizer, "model_input_names", TEXT_INPUTS))
    names = tuple(name for name in TEXT_INPUTS if name in accepted and name in produced)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ReprotuneError(f"export: the model must take input_ids and attention_mask (takes: {', '.join(names)})")
    return names


class _Traced(torch.nn.Module):
    """Positional inputs in, a tuple of head outputs out: what the exporter traces."""

    def __init__(self, model: Any, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs, self.outputs = model, inputs, outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(**dict(zip(self.inputs, tensors)), return_dict=True)
        return tuple(result[name] for name in self.outputs)


def example_inputs(tokenizer: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Two texts of different length, padded: row 0 carries padding."""
    texts = ["a short text", "a somewhat longer example sentence, so that the first one is padded"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    if int(encoded["attention_mask"].sum()) == encoded["attention_mask"].numel():
        raise ReprotuneError("export: the tokenizer does not pad; set a pad token")
    return tuple(encoded[name] for name in names)


@contextlib.contextmanager
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)


def export_onnx(model: Any, tokenizer: Any, target: Path, opset: int = 17) -> dict[str, Any]:
    """Write `target` (model.onnx) with dynamic batch and sequence axes; return its signature."""
    import onnx

    model = model.to("cpu").eval()
    inputs, outputs = input_names(model, tokenizer), output_names(model)
    traced = _Traced(model, inputs, outputs).eval()
    axes = {name: {0: "batch", 1: "sequence"} for name in (*inputs, *outputs)}
    if type(model).__name__.endswith("ForSequenceClassification"):
        axes["logits"] = {0: "batch"}
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(
                traced,
                example_inputs(tokenizer, inputs),
                str(target),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except ReprotuneError:
        raise
    except Exception as exc:  # the exporter raises many types; one line is what the user needs
        raise ReprotuneError(
            f"export: torch.onnx.export failed for {type(model).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    model.eval()
    onnx.checker.check_model(str(target))
    return {"inputs": list(inputs), "outputs": list(outputs), "opset": opset}


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target
