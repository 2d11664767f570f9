"""Loupe project wiring: settings, urls, the Celery app and the one error shape."""
from .celery import app as celery_app

__all__ = ("celery_app",)
