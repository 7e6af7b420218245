"""Masked-language-model domain adaptation: text sources, block chunking, fixed eval masks, perplexity, analysis."""
