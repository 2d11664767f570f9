"""gunicorn config for bench/search_e2e.py: each worker logs its query-vector cache stats, and
serves a bare DRF endpoint for P6.

The bench reads the `QUERY_CACHE_STATS {json}` lines from the server log to report the hit
rate measured inside the workers (not guessed from the client's query list).

`/api/v1/bench/bare/` (bench only: added to the URL list in each worker, never in the product)
is an APIView with the project's default authentication, permission and throttle classes and
middleware that answers {"ok": true}: the request/s of the server itself, against which P6
divides the searches/s of the same server in the same run.
"""
import json


def post_worker_init(worker):  # runs in the worker once the app is loaded, before any request
    from django.urls import path
    from rest_framework.response import Response
    from rest_framework.views import APIView

    import project.urls

    class BareApi(APIView):
        def get(self, request):
            return Response({"ok": True})

    project.urls.urlpatterns.insert(0, path("api/v1/bench/bare/", BareApi.as_view()))


def worker_exit(server, worker):  # runs in the worker process as it exits
    try:
        from search.services.queries import text_cache
    except ImportError:  # code from before the cache existed
        return
    print("QUERY_CACHE_STATS " + json.dumps(text_cache().stats()), flush=True)
