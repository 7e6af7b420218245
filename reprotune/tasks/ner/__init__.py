"""Token classification (NER): CoNLL/Hub/JSON loading, tag alignment, seqeval scores, error analysis."""

from reprotune.tasks.ner.family import FAMILY

__all__ = ["FAMILY"]
