"""Token classification (NER): CoNLL/Hub/JSON loading, tag alignment, seqeval scores, error analysis."""

# The family's facts outside its six modules (reprotune.tasks.base.FamilyFacts): the model
# card's and Hub pipeline's names, and whether export scores int8 on the family's metric.
PIPELINE_TAG = "token-classification"
TASK_NAME = "Named entity recognition"
INT8_METRIC = True
