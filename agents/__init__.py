"""safetour's edge, split by job: ``worker``, ``delivery``, ``dashboard`` and ``devtools``.

Each subpackage's public surface is its ``__all__``; the modules at this level (the Kafka client
factory, configuration, topics, ACLs, logs, metrics, heartbeats, rejects, tail and the CLI) are
shared by all of them. This package itself exports nothing. Imports run one way only:
agents -> streams -> schemas.
"""

__all__: list[str] = []
