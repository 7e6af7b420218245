"""Token classification (NER): CoNLL/Hub/JSON loading, tag alignment, seqeval scores, error analysis."""

from .family import FAMILY

__all__ = ["FAMILY"]
