"""The HTTP surface: aiohttp on its own thread and asyncio loop, beside the trio daemon.

Module map (one concern each):

* ``server``       — ``HttpServer`` (the thread and its loop) and ``serve_http`` (the trio child);
* ``app``          — assembles the aiohttp application: middlewares and route tables;
* ``context``      — what handlers may use (status board, store gateway, bridge, clock);
* ``store_access`` — blocking Store calls off the loop, each bounded by a timeout;
* ``bridge``       — ``ActionBridge``: run a trio function inside the daemon from a handler;
* ``errors``       — the ``{success: false, error: {code, message}}`` envelope and middleware;
* ``tracking``     — in-flight requests (graceful stop) and the per-request debug log line;
* ``responses``    — msgspec JSON responses;
* ``probes``       — ``GET /health`` and ``GET /ready``;  ``diag`` — ``GET /diag``.

Nothing here imports aiohttp at package import time: the daemon imports ``server`` only when
it serves HTTP.
"""
