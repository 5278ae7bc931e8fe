"""Post-training quantization with nncf: `svdtool.quantize.quantize(model_dir, out_dir, calib)`."""

from .calibration import CalibrationImages, load_calibration_images
from .fusion import fusion_report, inspect_folder
from .modes import MODES, QuantizeOptions
from .run import quantize

__all__ = ["MODES", "CalibrationImages", "QuantizeOptions", "fusion_report", "inspect_folder", "load_calibration_images", "quantize"]
