"""Export SVD components to OpenVINO IR: `svdtool.convert.export(source, out_dir)`."""

from .export import EXPORTED, OV_XML, check_shape, export
from .wrappers import ExportShape

__all__ = ["EXPORTED", "OV_XML", "ExportShape", "check_shape", "export"]
