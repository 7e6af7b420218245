"""Tokenizers, models and batched inference for the tokenize, train and evaluate stages."""
