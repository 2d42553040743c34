"""The fleet web page: overview and device pages, server-rendered HTML.

Analysts sign in by pasting their read-only token; the cookie (HttpOnly,
SameSite=Strict) then holds a random session id, stored only hashed and
ended by sign-out, expiry or revoking the token, never the token itself.
State-changing posts (sign in, sign out) must come from this site's own
pages (Origin check). Every value shown is escaped.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from leakcheck.collector.deps import COOKIE, analyst_principal, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store

router = APIRouter(include_in_schema=False)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.leak{color:#b00;font-weight:bold}.warn{color:#a60}.pass{color:#070}.error{color:#555}.stale{color:#888}
.bar{display:inline-block;height:.8rem;background:#b00}.barp{display:inline-block;height:.8rem;background:#7a7}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}"
                        f"</title><style>{STYLE}</style></head><body>{body}</body></html>",
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "form-action 'self'",
                                 "X-Frame-Options": "DENY", "Cache-Control": "no-store"})


def _analyst_or_login(request: Request, store: Store) -> bool:
    session = request.cookies.get(COOKIE)
    principal = store.session_principal(session[:200]) if session else None
    return principal is not None and principal.kind == "analyst"


def same_origin(request: Request) -> bool:
    """A state-changing post must come from a page of this very site: its
    Origin (or, lacking that, Referer) names the host the request was sent to."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not source or not host or source == "null":
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


@router.get("/login")
def login_form(error: str = "") -> HTMLResponse:
    note = "<p class=leak id=error>That is not a valid analyst token.</p>" if error else ""
    return _page("leakcheck fleet: sign in",
                 f"<h1>leakcheck fleet</h1>{note}<form method=post action=/login>"
                 "<label>Analyst token <input type=password name=token id=token size=60></label> "
                 "<button type=submit id=signin>Sign in</button></form>")


@router.post("/login")
async def login(request: Request, store: Store = Depends(get_store),
                settings: Settings = Depends(get_settings)) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-origin sign-in refused", status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()[:200]
    session = store.create_session(token, settings.session_lifetime_s) if token else None
    if session is None:
        return RedirectResponse("/login?error=1", status_code=303)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session, httponly=True, samesite="strict", secure=settings.secure_cookies,
                        max_age=settings.session_lifetime_s)
    return response


@router.post("/logout")
def logout(request: Request, store: Store = Depends(get_store)) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-origin sign-out refused", status_code=403)
    if request.cookies.get(COOKIE):
        store.end_session(request.cookies[COOKIE][:200])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/")
def overview(request: Request, store: Store = Depends(get_store),
             settings: Settings = Depends(get_settings)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    now = time.time()
    summary = store.summary(now, settings.device_interval_s, 30)
    devices = store.devices(now, settings.device_interval_s)
    body = ["<form method=post action=/logout><button type=submit id=signout>Sign out</button></form>",
            "<h1>leakcheck fleet</h1>", "<p><a href=/conformance id=conformance-link>NCSC conformance</a> | "
            "<a href=/flows id=flows-link>leaked flows (live watch)</a></p>",
            f"<p id=totals>{summary['devices']} devices; "
            f"<span class=leak>{summary['devices_per_verdict'].get('leak', 0)} leaking now</span>; "
            f"{summary['stale_devices']} stale</p>",
            _leaking_table([d for d in devices if d["verdict"] == "leak"]),
            _finding_table(summary["devices_per_finding"]),
            _trend_table(summary["trend"]),
            _reconnect_table(summary["slowest_reconnects"]),
            "<h2>All devices</h2>", _device_table(devices)]
    return _page("leakcheck fleet", "".join(body))


@router.get("/devices/{device_id}")
def device_page(device_id: str, request: Request, store: Store = Depends(get_store),
                settings: Settings = Depends(get_settings)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    view = store.device(device_id[:128], time.time(), settings.device_interval_s, history=100)
    if view is None:
        raise HTTPException(404, "no such device")
    agent = view["agent"]
    rows = "".join(f"<tr><td>{escape(str(h['started_at']))}</td><td>{escape(h['trigger'])}</td>"
                   f"<td class={escape(h['verdict'])}>{escape(h['verdict'])}</td>"
                   f"<td>{escape(h['tunnel_state'])}</td><td>{_num(h['reconnect_s'])}</td></tr>"
                   for h in view["history"])
    findings = "".join(f"<li>{escape(f['finding_id'])}</li>" for f in view["current_findings"]) or "<li>none</li>"
    body = (f"<p><a href=/>fleet overview</a></p><h1 id=hostname>{escape(view['hostname'])}</h1>"
            f"<p>device {escape(view['device_id'])}, {escape(view['os'])} {escape(view['os_version'])}; "
            f"verdict <span id=verdict class={escape(str(view['verdict']))}>{escape(str(view['verdict']))}"
            f"</span>{' <span class=stale>(stale)</span>' if view['stale'] else ''}; tunnel "
            f"{escape(str(view['tunnel_state']))} ({escape(str(view['tunnel_kind']))})</p>"
            f"<p>agent: spool depth {escape(str(agent['spool_depth']))}, dropped {escape(str(agent['dropped']))},"
            f" last upload {escape(str(agent['last_upload']))}, last error {escape(str(agent['last_error']))}</p>"
            + (f"<p class=warn id=clock>this device's clock is wrong: its latest report claimed to start "
               f"{_num(view['clock_skew_s'])} s in the future (stored as received)</p>"
               if view["clock_skew_s"] else "")
            + _refused_list(view["refused_enrollments"])
            + f"<h2>Current findings</h2><ul id=findings>{findings}</ul>"
            "<h2>History</h2><table id=history><tr><th>started</th><th>trigger</th><th>verdict</th>"
            f"<th>tunnel</th><th>reconnect s</th></tr>{rows}</table>")
    return _page(f"leakcheck: {view['hostname']}", body)


def _refused_list(refused: list[dict[str, Any]]) -> str:
    if not refused:
        return ""
    items = "".join(f"<li>{escape(str(r['seen_at']))}: {escape(r['reason'])} from {escape(r['hostname'])} "
                    f"(installation {escape(r['instance'])})</li>" for r in refused)
    return f"<h2>Refused enrollments</h2><ul id=refused class=warn>{items}</ul>"


def _link(device: dict[str, Any]) -> str:
    return f"<a href=\"/devices/{quote(device['device_id'], safe='')}\">{escape(device['hostname'])}</a>"


def _num(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _leaking_table(devices: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{_link(d)}</td><td>{escape(str(d['last_report_at']))}</td>"
                   f"<td>{escape(str(d['tunnel_state']))}</td></tr>" for d in devices)
    return ("<h2>Leaking devices now</h2><table id=leaking><tr><th>device</th><th>last report</th>"
            f"<th>tunnel</th></tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>")


def _finding_table(per_finding: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{escape(f['probe'])}</td><td>{escape(f['finding_id'])}</td>"
                   f"<td>{f['devices']}</td></tr>" for f in per_finding)
    return ("<h2>By leak class</h2><table id=by-class><tr><th>probe</th><th>finding</th><th>devices</th></tr>"
            f"{rows or '<tr><td colspan=3>none</td></tr>'}</table>")


def _trend_table(trend: list[dict[str, Any]]) -> str:
    peak = max((sum(v for k, v in d.items() if k != "day") for d in trend), default=1) or 1
    rows = []
    for day in trend:
        leak = day.get("leak", 0)
        total = sum(v for k, v in day.items() if k != "day")
        rows.append(f"<tr><td>{escape(day['day'])}</td><td>{total}</td><td>{leak}</td><td>"
                    f"<span class=bar style=\"width:{200 * leak // peak}px\"></span>"
                    f"<span class=barp style=\"width:{200 * (total - leak) // peak}px\"></span></td></tr>")
    return ("<h2>Trend (reports per day)</h2><table id=trend><tr><th>day</th><th>reports</th><th>leak</th>"
            f"<th></th></tr>{''.join(rows) or '<tr><td colspan=4>no reports</td></tr>'}</table>")


def _reconnect_table(slowest: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{escape(s['hostname'])}</td><td>{_num(s['reconnect_s'])}</td></tr>" for s in slowest)
    return ("<h2>Slowest reconnects</h2><table id=reconnects><tr><th>device</th><th>seconds</th></tr>"
            f"{rows or '<tr><td colspan=2>none measured</td></tr>'}</table>")


def _device_table(devices: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{_link(d)}</td><td>{escape(d['os'])}</td>"
                   f"<td class={escape(str(d['verdict']))}>{escape(str(d['verdict']))}</td>"
                   f"<td>{escape(str(d['last_report_at']))}{' <span class=stale>stale</span>' if d['stale'] else ''}"
                   f"</td><td>{escape(str(d['agent']['spool_depth']))}</td></tr>" for d in devices)
    return ("<table id=devices><tr><th>device</th><th>os</th><th>verdict</th><th>last report</th>"
            f"<th>spool</th></tr>{rows}</table>")
