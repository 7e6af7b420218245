"""Where a model comes from (Hub id, local or package directory), and one clear line when loading fails."""

from __future__ import annotations

import os

from reprotune.core.assets import is_local_ref, resolve_path
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import ModelParams


def model_source(model: ModelParams) -> str:
    """The string handed to `from_pretrained`: a resolved local directory or a Hub id."""
    ref = model.name_or_path
    if is_local_ref(ref):
        path = resolve_path(ref, "model directory")
        if not path.is_dir():
            raise ReprotuneError(f"model '{ref}' is a file; model.name_or_path must be a directory or a Hub id")
        if not (path / "config.json").exists():
            raise ReprotuneError(f"model directory '{ref}' has no config.json (save it with save_pretrained)")
        return str(path)
    if ref.count("/") > 1 or ref.endswith("/"):
        raise ReprotuneError(f"model '{ref}' is neither an existing directory nor a Hub id like 'org/name'")
    return ref


def _explain(exc: Exception, ref: str, what: str) -> ReprotuneError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return ReprotuneError(
            f"{what} '{ref}' needs custom code from its repository; set model.trust_remote_code: true "
            "only if you trust it"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or any(
        word in str(exc) for word in ("connect", "resolve", "offline", "Hub", "huggingface.co", "network")
    )
    if not is_local_ref(ref):
        reason = "the Hugging Face Hub is unreachable" if offline else text
        return ReprotuneError(
            f"could not load {what} '{ref}' ({reason}); on a machine without the Hub, download it elsewhere "
            "with save_pretrained and set model.name_or_path to that directory (or package:NAME/path)"
        )
    return ReprotuneError(f"could not load {what} from '{ref}': {text}")
