"""`--pack DIR`: everything the harness reads from outside the repository, in one folder a
GPU session can carry (the device machine sees neither ../shared/data nor this machine's
packages). The default encoder is stored in fp16 (half the bytes, under the 64 MiB a call
carries) with `dtype: float32` in its config, so from_pretrained loads it as fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from throughput_align import SQUAD, WIKIANN

from reprotune.core.assets import resolve_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def copy_tokenizer(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def half_model(source: Path, target: Path) -> None:
    """fp16 weights, fp32 on load: the rounding (~1e-3 relative) touches both training paths alike."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(source / "model.safetensors"))
    save_file(
        {name: t.half().contiguous() if t.is_floating_point() else t for name, t in weights.items()},
        str(target / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config["torch_dtype"] = "float32"
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def pack(target: Path, data_dir: Path, mlm_text: Path | None, model_ref: str | None) -> dict[str, int]:
    """Write data/ (WikiANN-en, the SQuAD train subset), bbcnews/, tokenizer/ and model/; return bytes per part."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "data" / WIKIANN).mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        shutil.copy(data_dir / WIKIANN / split, target / "data" / WIKIANN / split)
    (target / "data" / SQUAD).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data_dir / SQUAD, target / "data" / SQUAD)
    if mlm_text is not None and mlm_text.is_dir():
        shutil.copytree(mlm_text, target / "bbcnews", dirs_exist_ok=True)
    if model_ref is not None:
        source = resolve_path(model_ref, "model directory")
        copy_tokenizer(source, target / "tokenizer")
        copy_tokenizer(source, target / "model")
        half_model(source, target / "model")
    return {
        part.name: sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
        for part in sorted(target.iterdir())
        if part.is_dir()
    }
