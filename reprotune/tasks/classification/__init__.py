"""Sequence classification: Hub/table/folder sources, stable label order, sklearn scores, error analysis."""
