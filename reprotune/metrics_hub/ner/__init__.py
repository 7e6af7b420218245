"""Loaded by `evaluate.load(reprotune.metrics_hub.module_path(...))`; see the module of the same name."""
