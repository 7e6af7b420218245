"""Extractive question answering (SQuAD format): windowed features, n-best answer spans, official EM/F1."""
