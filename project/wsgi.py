"""WSGI entry point (gunicorn, and the bench's in-process servers)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
application = get_wsgi_application()

from project import threads  # noqa: E402  (settings are configured now)

threads.pin("web")

from django.conf import settings  # noqa: E402

if settings.LOUPE_WARM_START:  # models and indexes load now, not on the first request (/readyz: "warming")
    from search.services.warmup import warm_up_in_background

    warm_up_in_background("web")
