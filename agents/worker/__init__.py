"""The worker: the faust app, its commit protocol, the zone router and the zones-topic follower.

Other packages and the CLI use only what ``__all__`` lists; the modules are private to the worker.
"""

from .app import build_app, warm_kernels
from .zones import publish_zones

__all__ = ["build_app", "publish_zones", "warm_kernels"]
