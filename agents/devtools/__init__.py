"""Development tools: the embedded broker, its local CA and certificates, and the simulator.

Other packages and the CLI use only what ``__all__`` lists; the modules are private to devtools.
"""

from .broker import BrokerError, EmbeddedBroker
from .simulator import SCENARIOS, publish_live, simulate, write_files

__all__ = [
    "SCENARIOS",
    "BrokerError",
    "EmbeddedBroker",
    "publish_live",
    "simulate",
    "write_files",
]
