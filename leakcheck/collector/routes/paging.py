"""Keyset pagination on the wire: a list answer is a JSON array (as before
pagination existed), and the next page is named by an RFC 8288 `Link:
<...>; rel="next"` header and an `X-Next-Cursor` header. No header: last page."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import HTTPException, Query, Request, Response

from leakcheck.collector.views import BadCursor, Page

Cursor = Annotated[Optional[str], Query(max_length=2048, pattern=r"^[A-Za-z0-9_-]*$",
                                        description="opaque: from the previous page's Link rel=next")]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]


def next_link(request: Request, cursor: str) -> str:
    """This very query with `cursor` replaced: the filters carry over."""
    return str(request.url.include_query_params(cursor=cursor))


def paged(request: Request, response: Response, page: Page) -> list:
    if page.next_cursor:
        response.headers["Link"] = f'<{next_link(request, page.next_cursor)}>; rel="next"'
        response.headers["X-Next-Cursor"] = page.next_cursor
    return page.rows


def bad_cursor(exc: BadCursor) -> HTTPException:
    return HTTPException(400, f"bad cursor: {exc}")
