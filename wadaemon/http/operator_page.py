"""``GET /``: the operator page — server-rendered HTML, a few lines of plain JavaScript to
refresh it, no build step, readable on a phone.

Per account: connection state and owner, history-sync progress as a bar, journal backlog,
last realtime ingest, backfill state in words, recent-sync, and the 20 most recent threads
with their last message time (names and JIDs, never message text: an ops screen is looked at
over shoulders and screen-shared, and it needs no text to tell whether sync works). Then the
instances sharing the store, from their heartbeats: id, heartbeat age, accounts held,
version, and which one is this instance.

Where each value comes from, and why:

* the **status board** (memory, always there): state, phone, history progress, backlog,
  oldest pending entry, last realtime ingest, pending updates, last error. The page renders
  from it even when the store is down, and then says so at the top.
* the **store** (one time budget, the store timeout, for all reads, as /diag): each account's
  document (backfill, recent-sync, owner) and its recent threads. When the store does not
  answer in time, those parts say "store unreachable" instead of failing the page.
* the **ownership actor's last look** (``ClusterView`` on the board, read every retry
  period): the instance list. It is memory too, so it renders with the store down; it then
  says how old it is, and the heartbeat ages keep growing from it, which is the truth as far
  as this instance can know it. The page reads no heartbeat itself.

Cost: each load reads one account document and 20 threads per account shown. Above
``THREADS_FOR_AT_MOST`` accounts the thread lists are left out unless one account is picked
(``?account=ID``), so a 200-account instance refreshed every 10 s does not cost 4,000 store
reads per refresh.

Everything that comes from WhatsApp or the store (display names, JIDs, error text) is
escaped with ``html.escape``; the page's Content-Security-Policy allows exactly one script, its
own (by hash), and no other source of anything, so even a missed escape could neither run a
script nor load or send anything elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from wadaemon.config import Settings
from wadaemon.domain import AccountDoc, ThreadDoc
from wadaemon.http.context import context_of
from wadaemon.http.routing import RouteTable, text_param
from wadaemon.http.store_access import StoreCallFailed
from wadaemon.status import AccountStatus, DiagSnapshot
from wadaemon.store.contract import Store

routes = RouteTable("operator")

ACCOUNT = text_param("account", max_length=200, description="Show only this account (with its threads)")

RECENT_THREADS = 20
THREADS_FOR_AT_MOST = 10
REFRESH_S = 10
HISTORY_UNAVAILABLE = "history_requests_unavailable"


class StoredAccount(msgspec.Struct):
    doc: AccountDoc | None
    threads: list[ThreadDoc] | None  # None: not read (too many accounts shown)


class PageData(msgspec.Struct, kw_only=True):
    snapshot: DiagSnapshot
    store_backend: str
    store_ok: bool
    stored: dict[str, StoredAccount]
    settings: Settings
    now_s: float
    focus: str | None = None


def read_stored(store: Store, account_ids: Sequence[str], with_threads: bool) -> dict[str, StoredAccount]:
    """Blocking: runs in a store worker thread."""
    return {
        account_id: StoredAccount(
            doc=store.get_account(account_id),
            threads=store.list_threads(account_id, limit=RECENT_THREADS) if with_threads else None,
        )
        for account_id in account_ids
    }


# -- words ----------------------------------------------------------------------------------

def when(moment: datetime | float | None, now_s: float) -> str:
    """``2024-01-02 03:04:05Z (12s ago)``, ``— `` for never."""
    if moment is None:
        return "—"
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    delta = now_s - seconds
    ago = _span(abs(delta))
    return f"{stamp} ({ago} ago)" if delta >= 0 else f"{stamp} (in {ago})"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{int(seconds)}s"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)}min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds < 365 * 86400:
        return f"{seconds / 86400:.1f}d"
    return f"{seconds / (365.25 * 86400):.1f}y"


def backfill_words(doc: AccountDoc | None, status: AccountStatus | None, settings: Settings,
                   now_s: float) -> tuple[str, str]:
    """(css class, sentence): running / cooling down / blocked / unavailable / …, in words."""
    if status is not None and status.history_request_capability == "unavailable":
        return "warn", ("unavailable: this WhatsApp client cannot send on-demand history requests, "
                        "so backfill and recent-sync request nothing (history sync at pairing "
                        "and realtime still work)")
    if doc is None:
        return "muted", "unknown: the account document could not be read"
    if not settings.auto_backfill_enabled:
        return "muted", "auto-backfill is disabled (WHATSAPP_AUTO_BACKFILL_ENABLED / AUTO_BACKFILL_ENABLED)"
    run = doc.last_auto_backfill_status
    if run is None:
        return "muted", "never run"
    lease_until = doc.auto_backfill_lease_until
    if run.running:
        if lease_until is not None and lease_until.timestamp() < now_s:
            return "warn", (f"stale: a run on {run.holder or '?'} started {when(run.started_at, now_s)} "
                            f"ended without finishing (its lock expired {when(lease_until, now_s)}); "
                            "the next tick runs it again")
        return "ok", (f"running since {when(run.started_at, now_s)} on {run.holder or '?'}"
                      + (f" ({run.trigger})" if run.trigger else ""))
    if run.ok is False:
        if run.error_code == HISTORY_UNAVAILABLE:
            return "warn", f"unavailable: {run.error_message or 'history requests are not supported'}"
        attempt = doc.last_auto_backfill_attempt_at
        retry = (attempt.timestamp() + settings.auto_backfill_attempt_backoff_ms / 1000
                 if attempt is not None else None)
        return "bad", (f"blocked: {run.error_code or 'error'}: {run.error_message or ''}".rstrip(": ")
                       + (f"; retried after {when(retry, now_s)}" if retry is not None else ""))
    success = doc.last_auto_backfill_success_at
    if success is not None:
        until = success.timestamp() + settings.auto_backfill_cooldown_ms / 1000
        done = (f"last run gained {run.messages or 0} messages in {run.threads or 0} threads"
                f" ({when(success, now_s)})")
        if until > now_s:
            return "ok", f"cooling down until {when(until, now_s)}; {done}"
        return "ok", f"idle, eligible at the next tick; {done}"
    return "muted", "finished (no success time recorded)"


def recent_sync_words(doc: AccountDoc | None, settings: Settings, now_s: float) -> str:
    if not settings.recent_sync_enabled:
        return "disabled (RECENT_SYNC_ENABLED=false)"
    if doc is None:
        return "unknown: the account document could not be read"
    result = doc.last_recent_sync_result
    if doc.last_recent_sync_at is None or result is None:
        return "never run"
    outcome = "ok" if result.ok else "failed"
    return (f"{outcome} {when(doc.last_recent_sync_at, now_s)}: {result.threads} threads, "
            f"{result.messages} messages, {result.errors} errors")


# -- rendering ------------------------------------------------------------------------------

def e(value: object) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--muted:#6e7781;--line:#d0d7de}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:12px;max-width:1100px;margin:auto}
header{display:flex;flex-wrap:wrap;gap:4px 16px;align-items:baseline;margin-bottom:8px}
h1{font-size:1.3em;margin:0}h2{font-size:1.1em;margin:0 0 6px;word-break:break-all}
.alert{border:2px solid var(--bad);color:var(--bad);padding:8px 10px;border-radius:6px;margin:8px 0;font-weight:600}
.account,#instances{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:10px 0}
dl{display:grid;grid-template-columns:minmax(9em,max-content) 1fr;gap:3px 12px;margin:0}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
.bar{position:relative;height:16px;border-radius:8px;background:var(--line);overflow:hidden;min-width:8em}
.bar>span{position:absolute;inset:0 auto 0 0;background:var(--ok)}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.muted{color:var(--muted)}
.state{font-weight:600}
table{border-collapse:collapse;width:100%;font-size:.92em}
.threads{overflow-x:auto;margin-top:6px}
td,th{text-align:left;vertical-align:top;padding:3px 8px 3px 0;border-bottom:1px solid var(--line)}
td.name{word-break:break-word}td.time{min-width:9em}caption{text-align:left;color:var(--muted)}
.tag{font-size:.8em;border:1px solid var(--line);border-radius:4px;padding:0 4px}
footer,#rendered{color:var(--muted);font-size:.85em;margin-top:12px}
@media (max-width:560px){dl{grid-template-columns:1fr}dt{margin-top:4px}}
"""

SCRIPT = """
(function(){
  var every = %d * 1000;
  function refresh(){
    var note = document.getElementById('refresh');
    if (document.hidden) return;
    fetch(location.href, {credentials:'same-origin', headers:{'Accept':'text/html'}})
      .then(function(r){ if(!r.ok) throw new Error('HTTP '+r.status); return r.text(); })
      .then(function(text){
        var next = new DOMParser().parseFromString(text, 'text/html').getElementById('content');
        document.getElementById('content').replaceWith(next);
        note.textContent = 'refreshed ' + new Date().toLocaleTimeString();
        note.className = 'muted';
      })
      .catch(function(err){ note.textContent = 'refresh failed (' + err.message + '): the daemon may be down'; note.className = 'bad'; });
  }
  setInterval(refresh, every);
  document.addEventListener('visibilitychange', refresh);
})();
"""

REFRESH_SCRIPT = SCRIPT % REFRESH_S
SCRIPT_HASH = base64.b64encode(hashlib.sha256(REFRESH_SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'; "
       "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

STATE_CLASS = {"connected": "ok", "connecting": "warn", "pairing": "warn",
               "disconnected": "bad", "logged_out": "bad"}


def render(data: PageData) -> str:
    snap = data.snapshot
    now = data.now_s
    accounts = [a for a in snap.accounts if data.focus is None or a.account_id == data.focus]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width, initial-scale=1">',
        f"<title>wadaemon {e(snap.instance_id)}</title><style>{STYLE}</style></head><body>",
        f"<header><h1>wadaemon <span id=instance>{e(snap.instance_id)}</span></h1>",
        f"<span>mode <b id=mode>{e(snap.mode)}</b></span>",
        f"<span>store {e(data.store_backend)}: <b id=store class={'ok' if data.store_ok else 'bad'}>"
        f"{'reachable' if data.store_ok else 'unreachable'}</b></span>",
        f"<span>up since {e(when(snap.started_at_ms / 1000, now))}</span></header>",
        "<main id=content>",
    ]
    if not data.store_ok:
        parts.append(
            f"<div class=alert id=store-down>The store ({e(data.store_backend)}) is unreachable. "
            "Shown from this instance's memory; backfill, recent-sync and threads need the store. "
            "Nothing is lost meanwhile: events wait in the journal (backlog below).</div>")
    if data.focus is not None:
        parts.append('<p><a href="/">all accounts</a></p>')
        if not accounts:
            parts.append(f"<p class=bad>This instance does not run account {e(data.focus)}.</p>")
    if not snap.accounts:
        parts.append("<p class=muted>This instance runs no account (passive).</p>")
    for account in accounts:
        parts.append(_account(account, data.stored.get(account.account_id), data))
    parts.append(_instances(snap, data))
    parts.append(f"<p class=muted id=rendered>as of {e(when(now, now).split(' (')[0])}</p></main>")
    parts.append(f"<footer><span id=refresh class=muted>refreshes every {REFRESH_S}s</span> · "
                 "<a href=/diag>/diag</a> · <a href=/metrics>/metrics</a></footer>")
    parts.append(f"<script>{REFRESH_SCRIPT}</script></body></html>")
    return "".join(parts)


def _account(a: AccountStatus, stored: StoredAccount | None, data: PageData) -> str:
    now = data.now_s
    doc = stored.doc if stored is not None else None
    progress = max(0, min(100, a.history.progress))
    backlog_age = (f", oldest {when(a.journal_oldest_pending_ms / 1000, now)}"
                   if a.journal_backlog and a.journal_oldest_pending_ms else "")
    owner = (doc.owner_instance if doc is not None and doc.owner_instance else data.snapshot.instance_id)
    css, backfill = backfill_words(doc, a, data.settings, now)
    rows = [
        ("state", f"<span class='state {STATE_CLASS.get(a.state, 'muted')}'>{e(a.state)}</span>"
                  + (f" as {e(a.phone_jid)}" if a.phone_jid else "")),
        ("owner", e(owner)),
        ("history sync",
         f"<div class=bar role=progressbar aria-valuemin=0 aria-valuemax=100 aria-valuenow={progress}"
         f" title='{progress}%'><span style='width:{progress}%'></span></div>"
         f"{progress}% · {a.history.chunks} chunks · {a.history.saved} saved, {a.history.skipped} skipped"),
        ("journal backlog", f"<span class={'warn' if a.journal_backlog else 'ok'}>{a.journal_backlog}"
                            f"</span> {'entry' if a.journal_backlog == 1 else 'entries'} to commit"
                            f"{e(backlog_age)}"),
        ("last realtime ingest", e(when(a.last_realtime_ingest_ms / 1000, now)
                                   if a.last_realtime_ingest_ms else "—")
         + f" · {a.realtime_written} messages since start"),
        ("pending updates", f"{a.pending_receipts} receipts, {a.pending_mutations} edits/reactions "
                            "waiting for their message"),
        ("backfill", f"<span class={css}>{e(backfill)}</span>" + _scheduler(a, now)),
        ("recent-sync", e(recent_sync_words(doc, data.settings, now))),
        ("gaps", _gaps(a, now)),
    ]
    if a.last_error:
        rows.append(("last error", f"<span class=bad>{e(a.last_error)}</span>"))
    if a.rejected:
        rows.append(("rejected events", f"<span class=warn>{a.rejected}</span>"))
    body = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (f"<section class=account data-account='{e(a.account_id)}'>"
            f"<h2>{e(a.account_id)}</h2><dl>{body}</dl>{_threads(a.account_id, stored, data)}</section>")


def _scheduler(a: AccountStatus, now_s: float) -> str:
    """The auto-backfill scheduler's own view (memory): why it waits and until when."""
    if not a.backfill_blocked:
        return ""
    until = (f" until {when(a.backfill_next_eligible_ms / 1000, now_s)}"
             if a.backfill_next_eligible_ms is not None else "")
    holder = f" (lock held by {a.backfill_lock_holder})" if a.backfill_lock_holder else ""
    requests = (f"; {len(a.outstanding_requests)} history requests outstanding"
                if a.outstanding_requests else "")
    return f"<br><small>scheduler: {e(a.backfill_blocked.replace('_', ' '))}{e(until)}{e(holder)}{e(requests)}</small>"


def _gaps(a: AccountStatus, now_s: float) -> str:
    if not a.open_gaps:
        next_run = (f"; next recent-sync {when(a.recent_sync_next_ms / 1000, now_s)}"
                    if a.recent_sync_next_ms is not None else "")
        return f"<span class=ok>none open</span>{e(next_run)}"
    spans = "".join(f"<li>{e(when(g.from_ms / 1000, now_s))} → {e(when(g.to_ms / 1000, now_s))}: {e(g.reason)}</li>"
                    for g in a.open_gaps[:5])
    more = f"<li>… {len(a.open_gaps) - 5} more</li>" if len(a.open_gaps) > 5 else ""
    return f"<span class=warn>{len(a.open_gaps)} open</span><ul>{spans}{more}</ul>"


def _instances(snap: DiagSnapshot, data: PageData) -> str:
    """The instances sharing the store, from the heartbeats ownership last read."""
    view = snap.cluster
    if view is None:
        return "<section id=instances><h2>instances</h2><p class=muted>No heartbeat read yet.</p></section>"
    now = data.now_s
    stale_s = data.settings.account_lease_ms / 1000
    rows = []
    for i in view.instances:
        age = now - i.heartbeat_at_ms / 1000
        css = "bad" if age > stale_s else "ok"
        held = ", ".join(i.accounts[:10]) + (f" … {len(i.accounts) - 10} more" if len(i.accounts) > 10 else "")
        me = " <span class=tag>this instance</span>" if i.instance_id == snap.instance_id else ""
        state = "" if i.accepting else " <span class=tag>stopping</span>"
        rows.append(
            f"<tr data-instance='{e(i.instance_id)}'><td class=name>{e(i.instance_id)}{me}{state}</td>"
            f"<td class='time {css}'>{e(_span(max(0.0, age)))} ago{' (stale)' if css == 'bad' else ''}</td>"
            f"<td>{len(i.accounts)}<br><small class=muted>{e(held)}</small></td><td>{e(i.version)}</td></tr>")
    return (f"<section id=instances><h2>instances</h2><div class=threads><table><caption>{len(view.instances)} "
            f"sharing the store, as read {e(when(view.at_ms / 1000, now))}</caption>"
            "<thead><tr><th>instance</th><th>last heartbeat</th><th>accounts held</th><th>version</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def _threads(account_id: str, stored: StoredAccount | None, data: PageData) -> str:
    if stored is None:
        return "<p class=muted>Recent threads: store unreachable.</p>"
    if stored.threads is None:
        return f"<p><a href='/?account={e(account_id)}'>recent threads</a></p>"
    if not stored.threads:
        return "<p class=muted>No threads stored yet.</p>"
    rows = "".join(
        f"<tr><td class=name>{e(t.display_name or t.phone_e164 or t.client_jid)}"
        f"{' <span class=tag>group</span>' if t.is_group else ''}<br><small class=muted>"
        f"{e(t.client_jid)}</small></td><td class=time>{e(when(t.last_message_at, data.now_s))}</td></tr>"
        for t in stored.threads)
    return (f"<div class=threads><table><caption>{len(stored.threads)} most recent threads</caption>"
            "<thead><tr><th>chat</th><th>last message</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


# -- the route ------------------------------------------------------------------------------

@routes.get("/", level="api", response=None, media_type="text/html", query=(ACCOUNT,),
            summary="The operator page (HTML)")
async def operator_page(request: web.Request) -> web.Response:
    context = context_of(request)
    snapshot = context.status.snapshot()
    focus = ACCOUNT.parse(request)
    gateway = context.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + gateway.timeout
    store_ok = await gateway.reachable()
    shown = [a.account_id for a in snapshot.accounts if focus is None or a.account_id == focus]
    with_threads = focus is not None or len(shown) <= THREADS_FOR_AT_MOST
    stored: dict[str, StoredAccount] = {}
    if store_ok:
        try:
            stored = await gateway.call(lambda store: read_stored(store, shown, with_threads),
                                        budget=deadline - loop.time())
        except StoreCallFailed:
            store_ok = False
    page = render(PageData(snapshot=snapshot, store_backend=gateway.backend, store_ok=store_ok,
                           stored=stored, settings=context.settings, now_s=context.clock(),
                           focus=focus))
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
    })
