"""The API's route groups, one module each; ``wadaemon.http.app.ROUTE_TABLES`` lists them.

* ``accounts`` — ``GET /api/whatsapp/accounts``;
* ``messages`` — threads and messages of an account (cursor paging);
* ``send``     — ``POST /api/whatsapp/send/{accountId}``;
* ``backfill`` — manual backfill triggers (data and admin) and the admin status;
* ``status``   — ``GET /api/status/dashboard``;
* ``docs``     — ``GET /openapi.json``.

``common`` holds what several of them share (store calls with a timeout, the account check,
cursor tokens).
"""
