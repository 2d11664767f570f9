"""gunicorn config for bench/search_e2e.py: each worker logs its query-vector cache stats.

The bench reads the `QUERY_CACHE_STATS {json}` lines from the server log to report the hit
rate measured inside the workers (not guessed from the client's query list).
"""
import json


def worker_exit(server, worker):  # runs in the worker process as it exits
    try:
        from search.services.queries import text_cache
    except ImportError:  # code from before the cache existed
        return
    print("QUERY_CACHE_STATS " + json.dumps(text_cache().stats()), flush=True)
