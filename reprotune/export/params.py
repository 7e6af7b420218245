"""`tasks.<name>.export`: the model lives in reprotune.core.params with the other sections."""

from reprotune.core.params import Artifact, ExportParams

__all__ = ["Artifact", "ExportParams"]
