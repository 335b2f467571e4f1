"""Delivery: the notifiers (webhook, LINE, e-mail), the channel runner and the escalator.

Other packages and the CLI use only what ``__all__`` lists; the modules are private to delivery.
"""

from .channel_consumer import run_notify
from .escalate import run_escalator
from .mail import EmailNotifier, SmtpConfig
from .notify import (
    LineNotifier,
    RateLimited,
    RetryPolicy,
    Route,
    TokenBucket,
    WebhookNotifier,
    read_secret,
)
from .shelving import (
    parse_duration,
    publish_shelf,
    read_shelves,
    shelf_line,
    shelf_record,
    shelved_text,
)

__all__ = [
    "EmailNotifier",
    "LineNotifier",
    "RateLimited",
    "RetryPolicy",
    "Route",
    "SmtpConfig",
    "TokenBucket",
    "WebhookNotifier",
    "parse_duration",
    "publish_shelf",
    "read_secret",
    "read_shelves",
    "run_escalator",
    "run_notify",
    "shelf_line",
    "shelf_record",
    "shelved_text",
]
