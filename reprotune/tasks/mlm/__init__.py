"""Masked-language-model domain adaptation: text sources, block chunking, fixed eval masks, perplexity, analysis."""

from reprotune.tasks.mlm.family import FAMILY

__all__ = ["FAMILY"]
