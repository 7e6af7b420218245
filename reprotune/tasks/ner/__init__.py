"""Token classification (NER): CoNLL/Hub/JSON loading, tag alignment, seqeval scores, error analysis."""
