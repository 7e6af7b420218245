"""Extractive question answering (SQuAD format): windowed features, n-best answer spans, official EM/F1."""

# The family's facts outside its six modules (reprotune.tasks.base.FamilyFacts): the model
# card's and Hub pipeline's names, and whether export scores int8 on the family's metric.
PIPELINE_TAG = "question-answering"
TASK_NAME = "Extractive question answering"
INT8_METRIC = True
