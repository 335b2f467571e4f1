"""safetour's edge: the Faust app, topics, the embedded broker, notifiers, web and CLI.

Imports run one way only: agents -> streams -> schemas.
"""
