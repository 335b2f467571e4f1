"""The safetour exception tree.

    SafetourError
    ├── ContractError (ValueError)      a document breaks a v1 wire contract
    │   └── ZoneRegistryError           a zone registry file or record is invalid
    └── ConfigError (ValueError)        a setting is missing or malformed

Every package of safetour raises from this tree (agents adds its own leaves under
SafetourError), so callers can catch the product's errors without catching everything.
"""

from __future__ import annotations


class SafetourError(Exception):
    """Root of every error safetour raises on purpose."""


class ContractError(SafetourError, ValueError):
    """A document does not satisfy a v1 wire contract."""


class ZoneRegistryError(ContractError):
    """A zone registry (file or topic record) is invalid."""


class ConfigError(SafetourError, ValueError):
    """A setting is missing or malformed."""
