"""The baseline and evaluate stages: predictions on the test split and their scores."""
