"""The HTTP surfaces of a running service: API, dashboard, metrics, health."""

from ledger.entrypoints.web.app import create_app

__all__ = ["create_app"]
