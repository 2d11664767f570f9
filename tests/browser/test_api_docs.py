"""/api/docs/ renders Swagger UI under the strict CSP (issue 16 item 1)."""
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_lists_the_operations_under_the_csp(page):
    response = page.goto(page.base + "/api/docs/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page.wait_for_selector(".opblock-summary-path", timeout=15000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/search/" in paths and len(paths) > 10
    assert page.locator(".info .title").first.inner_text().startswith("Loupe API")
