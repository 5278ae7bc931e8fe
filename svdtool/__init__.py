"""svdtool: Stable Video Diffusion → OpenVINO on CPU.

Library API (the CLI is a thin layer over it)::

    from svdtool.models import load_pipeline
    from svdtool.convert import export
    from svdtool.runtime import OVStableVideoDiffusionPipeline, generate
"""

__version__ = "0.1.0"
