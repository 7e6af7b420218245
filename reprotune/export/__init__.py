"""Ship a trained model: merge LoRA, export to ONNX (optionally int8), check parity with
PyTorch, measure size and CPU latency, write a Hub model card, push to the Hub (opt-in),
and run the ONNX model behind `predict` and `reprotune-serve`.

One module per job, so the export stage's deps list exactly what it runs:

| module       | job                                                        |
| ------------ | ---------------------------------------------------------- |
| `params.py`  | `ExportParams`, the `tasks.<name>.export` section          |
| `outputs.py` | where the stage writes; the note when `export.enabled` is false |
| `merge.py`   | LoRA merged into the base (`merge_and_unload`), safetensors |
| `onnx.py`    | `torch.onnx.export` with the task head; int8 quantization  |
| `runtime.py` | `OnnxModel`: an onnxruntime session that families call like a model |
| `parity.py`  | PyTorch vs ONNX (and int8) on the test features            |
| `latency.py` | size on disk, CPU p50/p95 per example, batched throughput  |
| `card.py`    | README.md model card with Hub YAML metadata                |
| `push.py`    | opt-in `push_to_hub` through huggingface_hub               |
"""
