"""The fleet web page: overview and device pages, server-rendered HTML.

Analysts sign in by pasting their read-only token; the cookie (HttpOnly,
SameSite=Strict) then holds a random session id, stored only hashed and
ended by sign-out, expiry or revoking the token, never the token itself.
State-changing posts (sign in, sign out) must come from this site's own
pages (Origin check). Every value shown is escaped.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from leakcheck.collector import oidc, views
from leakcheck.collector.oidc import OidcClient
from leakcheck.collector.contract import parse_time
from leakcheck.collector.deps import COOKIE, analyst_principal, get_settings, get_store
from leakcheck.collector.settings import Settings
from leakcheck.collector.store import Store
from leakcheck.report import Contract, time_problem

router = APIRouter(include_in_schema=False)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
.leak{color:#b00;font-weight:bold}.warn{color:#a60}.pass{color:#070}.error{color:#555}.stale{color:#888}
.sev-critical,.sev-high{color:#b00;font-weight:bold}.sev-medium{color:#a60}.sev-info{color:#555}
.finding{border:1px solid #ddd;padding:.3rem .8rem;margin:.5rem 0}.evidence th{font-weight:normal;color:#555}
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
    return principal is not None and principal.kind in ("analyst", "admin")


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
def login_form(request: Request, error: str = "") -> HTMLResponse:
    note = "<p class=leak id=error>That is not a valid analyst token.</p>" if error else ""
    sso = ("<p><a id=sso href=/oidc/login>Sign in with single sign-on</a></p>"
           if request.app.state.oidc is not None else "")
    return _page("leakcheck fleet: sign in",
                 f"<h1>leakcheck fleet</h1>{note}{sso}<form method=post action=/login>"
                 "<label>Analyst token <input type=password name=token id=token size=60></label> "
                 "<button type=submit id=signin>Sign in</button></form>")


OIDC_COOKIE = "leakcheck_oidc"


def _redirect_uri(request: Request, client: OidcClient) -> str:
    return client.settings.redirect_uri or str(request.url_for("oidc_callback"))


@router.get("/oidc/login")
def oidc_login(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    """Off to the issuer, carrying state, nonce and the PKCE challenge."""
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise HTTPException(404, "single sign-on is not configured")
    pending = oidc.new_pending()
    try:
        target = client.authorize_url(pending, _redirect_uri(request, client))
    except oidc.OidcError as exc:
        return PlainTextResponse(f"single sign-on is unavailable: {exc}", status_code=502)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(OIDC_COOKIE, f"{pending.state}.{pending.nonce}.{pending.verifier}", max_age=600,
                        path="/oidc", httponly=True, samesite="lax", secure=settings.secure_cookies)
    return response


@router.get("/oidc/callback", name="oidc_callback")
def oidc_callback(request: Request, code: str = "", state: str = "", error: str = "",
                  store: Store = Depends(get_store), settings: Settings = Depends(get_settings)) -> Response:
    """Back from the issuer: check state, trade the code (with the PKCE
    verifier) for an ID token, verify it, map the role, open a session."""
    client: OidcClient | None = request.app.state.oidc
    if client is None:
        raise HTTPException(404, "single sign-on is not configured")
    parts = request.cookies.get(OIDC_COOKIE, "")[:400].split(".")
    try:
        if error:
            raise oidc.OidcError(f"the issuer refused: {error[:100]}")
        if len(parts) != 3 or not state or not hmac.compare_digest(parts[0], state[:100]):
            raise oidc.OidcError("state does not match this browser's sign-in (start again)")
        pending = oidc.Pending(*parts)
        claims = client.exchange(code[:2048], pending, _redirect_uri(request, client))
        role = client.role(claims)
    except oidc.OidcError as exc:
        response = PlainTextResponse(f"sign-in refused: {exc}", status_code=403)
        response.delete_cookie(OIDC_COOKIE, path="/oidc")
        return response
    session = store.subject_session(client.label(claims), role, settings.session_lifetime_s)
    # Arrived here by a cross-site redirect: a SameSite=Strict cookie set now
    # is not sent on a redirect in the same chain, so move on from this page.
    response = _page("leakcheck fleet: signed in", "<meta http-equiv=refresh content=\"0;url=/\">"
                                                   "<p><a id=continue href=/>continue</a></p>")
    response.set_cookie(COOKIE, session, httponly=True, samesite="strict", secure=settings.secure_cookies,
                        max_age=settings.session_lifetime_s)
    response.delete_cookie(OIDC_COOKIE, path="/oidc")
    return response


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


# Rows per page on the web page: 50 rows keep the overview a few tens of KB
# whatever the fleet's size (issue 13: under 100 KB at 100,000 devices).
PAGE_ROWS = 50


@router.get("/")
def overview(request: Request, cursor: str = "", store: Store = Depends(get_store),
             settings: Settings = Depends(get_settings)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    now = time.time()
    summary = store.summary(now, settings.device_interval_s, 30)
    classes = views.finding_classes(store)
    try:
        leaking = views.leaking_devices(store, now, settings.device_interval_s, PAGE_ROWS)
        everyone = views.device_page(store, now, settings.device_interval_s, PAGE_ROWS, cursor[:2048] or None)
    except views.BadCursor:
        raise HTTPException(400, "bad cursor") from None
    body = ["<form method=post action=/logout><button type=submit id=signout>Sign out</button></form>",
            "<h1>leakcheck fleet</h1>", "<p><a href=/conformance id=conformance-link>NCSC conformance</a> | "
            "<a href=/flows id=flows-link>leaked flows (live watch)</a></p>",
            f"<p id=totals>{summary['devices']} devices; "
            f"<span class=leak>{summary['devices_per_verdict'].get('leak', 0)} leaking now</span>; "
            f"{summary['stale_devices']} stale</p>",
            _leaking_table(leaking),
            _finding_table(classes["leaks"], "by-class", "By leak class", "leak-classes"),
            _finding_table(classes["notes"], "notes", "Notes (not leaks)", "notes"),
            _trend_table(summary["trend"]),
            _reconnect_table(summary["slowest_reconnects"]),
            "<p><a id=all-findings href=/findings>every finding, filtered by probe, OS, tunnel, time</a></p>",
            "<h2>All devices</h2>", _filter_form(views.DeviceFilter()),
            _device_table(everyone.rows, "devices"),
            _pager(everyone.next_cursor, "/", {}),
            _downloads("/api/v1/export/devices", {})]
    return _page("leakcheck fleet", "".join(body))


@router.get("/devices")
def device_list(request: Request, cursor: str = "", store: Store = Depends(get_store),
                settings: Settings = Depends(get_settings)) -> Response:
    """Devices filtered by OS, verdict, tunnel kind, finding, probe, time."""
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    args = {k: v[:128] for k, v in request.query_params.items() if k in FILTERS and v}
    try:
        where = _device_filter(args)
        page = views.device_page(store, time.time(), settings.device_interval_s, PAGE_ROWS,
                                 cursor[:2048] or None, where)
    except (views.BadCursor, ValueError):
        raise HTTPException(400, "bad filter or cursor") from None
    body = ("<p><a href=/>fleet overview</a></p><h1>Devices</h1>" + _filter_form(where)
            + _device_table(page.rows, "devices") + _pager(page.next_cursor, "/devices", args)
            + _downloads("/api/v1/export/devices", args))
    return _page("leakcheck: devices", body)


# The finding filters the web page takes (the API's /api/v1/findings takes the same).
FINDING_FILTERS = ("probe", "finding_id", "device_id", "os", "tunnel_kind", "since", "until", "notes")


@router.get("/findings")
def finding_list(request: Request, cursor: str = "", store: Store = Depends(get_store)) -> Response:
    """Findings newest first, filtered by finding, probe, device, OS, tunnel kind, time."""
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    args = {k: v[:128] for k, v in request.query_params.items() if k in FINDING_FILTERS and v}
    try:
        where = views.FindingFilter(probe=args.get("probe"), finding_id=args.get("finding_id"),
                                    device_id=args.get("device_id"), os=args.get("os"),
                                    tunnel_kind=args.get("tunnel_kind"), since=_when(args.get("since")),
                                    until=_when(args.get("until")), notes=args.get("notes") != "false")
        page = views.finding_page(store, PAGE_ROWS, cursor[:2048] or None, where)
    except (views.BadCursor, ValueError):
        raise HTTPException(400, "bad filter or cursor") from None
    fields = "".join(f"<label>{name.replace('_', ' ')} <input name={name} size=12 value=\"{_t(args.get(name))}\">"
                     "</label> " for name in FINDING_FILTERS if name != "notes")
    form = (f"<form method=get action=/findings id=finding-filter>{fields}<label>notes <select name=notes>"
            f"<option value=true>with</option><option value=false{' selected' if args.get('notes') == 'false' else ''}>"
            "without</option></select></label> <button type=submit>Filter</button></form>")
    rows = "".join(f"<tr><td>{_t(f['started_at'])}</td><td><a href=\"/devices/{quote(f['device_id'], safe='')}\">"
                   f"{_t(f['hostname'] or f['device_id'])}</a></td><td>{_t(f['probe'])}</td>"
                   f"<td><a href=\"/findings/{quote(f['finding_id'], safe='')}\">{_t(f['finding_id'])}</a></td>"
                   f"<td class=sev-{_t(f['severity'])}>{_t(f['severity'])}</td><td>{_t(f['summary'])}</td></tr>"
                   for f in page.rows)
    table = ("<table id=finding-list><tr><th>started</th><th>device</th><th>probe</th><th>finding</th>"
             f"<th>severity</th><th>summary</th></tr>{rows or '<tr><td colspan=6>none</td></tr>'}</table>")
    body = ("<p><a href=/>fleet overview</a></p><h1>Findings</h1>" + form + table
            + _pager(page.next_cursor, "/findings", args) + _downloads("/api/v1/export/findings", args))
    return _page("leakcheck: findings", body)


@router.get("/findings/{finding_id}")
def finding_page(finding_id: str, request: Request, cursor: str = "", store: Store = Depends(get_store),
                 settings: Settings = Depends(get_settings)) -> Response:
    """A finding: what it is, and the devices whose latest report has it."""
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    finding_id = finding_id[:128]
    try:
        page = views.finding_devices(store, finding_id, time.time(), settings.device_interval_s, PAGE_ROWS,
                                     cursor[:2048] or None)
    except views.BadCursor:
        raise HTTPException(400, "bad cursor") from None
    recent = views.finding_page(store, 1, None, views.FindingFilter(finding_id=finding_id)).rows
    about = (f"<p id=about><span class=sev-{escape(recent[0]['severity'])}>{escape(recent[0]['severity'])}</span>"
             f" {escape(recent[0]['summary'])}</p>" if recent else "<p id=about>not seen in any stored report</p>")
    fid = quote(finding_id, safe="")
    body = (f"<p><a href=/>fleet overview</a></p><h1 id=finding>{escape(finding_id)}</h1>{about}"
            "<h2>Devices with it now</h2>" + _device_table(page.rows, "finding-devices")
            + _pager(page.next_cursor, f"/findings/{fid}", {})
            + _downloads(f"/api/v1/export/findings/{fid}/devices", {})
            + "<p>Every occurrence: " + _links(f"/api/v1/export/findings", {"finding_id": finding_id}) + "</p>")
    return _page(f"leakcheck: {finding_id}", body)


@router.get("/devices/{device_id}")
def device_page(device_id: str, request: Request, store: Store = Depends(get_store),
                settings: Settings = Depends(get_settings)) -> Response:
    if not _analyst_or_login(request, store):
        return RedirectResponse("/login", status_code=303)
    device_id = device_id[:128]
    view = store.device(device_id, time.time(), settings.device_interval_s, history=100)
    if view is None:
        raise HTTPException(404, "no such device")
    detail = views.finding_detail(store, device_id, store.latest_report(device_id))
    agent = view["agent"]
    rows = "".join(f"<tr><td>{_t(h['started_at'])}</td><td>{_t(h['trigger'])}</td>"
                   f"<td class={_t(h['verdict'])}>{_t(h['verdict'])}</td>"
                   f"<td>{_t(h['tunnel_state'])}</td><td>{_num(h['reconnect_s'])}</td></tr>"
                   for h in view["history"])
    leaks = [f for f in detail if f["severity"] != views.NOTE_SEVERITY]
    notes = [f for f in detail if f["severity"] == views.NOTE_SEVERITY]
    tunnel = _t(view["tunnel_state"]) + (f" ({_t(view['tunnel_kind'])})" if view["tunnel_kind"] else "")
    body = (f"<p><a href=/>fleet overview</a></p><h1 id=hostname>{_t(view['hostname'])}</h1>"
            f"<p>device {_t(view['device_id'])}, {_t(view['os'])} {_t(view['os_version'])}; "
            f"verdict <span id=verdict class={_t(view['verdict'])}>{_t(view['verdict'], 'no report yet')}"
            f"</span>{' <span class=stale>(stale)</span>' if view['stale'] else ''}; tunnel {tunnel}</p>"
            f"<p>agent: spool depth {_t(agent['spool_depth'])}, dropped {_t(agent['dropped'])},"
            f" last upload {_t(agent['last_upload'])}, last error {_t(agent['last_error'])}</p>"
            + (f"<p class=warn id=clock>this device's clock is wrong: its latest report claimed to start "
               f"{_num(view['clock_skew_s'])} s in the future (stored as received)</p>"
               if view["clock_skew_s"] else "")
            + _refused_list(view["refused_enrollments"])
            + "<h2>Current findings</h2>" + _finding_cards(leaks, "findings", "no leak found in the latest report")
            + "<h2>Notes</h2>" + _finding_cards(notes, "device-notes", "none")
            + "<h2>History</h2><table id=history><tr><th>started</th><th>trigger</th><th>verdict</th>"
            f"<th>tunnel</th><th>reconnect s</th></tr>{rows}</table>"
            + _downloads("/api/v1/export/findings", {"device_id": device_id}, "findings of this device"))
    return _page(f"leakcheck: {view['hostname']}", body)


# The device filters the web page takes (the API's /api/v1/devices takes the same).
FILTERS = ("os", "verdict", "tunnel_kind", "finding_id", "probe", "since", "until")


def _device_filter(args: dict[str, str]) -> views.DeviceFilter:
    """Raises ValueError for a time that is not RFC 3339."""
    since, until = args.get("since"), args.get("until")
    return views.DeviceFilter(os=args.get("os"), verdict=args.get("verdict"), tunnel_kind=args.get("tunnel_kind"),
                              finding_id=args.get("finding_id"), probe=args.get("probe"),
                              seen_since=_when(since), seen_until=_when(until))


def _when(text: str | None) -> float | None:
    """An RFC 3339 time as the API takes it (ValueError otherwise)."""
    if not text:
        return None
    if not re.match(Contract.RFC3339, text) or time_problem(text):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    return parse_time(text).timestamp()


def _filter_form(where: views.DeviceFilter) -> str:
    values = {"os": where.os, "verdict": where.verdict, "tunnel_kind": where.tunnel_kind,
              "finding_id": where.finding_id, "probe": where.probe}
    fields = "".join(f"<label>{name.replace('_', ' ')} <input name={name} size=12 value=\"{_t(value)}\"></label> "
                     for name, value in values.items())
    return (f"<form method=get action=/devices id=filter>{fields}"
            "<label>since <input name=since size=20 placeholder=RFC3339></label> "
            "<label>until <input name=until size=20 placeholder=RFC3339></label> "
            "<button type=submit>Filter</button></form>")


def _finding_cards(detail: list[dict[str, Any]], element_id: str, empty: str) -> str:
    """One block per finding: what `leakcheck run` prints, and when it was seen."""
    if not detail:
        return f"<div id={element_id}><p>{escape(empty)}</p></div>"
    cards = []
    for f in detail:
        fid = quote(f["finding_id"], safe="")
        evidence = "".join(f"<tr><th>{escape(str(k))}</th><td>{_t(_evidence_text(v))}</td></tr>"
                           for k, v in f["evidence"].items()) or "<tr><td>none recorded</td></tr>"
        cards.append(
            f"<div class=finding data-finding=\"{escape(f['finding_id'])}\"><h3>"
            f"<span class=sev-{escape(f['severity'])}>{escape(f['severity'])}</span> "
            f"<a href=\"/findings/{fid}\">{escape(f['finding_id'])}</a> ({escape(f['probe'])})</h3>"
            f"<p class=summary>{_t(f['summary'])}</p>"
            f"<p class=fix><b>Fix:</b> {_t(f['recommendation'])}</p>"
            f"<p class=guidance><b>Guidance:</b> {_t(f['guidance'])}</p>"
            f"<p class=seen>first seen {_t(f['first_seen'], 'unknown')}, last seen {_t(f['last_seen'], 'unknown')}</p>"
            f"<table class=evidence><caption>Evidence</caption>{evidence}</table></div>")
    return f"<div id={element_id}>{''.join(cards)}</div>"


def _evidence_text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def _t(value: Any, empty: str = "") -> str:
    """A value for the page, escaped; a missing value is `empty`, never 'None'."""
    return escape(empty) if value is None else escape(str(value))


def _pager(cursor: str | None, path: str, args: dict[str, str]) -> str:
    if not cursor:
        return ""
    return f"<p class=pager><a id=next href=\"{escape(path + '?' + urlencode({**args, 'cursor': cursor}))}\">next page</a></p>"


def _links(path: str, args: dict[str, str]) -> str:
    return " ".join(f"<a class=download href=\"{escape(path + '?' + urlencode({**args, 'format': fmt}))}\">{label}</a>"
                    for fmt, label in (("csv", "CSV"), ("json", "JSON")))


def _downloads(path: str, args: dict[str, str], what: str = "") -> str:
    return f"<p class=downloads>Download{' ' + escape(what) if what else ''}: {_links(path, args)}</p>"


def _refused_list(refused: list[dict[str, Any]]) -> str:
    if not refused:
        return ""
    items = "".join(f"<li>{_t(r['seen_at'])}: {_t(r['reason'])} from {_t(r['hostname'])} "
                    f"(installation {_t(r['instance'])})</li>" for r in refused)
    return f"<h2>Refused enrollments</h2><ul id=refused class=warn>{items}</ul>"


def _link(device: dict[str, Any]) -> str:
    return f"<a href=\"/devices/{quote(device['device_id'], safe='')}\">{escape(device['hostname'])}</a>"


def _num(value: Any) -> str:
    return "" if value is None else f"{float(value):.1f}"


def _leaking_table(page: views.Page) -> str:
    rows = "".join(f"<tr><td>{_link(d)}</td><td>{_t(d['last_report_at'])}</td>"
                   f"<td>{_t(d['tunnel_state'])}</td></tr>" for d in page.rows)
    more = ("<p class=pager><a id=more-leaking href=\"/devices?verdict=leak\">all leaking devices</a></p>"
            if page.next_cursor else "")
    return ("<h2>Leaking devices now</h2><table id=leaking><tr><th>device</th><th>last report</th>"
            f"<th>tunnel</th></tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>{more}"
            + _downloads("/api/v1/export/devices", {"verdict": "leak"}))


def _finding_table(per_finding: list[dict[str, Any]], element_id: str, title: str, export: str) -> str:
    rows = "".join(f"<tr><td>{escape(f['probe'])}</td><td><a href=\"/findings/{quote(f['finding_id'], safe='')}\">"
                   f"{escape(f['finding_id'])}</a></td><td class=sev-{escape(f['severity'])}>{escape(f['severity'])}"
                   f"</td><td>{f['devices']}</td><td>{escape(f['summary'])}</td></tr>" for f in per_finding)
    return (f"<h2>{escape(title)}</h2><table id={element_id}><tr><th>probe</th><th>finding</th><th>severity</th>"
            f"<th>devices</th><th>summary</th></tr>{rows or '<tr><td colspan=5>none</td></tr>'}</table>"
            + _downloads(f"/api/v1/export/summary/{export}", {}))


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
            f"<th></th></tr>{''.join(rows) or '<tr><td colspan=4>no reports</td></tr>'}</table>"
            + _downloads("/api/v1/export/summary/trend", {}))


def _reconnect_table(slowest: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{_t(s['hostname'])}</td><td>{_num(s['reconnect_s'])}</td></tr>" for s in slowest)
    return ("<h2>Slowest reconnects</h2><table id=reconnects><tr><th>device</th><th>seconds</th></tr>"
            f"{rows or '<tr><td colspan=2>none measured</td></tr>'}</table>"
            + _downloads("/api/v1/export/summary/reconnects", {}))


def _device_table(devices: list[dict[str, Any]], element_id: str) -> str:
    rows = "".join(f"<tr><td>{_link(d)}</td><td>{_t(d['os'])}</td>"
                   f"<td class={_t(d['verdict'])}>{_t(d['verdict'], 'no report')}</td>"
                   f"<td>{_t(d['last_report_at'])}{' <span class=stale>stale</span>' if d['stale'] else ''}"
                   f"</td><td>{_t(d['agent']['spool_depth'])}</td></tr>" for d in devices)
    return (f"<table id={element_id}><tr><th>device</th><th>os</th><th>verdict</th><th>last report</th>"
            f"<th>spool</th></tr>{rows or '<tr><td colspan=5>none</td></tr>'}</table>")
