"""Opt-in upload of the card and the chosen artifacts to the Hugging Face Hub
(`export.push_to_hub: user/name`). Never on by default; without huggingface_hub,
network access or a token it fails with one line saying which."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reprotune.core.errors import ReprotuneError

ARTIFACT_PATTERNS = {
    "model": [
        "config.json",
        "*.safetensors",
        "tokenizer*",
        "special_tokens_map.json",
        "vocab.*",
        "merges.txt",
        "*.model",
        "reprotune.json",
    ],
    "onnx": ["onnx/model.onnx", "onnx/model.onnx.data"],
    "int8": ["onnx/model_int8.onnx"],
}


def push(
    export_dir: Path, repo_id: str, artifacts: list[str], private: bool = True, token: str | None = None
) -> dict[str, Any]:
    """Upload README.md and the artifacts' files; return the repo URL and what went up."""
    try:
        from huggingface_hub import HfApi, get_token
    except ImportError as exc:
        raise ReprotuneError("export.push_to_hub needs huggingface_hub (pip install huggingface_hub)") from exc
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ReprotuneError(f"export.push_to_hub: '{repo_id}' cannot be pushed with HF_HUB_OFFLINE set; unset it")
    token = token or get_token()
    if not token:
        raise ReprotuneError(
            f"export.push_to_hub: no Hub token to push '{repo_id}' with; run `hf auth login` or set HF_TOKEN"
        )
    unknown = [a for a in artifacts if a not in ARTIFACT_PATTERNS]
    if unknown:
        raise ReprotuneError(f"export.hub_artifacts: unknown '{unknown[0]}'; allowed: {', '.join(ARTIFACT_PATTERNS)}")
    patterns = ["README.md", *(p for a in artifacts for p in ARTIFACT_PATTERNS[a])]
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(export_dir),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=patterns,
            commit_message="reprotune export",
        )
    except Exception as exc:  # HTTP, auth and connection errors: one line is what the user needs
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReprotuneError(f"export.push_to_hub: pushing to '{repo_id}' failed: {first}") from exc
    return {"repo_id": repo_id, "url": str(url), "commit": getattr(commit, "oid", None), "artifacts": artifacts}
