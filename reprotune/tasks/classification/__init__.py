"""Sequence classification: Hub/table/folder sources, stable label order, sklearn scores, error analysis."""

from reprotune.tasks.classification.family import FAMILY

__all__ = ["FAMILY"]
