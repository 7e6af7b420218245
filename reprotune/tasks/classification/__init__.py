"""Sequence classification: Hub/table/folder sources, stable label order, sklearn scores, error analysis."""

# The family's facts outside its six modules (reprotune.tasks.base.FamilyFacts): the model
# card's and Hub pipeline's names, and whether export scores int8 on the family's metric.
PIPELINE_TAG = "text-classification"
TASK_NAME = "Text classification"
INT8_METRIC = True
