"""Take the README's screenshots (docs/img/) from a running Loupe, in Debian's Chromium.

    LOUPE_VAR_DIR=/tmp/shots PORT=8790 LOUPE_ADMIN_PASSWORD=... make run      # a fresh install
    .venv/bin/python docs/tools/screenshots.py --base http://127.0.0.1:8790 --password ...

It signs in as the admin, searches the demo collection, opens the cat's page, the collections
page, and (when a candidate model exists, e.g. after `manage.py train --kind embedding
--collection demo --set loop.epochs=1`) the promotion confirmation; then a phone-width search.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8000")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "img")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    opts = ap.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=opts.chromium, args=ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()
        page.goto(opts.base + "/accounts/login/")
        page.fill("#id_username", opts.user)
        page.fill("#id_password", opts.password)
        page.click("button[type=submit]")
        page.wait_for_url(opts.base + "/")

        def shot(path: str, name: str, full: bool = False) -> None:
            page.goto(opts.base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(opts.out / name), full_page=full, type="jpeg", quality=80)
            print("wrote", opts.out / name)

        shot("/search/?q=a+cat", "search.jpg")
        page.goto(opts.base + "/search/?q=a+tabby+cat")
        page.wait_for_load_state("networkidle")
        cat = page.locator("#results .tile a").first.get_attribute("href").split("?")[0]
        shot(cat, "image-page.jpg")
        shot("/collections/", "collections.jpg")
        page.goto(opts.base + "/admin/embeddings/modelversion/?status__exact=candidate")
        link = page.locator("#result_list tbody tr th a").first
        if link.count():
            page.goto(opts.base + link.get_attribute("href"))
            page.click("text=Promote")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(opts.out / "promote-confirm.jpg"), type="jpeg", quality=80)
            print("wrote", opts.out / "promote-confirm.jpg")
        page.set_viewport_size({"width": 390, "height": 844})
        shot("/search/?q=a+rocket", "search-phone.jpg")
        browser.close()


if __name__ == "__main__":
    main()
