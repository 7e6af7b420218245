"""Masked-language-model domain adaptation: text sources, block chunking, fixed eval masks, perplexity, analysis."""

# The family's facts outside its six modules (reprotune.tasks.base.FamilyFacts): the model
# card's and Hub pipeline's names, and whether export scores int8 on the family's metric.
PIPELINE_TAG = "fill-mask"
TASK_NAME = "Masked language modelling"
INT8_METRIC = False  # its `predict` hooks the encoder, which an ONNX session does not expose
