"""Extractive question answering (SQuAD format): sources, windowed features, n-best post-processing,
official EM/F1, error analysis."""

from reprotune.tasks.qa.family import FAMILY

__all__ = ["FAMILY"]
