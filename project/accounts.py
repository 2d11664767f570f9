"""A signed-in user's own account page: their API token, shown and regenerated.

Users are created by an admin (`manage.py createsuperuser`, then the admin's Users page); there is
no self sign-up. The token is DRF's `authtoken` key: one per user, sent as
`Authorization: Token <key>`. Regenerating deletes the old key first, so a leaked token stops
working the moment a new one is made.
"""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from rest_framework.authtoken.models import Token


def api_token_get(user: AbstractBaseUser) -> Token | None:
    """The user's current API token, or None before they made one."""
    return Token.objects.filter(user=user).first()


@transaction.atomic
def api_token_regenerate(user: AbstractBaseUser) -> Token:
    """Replace the user's API token with a fresh key (the old one stops working at once)."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


@never_cache  # the page shows a credential: never stored by a browser or proxy cache
@login_required
@require_http_methods(["GET", "POST"])
def token_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        had_one = api_token_get(request.user) is not None  # type: ignore[arg-type]
        api_token_regenerate(request.user)  # type: ignore[arg-type]
        messages.success(request, "New token made; the old one no longer works." if had_one else "Token made.")
        return redirect("account-token")
    return render(request, "registration/token.html", {"token": api_token_get(request.user)})  # type: ignore[arg-type]
