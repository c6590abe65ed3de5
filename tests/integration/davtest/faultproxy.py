"""A fault-injecting HTTP/1.1 reverse proxy for tests (test_faults.py).

    with FaultProxy(srv.base_url, seed="1234-radicale") as proxy:
        url = proxy.url(srv.home_url)          # give this to davsyncd
        ...                                    # davsyncd --once through the proxy
        proxy.wait_idle()                      # nothing in flight any more
        proxy.counts()                         # Counter({"reset_before": 3, ...})
        proxy.faults = False                   # pass everything through untouched

The proxy listens on a free 127.0.0.1 port and forwards every request, on
the same path and with the client's headers (hop-by-hop ones dropped, the
response asked for uncompressed so that it can be cut and edited), to the
real server. While `faults` is True it injects, for a fraction `rate` of the
requests, one fault drawn from a seeded random.Random, so that a seed and
the same request sequence give the same faults:

  reset_before      close (RST) without forwarding or answering
  reset_after       forward, then close without answering (a write happened
                    but the client never hears of it)
  reset_mid_body    forward, send the headers and part of the body, close
  stall             wait STALL_MIN..STALL_MAX seconds before answering, or in
                    the middle of the body; then go on or close (detail says which)
  500               500 Internal Server Error; on a write, sometimes after
                    forwarding it (detail "after-forward")
  503               503 with Retry-After: 1..3, not forwarded
  507               on REPORT: a 507 answer ("status"), or on sync-collection
                    a 507 response for the collection itself added to the
                    multistatus ("in-multistatus": a truncated result whose
                    token is the complete one, so asking again is all it takes)
  403               on PUT/DELETE, not forwarded, with a SabreDAV 4.7 error body
  truncate_xml      a 207 body cut in the middle of its XML, with an honest
                    Content-Length ("honest": a well-formed HTTP message whose
                    XML is broken) or the original one then a close ("close")
  truncate_item     the same, cut inside an item: inside calendar-data or
                    address-data of a 207, or inside the body of a GET
  dup_response      a <response> element of a 207 multistatus repeated
  replay_write      a PUT/DELETE sent to the server twice; the client gets the
                    first or the second answer (detail says which)

Kinds that need a response of some shape (a body, a 207, XML with item data)
fall back to passing it through untouched when the response has no such
shape; only faults that were really injected are recorded (faults()).

Every request is logged (log(): seq, method, path, status, fault, detail) so
that a failing test can show the fault sequence. arm_gate() holds the n-th
request from now on (after forwarding it or not) until release(), so that a
test can SIGKILL the client while a request is in flight. Bounded: a stall
lasts STALL_MAX seconds at most, a held request GATE_HOLD_MAX, a backend
request BACKEND_TIMEOUT; stop() ends stalls and holds at once. Loopback only.
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

BACKEND_TIMEOUT = 60.0    # seconds per forwarded request
STALL_MIN = 0.3
STALL_MAX = 2.5           # a stall never lasts longer
GATE_HOLD_MAX = 15.0      # a held request is answered (or dropped) after this at most

WRITE_METHODS = ("PUT", "DELETE")

# Faults and their weights; each applies to the methods `applies` accepts.
KINDS: dict[str, float] = {
    "reset_before": 1.0,
    "reset_after": 1.0,
    "reset_mid_body": 1.0,
    "stall": 1.0,
    "500": 0.8,
    "503": 0.8,
    "507": 1.0,
    "403": 1.0,
    "truncate_xml": 1.0,
    "truncate_item": 1.2,
    "dup_response": 1.2,
    "replay_write": 1.2,
}

SABRE_403 = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">\n'
    '  <s:sabredav-version>4.7.1</s:sabredav-version>\n'
    '  <s:exception>Sabre\\DAV\\Exception\\Forbidden</s:exception>\n'
    '  <s:message>Permission denied to change data</s:message>\n'
    '</d:error>\n').encode()

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
               "content-length", "accept-encoding", "proxy-connection"}


def applies(kind: str, method: str) -> bool:
    if kind == "507":
        return method == "REPORT"
    if kind in ("403", "replay_write"):
        return method in WRITE_METHODS
    if kind in ("truncate_xml", "dup_response"):
        return method in ("REPORT", "PROPFIND")
    if kind == "truncate_item":
        return method in ("REPORT", "GET")
    return True


@dataclasses.dataclass
class Fault:
    seq: int
    kind: str
    method: str
    path: str
    detail: str = ""


@dataclasses.dataclass
class LogEntry:
    seq: int
    time: float
    method: str
    path: str
    status: Optional[int] = None     # status sent (or that would have been sent); None: no answer
    fault: Optional[str] = None
    detail: str = ""

    def __str__(self) -> str:
        f = f" FAULT {self.fault}" + (f" ({self.detail})" if self.detail else "") if self.fault else ""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        return (f"{stamp} #{self.seq} {self.method} {self.path} -> "
                f"{self.status if self.status is not None else '-'}{f}")


class _Drop(Exception):
    """The connection is to be dropped now (no more bytes to the client)."""


# ---------------------------------------------------------------- body surgery

_RESPONSE_RE = re.compile(rb"<(?P<p>[A-Za-z_][\w.-]*:)?response\b[^>]*>.*?</(?P=p)?response\s*>", re.S)
_DATA_OPEN_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:calendar|address)-data\b[^>]*?(?<!/)>")
_ROOT_RE = re.compile(rb"<(?P<p>[A-Za-z_][\w.-]*:)?multistatus\b[^>]*>")


def response_spans(body: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in _RESPONSE_RE.finditer(body)]


def duplicate_response(body: bytes, rng: random.Random) -> Optional[tuple[bytes, str]]:
    """The multistatus with one of its <response> elements repeated (right
    after itself or before the closing tag), or None when it has none."""
    spans = response_spans(body)
    if not spans:
        return None
    i = rng.randrange(len(spans))
    s, e = spans[i]
    element = body[s:e]
    if rng.random() < 0.5:
        return body[:e] + element + body[e:], f"response {i + 1}/{len(spans)} repeated in place"
    last = spans[-1][1]
    return body[:last] + element + body[last:], f"response {i + 1}/{len(spans)} repeated at the end"


def cut_mid_xml(body: bytes, rng: random.Random) -> Optional[tuple[int, str]]:
    """A cut point that breaks the XML: inside the document, before the
    root element's closing tag is complete."""
    end = body.rstrip().rfind(b"<")
    if end < 2:
        return None
    lo = max(1, len(body) // 10)
    if lo >= end:
        lo = 1
    cut = rng.randrange(lo, end + 1)
    return cut, f"cut at byte {cut} of {len(body)}"


def cut_mid_item(body: bytes, method: str, rng: random.Random) -> Optional[tuple[int, str]]:
    """A cut point inside an item: inside calendar-data/address-data of a
    multistatus, or inside a GET body."""
    if method == "GET":
        if len(body) < 20:
            return None
        cut = rng.randrange(len(body) // 4, len(body) * 3 // 4)
        return cut, f"item body cut at byte {cut} of {len(body)}"
    opens = [m for m in _DATA_OPEN_RE.finditer(body)]
    if not opens:
        return None
    m = rng.choice(opens)
    close = body.find(b"</", m.end())
    if close <= m.end() + 2:
        return None
    cut = rng.randrange(m.end() + 1, close)
    return cut, f"cut at byte {cut} of {len(body)}, inside item data {opens.index(m) + 1}/{len(opens)}"


def add_507(body: bytes, request_path: str) -> Optional[bytes]:
    """The multistatus with a 507 response for the collection itself."""
    root = _ROOT_RE.search(body)
    if not root:
        return None
    p = (root.group("p") or b"").decode()
    close = body.rfind(f"</{p}multistatus".encode())
    if close < 0:
        return None
    href = urllib.parse.urlsplit(request_path).path
    el = (f"<{p}response><{p}href>{href}</{p}href>"
          f"<{p}status>HTTP/1.1 507 Insufficient Storage</{p}status></{p}response>").encode()
    # Before the sync-token, which ends the multistatus of a sync-collection.
    tok = re.search(rb"<(?:[A-Za-z_][\w.-]*:)?sync-token\b", body[root.end():close])
    at = root.end() + tok.start() if tok else close
    return body[:at] + el + body[at:]


# ---------------------------------------------------------------- the proxy


class FaultProxy:
    def __init__(self, backend_url: str, *, seed: object = 0, rate: float = 0.15,
                 kinds: Optional[dict[str, float]] = None, host: str = "127.0.0.1"):
        u = urllib.parse.urlsplit(backend_url)
        if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"FaultProxy forwards to loopback http only, not {backend_url}")
        self.backend_host = u.hostname
        self.backend_port = u.port or 80
        self.host = host
        self.rate = rate
        self.kinds = dict(kinds if kinds is not None else KINDS)
        self.seed = seed
        self.rng = random.Random(str(seed))
        self.faults = True
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0
        self._seq = 0
        self._log: list[LogEntry] = []
        self._faults: list[Fault] = []
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set[socket.socket] = set()
        self._gate: Optional[dict] = None

    # ---------- life cycle

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                conns = list(self._conns)
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def url(self, server_url_or_path: str) -> str:
        """The URL through the proxy for a URL of the backend (or a path)."""
        u = urllib.parse.urlsplit(server_url_or_path)
        path = u.path or "/"
        return f"http://{self.host}:{self.port}{path}" + (f"?{u.query}" if u.query else "")

    # ---------- what happened

    def faults_injected(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def counts(self) -> Counter:
        with self._lock:
            return Counter(f.kind for f in self._faults)

    def log(self) -> list[LogEntry]:
        with self._lock:
            return list(self._log)

    @property
    def requests(self) -> int:
        with self._lock:
            return self._seq

    def idle(self) -> bool:
        with self._lock:
            return self._active == 0

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no request is being handled (a stalled or held one finishes
        within its bound); TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fault proxy still busy after {timeout:g} s "
                                       f"({self._active} requests in flight)")
                self._idle.wait(min(left, 0.5))

    # ---------- the gate (for killing the client mid-request)

    def arm_gate(self, nth: int, forward: bool) -> threading.Event:
        """Holds the `nth` request from now (1 = the next one): forwarded to
        the backend first when `forward`, then held until release() (or
        GATE_HOLD_MAX). The returned event is set when it is held."""
        hit = threading.Event()
        with self._lock:
            self._gate = {"at": self._seq + nth, "forward": forward, "hit": hit,
                          "release": threading.Event()}
        return hit

    def release(self) -> None:
        with self._lock:
            gate, self._gate = self._gate, None
        if gate:
            gate["release"].set()

    # ---------- internals

    def _register(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _begin(self, method: str, path: str) -> tuple[LogEntry, Optional[str], Optional[dict]]:
        with self._lock:
            self._active += 1
            self._seq += 1
            entry = LogEntry(self._seq, time.time(), method, path)
            self._log.append(entry)
            gate = None
            if self._gate is not None and self._gate["at"] == self._seq:
                gate = self._gate
            kind = None
            if self.faults and self.rng.random() < self.rate:
                names = [k for k in self.kinds if applies(k, method) and self.kinds[k] > 0]
                if names:
                    kind = self.rng.choices(names, [self.kinds[k] for k in names])[0]
            return entry, kind, gate

    def _end(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def _record(self, entry: LogEntry, kind: str, detail: str = "") -> None:
        with self._lock:
            entry.fault, entry.detail = kind, detail
            self._faults.append(Fault(entry.seq, kind, entry.method, entry.path, detail))

    def _draw(self, fn: Callable[[random.Random], object]):
        with self._lock:
            return fn(self.rng)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _backend(self, method: str, target: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.backend_host, self.backend_port,
                                          timeout=BACKEND_TIMEOUT)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP:
                    conn.putheader(k, v)
            conn.putheader("Accept-Encoding", "identity")
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            hdrs = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, resp.reason, hdrs, data
        finally:
            conn.close()

    def handle(self, h: "_Handler") -> None:
        method = h.command.upper()
        target = h.path
        if target.startswith(("http://", "https://")):
            u = urllib.parse.urlsplit(target)
            target = u.path + ("?" + u.query if u.query else "")
        body = h.read_body()          # raises _Drop on a short body
        entry, kind, gate = self._begin(method, target)
        try:
            self._handle(h, method, target, body, entry, kind, gate)
        finally:
            self._end()

    def _hold(self, gate: dict) -> None:
        gate["hit"].set()
        deadline = time.monotonic() + GATE_HOLD_MAX
        while not gate["release"].is_set() and not self._stopping.is_set():
            if time.monotonic() >= deadline:
                break
            gate["release"].wait(0.05)

    def _handle(self, h: "_Handler", method: str, target: str, body: bytes, entry: LogEntry,
                kind: Optional[str], gate: Optional[dict]) -> None:
        headers = list(h.headers.items())
        rng_pick = self._draw
        if gate is not None:
            if gate["forward"]:
                status, reason, rh, data = self._backend(method, target, headers, body)
                entry.status = status
            self._hold(gate)
            if not gate["forward"]:
                raise _Drop()
            h.send(status, reason, rh, data)
            return

        # Faults decided before anything reaches the server.
        if kind == "reset_before":
            self._record(entry, kind)
            raise _Drop()
        if kind == "503":
            ra = rng_pick(lambda r: r.randint(1, 3))
            self._record(entry, kind, f"Retry-After: {ra}")
            entry.status = 503
            h.send(503, "Service Unavailable", [("Retry-After", str(ra)),
                                                ("Content-Type", "text/plain")],
                   b"Service temporarily unavailable\n")
            return
        if kind == "403":
            self._record(entry, kind, "SabreDAV Forbidden")
            entry.status = 403
            h.send(403, "Forbidden", [("Content-Type", "application/xml; charset=utf-8")], SABRE_403)
            return
        if kind == "500" and not (method in WRITE_METHODS and rng_pick(lambda r: r.random() < 0.5)):
            self._record(entry, kind, "before-forward")
            entry.status = 500
            h.send(500, "Internal Server Error", [("Content-Type", "text/plain")],
                   b"Internal Server Error\n")
            return
        if kind == "507" and "sync-collection" not in body.decode("utf-8", "replace"):
            self._record(entry, kind, "status")
            entry.status = 507
            h.send(507, "Insufficient Storage", [("Content-Type", "text/plain")],
                   b"Insufficient Storage\n")
            return
        if kind == "507" and rng_pick(lambda r: r.random() < 0.4):
            self._record(entry, kind, "status")
            entry.status = 507
            h.send(507, "Insufficient Storage", [("Content-Type", "text/plain")],
                   b"Insufficient Storage\n")
            return
        stall_first = None
        if kind == "stall":
            stall_first = rng_pick(lambda r: (r.uniform(STALL_MIN, STALL_MAX),
                                              r.random() < 0.5, r.random() < 0.25))
            secs, before_headers, then_close = stall_first
            if before_headers:
                self._record(entry, kind, f"{secs:.1f} s before the answer"
                             + (", then close" if then_close else ""))
                self._sleep(secs)
                if then_close:
                    raise _Drop()

        status, reason, rh, data = self._backend(method, target, headers, body)
        entry.status = status

        if kind == "replay_write":
            status2, reason2, rh2, data2 = self._backend(method, target, headers, body)
            second = rng_pick(lambda r: r.random() < 0.5)
            self._record(entry, kind, f"server answered {status} then {status2}; client gets the "
                         + ("second" if second else "first"))
            if second:
                status, reason, rh, data = status2, reason2, rh2, data2
                entry.status = status
            h.send(status, reason, rh, data)
            return
        if kind == "500":   # a write that happened, reported as failed
            self._record(entry, kind, f"after-forward (server said {status})")
            entry.status = 500
            h.send(500, "Internal Server Error", [("Content-Type", "text/plain")],
                   b"Internal Server Error\n")
            return
        if kind == "reset_after":
            self._record(entry, kind, f"server said {status}")
            raise _Drop()
        if kind == "reset_mid_body":
            if len(data) >= 2:
                cut = rng_pick(lambda r: r.randrange(1, len(data)))
                self._record(entry, kind, f"{cut} of {len(data)} bytes sent")
                h.send(status, reason, rh, data[:cut], content_length=len(data))
                raise _Drop()
            self._record(entry, "reset_after", f"server said {status}, no body to cut")
            raise _Drop()
        if kind == "stall" and not stall_first[1]:
            secs, _, then_close = stall_first
            if len(data) >= 2:
                cut = rng_pick(lambda r: r.randrange(1, len(data)))
                self._record(entry, kind, f"{secs:.1f} s after {cut} of {len(data)} body bytes"
                             + (", then close" if then_close else ""))
                h.send(status, reason, rh, data[:cut], content_length=len(data))
                self._sleep(secs)
                if then_close:
                    raise _Drop()
                h.send_raw(data[cut:])
                return
            self._record(entry, kind, f"{secs:.1f} s before the answer (no body)"
                         + (", then close" if then_close else ""))
            self._sleep(secs)
            if then_close:
                raise _Drop()
        if kind == "507" and status == 207:
            new = add_507(data, target)
            if new is not None:
                self._record(entry, kind, "in-multistatus")
                data = new
        if kind in ("truncate_xml", "truncate_item") and 200 <= status < 300 and data:
            if kind == "truncate_xml" and status == 207:
                cut = rng_pick(lambda r: cut_mid_xml(data, r))
            elif kind == "truncate_item":
                cut = rng_pick(lambda r: cut_mid_item(data, method, r)) \
                    if (status == 207 or method == "GET") else None
            else:
                cut = None
            if cut is not None:
                at, what = cut
                honest = rng_pick(lambda r: r.random() < 0.5)
                self._record(entry, kind, ("honest Content-Length, " if honest
                                           else "original Content-Length then close, ") + what)
                if honest:
                    h.send(status, reason, rh, data[:at])
                    return
                h.send(status, reason, rh, data[:at], content_length=len(data))
                raise _Drop()
        if kind == "dup_response" and status == 207:
            dup = rng_pick(lambda r: duplicate_response(data, r))
            if dup is not None:
                data, what = dup
                self._record(entry, kind, what)
        h.send(status, reason, rh, data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "davtest-faultproxy"
    proxy: FaultProxy = None
    timeout = 120          # an idle keep-alive connection is closed after this

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.proxy._register(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.proxy._register(self.connection, False)

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        try:
            self.proxy.handle(self)
        except _Drop:
            self._reset()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, socket.timeout):
            self.close_connection = True
        except (OSError, http.client.HTTPException) as e:
            # The backend failed (or went away): a gateway error, as a proxy would.
            try:
                self.send(502, "Bad Gateway", [("Content-Type", "text/plain")],
                          f"fault proxy: {type(e).__name__}: {e}\n".encode())
            except OSError:
                self.close_connection = True

    def _reset(self) -> None:
        """Drops the connection with a RST (SO_LINGER 0)."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Drop()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _Drop()
                out += chunk
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n > 0 else b""
        if len(data) < n:
            raise _Drop()      # the client went away while sending
        return data

    def send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
             content_length: Optional[int] = None) -> None:
        self.send_response_only(status, reason)
        have_date = False
        for k, v in headers:
            if k.lower() in _HOP_BY_HOP:
                continue
            have_date = have_date or k.lower() == "date"
            self.send_header(k, v)
        if not have_date:
            self.send_header("Date", self.date_time_string())
        no_body = status in (204, 304) or 100 <= status < 200 or self.command == "HEAD"
        if not no_body:
            self.send_header("Content-Length", str(len(body) if content_length is None
                                                   else content_length))
        self.end_headers()
        if body and not no_body:
            self.wfile.write(body)
        self.wfile.flush()

    def send_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
