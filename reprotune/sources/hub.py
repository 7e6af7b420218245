"""Hugging Face Hub datasets, with one clear line when the Hub cannot be reached."""

from __future__ import annotations

from collections.abc import Mapping

from datasets import Dataset, DatasetDict

from reprotune.core.arrow import SPLITS
from reprotune.core.errors import ReprotuneError
from reprotune.core.params import DownloadParams, SplitName


def load_hub(params: DownloadParams) -> DatasetDict:
    """`load_dataset(dataset, config)` with one clear line when the Hub cannot be reached."""
    from datasets import load_dataset

    if not params.dataset:
        raise ReprotuneError("download.source 'hub' needs download.dataset (a Hub dataset id)")
    try:
        loaded = load_dataset(params.dataset, params.config, revision=params.revision)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReprotuneError(
            f"could not load Hub dataset '{params.dataset}'"
            f"{'/' + params.config if params.config else ''} ({first}); without the Hub, save the files "
            "locally and set download.source to a local format with download.files"
        ) from exc
    return rename_splits(DatasetDict(loaded), params.splits)


def rename_splits(raw: DatasetDict, splits: Mapping[SplitName, str] | None) -> DatasetDict:
    """Map the source's split names onto train/validation/test (e.g. wikiann's names pass through)."""
    mapping: dict[str, str] = {str(ours): theirs for ours, theirs in (splits or {}).items()}
    claimed = set(mapping.values())
    aliases = {"dev": "validation", "valid": "validation", "val": "validation"}
    out: dict[str, Dataset] = {}
    for ours in SPLITS:
        theirs = mapping.get(ours)
        if theirs is not None:
            if theirs not in raw:
                raise ReprotuneError(f"download.splits.{ours}: source has no split '{theirs}'; it has {', '.join(raw)}")
            out[ours] = raw[theirs]
        elif ours in raw and ours not in claimed:
            out[ours] = raw[ours]
        else:
            alias = next(
                (name for name, target in aliases.items() if target == ours and name in raw and name not in claimed),
                None,
            )
            if alias:
                out[ours] = raw[alias]
    if "train" not in out:
        raise ReprotuneError(f"source has no 'train' split (it has {', '.join(raw)}); map one with download.splits")
    return DatasetDict(out)


def resolved_revision(params: DownloadParams) -> str | None:
    """The commit the Hub resolves `download.dataset` at `download.revision` to, for
    download_report.json; None when the Hub cannot say (offline, served from HF's cache)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(str(params.dataset), revision=params.revision).sha
    except Exception:  # offline, gated or unknown: the report says so with None
        return None
