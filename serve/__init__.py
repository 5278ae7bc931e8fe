"""`svdtool serve`: the IR as an HTTP service on Ray Serve (`svdtool.serve.start_service`)."""

from .limits import ServeLimits
from .run import start_service

__all__ = ["ServeLimits", "start_service"]
