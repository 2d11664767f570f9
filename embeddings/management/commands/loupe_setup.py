"""First-run set-up used by `make run`: admin account, demo collection, default models."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from embeddings import services
from embeddings.ingest.demo import DEMO_COLLECTION, demo_items
from embeddings.services.importing import dataset_import


class Command(BaseCommand):
    help = "Create the admin account (once), import the demo collection and register default models."

    def handle(self, *args, **opts) -> None:
        admin = self._admin()
        services.conse_version_ensure()
        collection, _ = services.collection_get_or_create(name=DEMO_COLLECTION, owner=admin, is_public=True)
        summary = dataset_import(items=demo_items(), collection=collection, user=admin)
        self.stdout.write(f"Demo collection: {summary.imported} imported, {summary.present} already present.")
        from django.apps import apps

        for config in apps.get_app_configs():
            hook = getattr(config, "loupe_setup", None)
            if hook:
                for line in hook():
                    self.stdout.write(line)

    def _admin(self):
        User = get_user_model()
        username = settings.LOUPE_ADMIN_USER
        existing = User.objects.filter(username=username).first()
        if existing:
            return existing
        password = settings.LOUPE_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.create_superuser(username=username, email="", password=password)
        shown = password if not settings.LOUPE_ADMIN_PASSWORD else "(from LOUPE_ADMIN_PASSWORD)"
        self.stdout.write(self.style.SUCCESS(f"Admin account created: user {username!r}, password {shown}"))
        self.stdout.write("This password is printed only once; change it in the admin.")
        return user
