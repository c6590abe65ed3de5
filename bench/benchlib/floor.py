"""The server floor: a bare HTTP/1.1 client (http.client, one keep-alive
connection) sending the minimal request sequence of a row.

Only the requests are timed (from sending to the last byte of the answer);
picking a token or an href out of an answer happens outside the clock.
`elapsed` accumulates the timed seconds; `requests` counts requests.
"""

from __future__ import annotations

import base64
import http.client
import re
import time
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

XML = "application/xml; charset=utf-8"
HEAD = '<?xml version="1.0" encoding="utf-8"?>'
NS_DAV = "DAV:"

_TOKEN_RE = re.compile(rb"<(?:[A-Za-z0-9_]+:)?sync-token(?:\s[^>]*)?>\s*([^<]*?)\s*</", re.S)


class FloorError(RuntimeError):
    pass


class FloorClient:
    def __init__(self, port: int, user: str, password: str, host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.conn = http.client.HTTPConnection(host, port, timeout=600)
        self.elapsed = 0.0
        self.requests = 0

    def close(self) -> None:
        self.conn.close()

    def reset_clock(self) -> None:
        self.elapsed = 0.0
        self.requests = 0

    # --- raw ------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None, ok=(200, 207)) -> tuple[int, http.client.HTTPMessage, bytes]:
        h = {"Authorization": self.auth, "User-Agent": "davsyncd-bench-floor"}
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            h["Content-Type"] = XML
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=body, headers=h)
                resp = self.conn.getresponse()
                payload = resp.read()
                self.elapsed += time.perf_counter() - t0
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle keep-alive connection: reconnect (untimed retry).
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
                if attempt:
                    raise
        self.requests += 1
        if resp.status not in ok:
            raise FloorError(f"{method} {path}: HTTP {resp.status}\n{payload[:500]!r}")
        return resp.status, resp.headers, payload

    # --- requests of the rows ------------------------------------------------

    def propfind_version(self, path: str, ctag: bool = False) -> str:
        """Depth-0 PROPFIND of the sync-token (and getctag); returns the token."""
        props = "<D:sync-token/>" + ("<CS:getctag/>" if ctag else "")
        body = (f'{HEAD}<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">'
                f"<D:prop>{props}</D:prop></D:propfind>")
        _, _, payload = self.request("PROPFIND", path, body, {"Depth": "0"})
        return token_of(payload)

    def query_all(self, path: str, is_addressbook: bool) -> bytes:
        """calendar-query / addressbook-query returning every item with data."""
        if is_addressbook:
            body = (f'{HEAD}<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
                    "<D:prop><D:getetag/><C:address-data/></D:prop><C:filter/></C:addressbook-query>")
        else:
            body = (f'{HEAD}<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
                    "<D:prop><D:getetag/><C:calendar-data/></D:prop>"
                    '<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>')
        return self.request("REPORT", path, body, {"Depth": "1"})[2]

    def sync_collection(self, path: str, token: str, with_data: bool = False,
                        is_addressbook: bool = False) -> bytes:
        """RFC 6578 sync-collection (Depth 0) asking for etags (and item data)."""
        data = ""
        ns = ""
        if with_data:
            if is_addressbook:
                ns, data = ' xmlns:C="urn:ietf:params:xml:ns:carddav"', "<C:address-data/>"
            else:
                ns, data = ' xmlns:C="urn:ietf:params:xml:ns:caldav"', "<C:calendar-data/>"
        tok = f"<D:sync-token>{escape(token)}</D:sync-token>" if token else "<D:sync-token/>"
        body = (f'{HEAD}<D:sync-collection xmlns:D="DAV:"{ns}>{tok}<D:sync-level>1</D:sync-level>'
                f"<D:prop><D:getetag/>{data}</D:prop></D:sync-collection>")
        return self.request("REPORT", path, body, {"Depth": "0"})[2]

    def list_etags(self, path: str) -> bytes:
        body = (f'{HEAD}<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/>'
                "</D:prop></D:propfind>")
        return self.request("PROPFIND", path, body, {"Depth": "1"})[2]

    def get(self, path: str) -> tuple[str, bytes]:
        _, headers, payload = self.request("GET", path)
        return headers.get("ETag", ""), payload

    def put(self, path: str, text: str, etag: str | None, is_addressbook: bool) -> str:
        ctype = "text/vcard; charset=utf-8" if is_addressbook else "text/calendar; charset=utf-8"
        h = {"Content-Type": ctype}
        if etag:
            h["If-Match"] = etag
        else:
            h["If-None-Match"] = "*"
        _, headers, _ = self.request("PUT", path, text.encode(), h, ok=(200, 201, 204))
        return headers.get("ETag", "")


def escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def bodies_in(payload: bytes, is_addressbook: bool) -> int:
    """How many item bodies (vCards or iCalendar objects) an answer carries."""
    return payload.count(b"BEGIN:VCARD" if is_addressbook else b"BEGIN:VCALENDAR")


def token_of(payload: bytes) -> str:
    m = _TOKEN_RE.search(payload)
    if not m:
        raise FloorError(f"no sync-token in answer: {payload[:300]!r}")
    return m.group(1).decode().replace("&amp;", "&")


def changes_of(payload: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """(changed [(path, etag)], deleted [path]) of a sync-collection answer."""
    root = ET.fromstring(payload)
    changed, deleted = [], []
    for resp in root.iter("{DAV:}response"):
        href = unquote(urlsplit((resp.findtext("{DAV:}href") or "").strip()).path)
        status = resp.findtext("{DAV:}status")
        if status and status.split()[1] in ("404", "410"):
            deleted.append(href)
            continue
        etag = resp.find(".//{DAV:}getetag")
        if href.endswith("/"):
            continue
        changed.append((href, (etag.text or "").strip() if etag is not None else ""))
    return changed, deleted
