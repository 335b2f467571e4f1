"""The operations-centre dashboard: its web server, sign-in and static files (``web/``).

Other packages and the CLI use only what ``__all__`` lists; the modules are private to it.
"""

from .dashboard import new_token, parse_operators, serve_dashboard

__all__ = ["new_token", "parse_operators", "serve_dashboard"]
