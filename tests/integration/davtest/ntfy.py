"""A loopback ntfy server for tests: the part of ntfy's documented HTTP API
that a UnifiedPush subscriber and a Web Push sender use
(docs.ntfy.sh: "Publishing", "Subscribe via API", UnifiedPush).

    ntfy = NtfyServer(keepalive=1.0).start()
    ntfy.origin                       # "http://127.0.0.1:<port>"
    ...                               # POST /<topic>?up=1 publishes, GET /<topics>/json subscribes
    ntfy.messages(), ntfy.streams()   # what was published and who listened
    ntfy.drop_streams()               # cut every open stream (the daemon reconnects)
    ntfy.refuse_streams = True        # new streams get 503 until reset
    ntfy.violations()                 # requests that do not follow the API
    ntfy.stop()

What it serves:
  - POST or PUT /<topic>: publish; the body is the message. Topics are 1 to
    64 characters of [-_A-Za-z0-9]. With ?up=1 (UnifiedPush) a body that is
    not UTF-8 is kept base64-encoded with "encoding":"base64" in the message,
    as ntfy does; a text body stays text. Bodies over 4096 bytes get 413. An
    Authorization header with the "vapid" scheme (RFC 8292, what a Web Push
    sender sends) is accepted and ignored; any other is a violation (this
    double has no users). Answer: 200 with the message as JSON.
  - GET /<topic>[,<topic>...]/json: a chunked JSON stream, one object per
    line: an "open" event (topic = the list), then the cached messages the
    since= parameter asks for, then each new message of those topics as it is
    published, and a "keepalive" every `keepalive` seconds of silence.
    since= takes a message id (messages published after it), "all", a Unix
    timestamp or a duration like 10s / 5m. poll=1 ends the response after
    the cached messages.
  - Anything else: 404 (or 405) and a violation.

Every message is kept for the whole test (the "cache"). Each stream records
its topics, its since= value, and the ids it delivered, so a test can check
that a message published while no stream was open arrived on the next one.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

TOPIC_RE = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
MAX_BODY = 4096
STREAM_PARAMS = {"since", "poll"}
PUBLISH_PARAMS = {"up"}


def _new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(12))


@dataclass
class Message:
    id: str
    time: int
    topic: str
    message: str
    encoding: Optional[str]
    body: bytes                   # as published
    published_at: float           # time.monotonic()
    open_streams: int             # streams of its topic open when it was published

    def event(self) -> dict:
        e = {"id": self.id, "time": self.time, "event": "message", "topic": self.topic,
             "message": self.message}
        if self.encoding:
            e["encoding"] = self.encoding
        return e


@dataclass
class Stream:
    seq: int
    topics: list
    since: Optional[str]
    user_agent: str
    opened_at: float
    closed_at: Optional[float] = None
    status: int = 200
    delivered: list = field(default_factory=list)   # message ids, in order
    keepalives: int = 0
    bytes_sent: int = 0


class NtfyServer:
    def __init__(self, keepalive: float = 45.0):
        self.keepalive = keepalive
        self.refuse_streams = False
        self._lock = threading.Condition()
        self._messages: list[Message] = []
        self._streams: list[Stream] = []
        self._open: dict[int, Stream] = {}
        self._drop_gen = 0
        self._violations: list[str] = []
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    # ---------------------------------------------------------------- control

    def start(self) -> "NtfyServer":
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                server._publish(self)

            def do_PUT(self):
                server._publish(self)

            def do_GET(self):
                server._get(self)

            def _other(self):
                server._violation(f"{self.command} {self.path}: method not in the API")
                server._reply(self, 405, {"error": "method not allowed"})

            do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _other

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._drop_gen += 1
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def drop_streams(self) -> None:
        """Closes every open stream (a network drop as the client sees it)."""
        with self._lock:
            self._drop_gen += 1
            self._lock.notify_all()

    def messages(self, topic: Optional[str] = None) -> list[Message]:
        with self._lock:
            return [m for m in self._messages if topic is None or m.topic == topic]

    def streams(self) -> list[Stream]:
        with self._lock:
            return list(self._streams)

    def open_streams(self) -> list[Stream]:
        with self._lock:
            return list(self._open.values())

    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                v = predicate()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"ntfy double: timed out waiting for {what}")
                self._lock.wait(min(left, 0.2))

    # ---------------------------------------------------------------- HTTP

    def _violation(self, what: str) -> None:
        with self._lock:
            self._violations.append(what)

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, doc: dict) -> None:
        body = (json.dumps(doc) + "\n").encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _publish(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        topic = url.path.strip("/")
        if not TOPIC_RE.match(topic):
            self._violation(f"{h.command} {url.path}: not a topic")
            return self._reply(h, 404, {"error": "page not found"})
        for k in query:
            if k not in PUBLISH_PARAMS:
                self._violation(f"{h.command} /<topic>: unexpected parameter {k}")
        auth = h.headers.get("Authorization")
        if auth is not None and not auth.lower().startswith("vapid "):
            self._violation(f"{h.command} /<topic>: Authorization scheme other than vapid")
        if len(body) > MAX_BODY:
            return self._reply(h, 413, {"error": "message too large"})
        up = query.get("up", ["0"])[0] in ("1", "yes", "true")
        try:
            text, encoding = body.decode("utf-8"), None
        except UnicodeDecodeError:
            if not up:
                # Real ntfy makes a binary body an attachment: nothing a
                # UnifiedPush sender should cause.
                self._violation(f"{h.command} /<topic>: binary body without up=1")
                return self._reply(h, 400, {"error": "binary body needs up=1 here"})
            text, encoding = base64.b64encode(body).decode(), "base64"
        with self._lock:
            n_open = sum(1 for s in self._open.values() if topic in s.topics)
            m = Message(_new_id(), int(time.time()), topic, text, encoding, body,
                        time.monotonic(), n_open)
            self._messages.append(m)
            self._lock.notify_all()
        self._reply(h, 200, m.event())

    def _since(self, since: Optional[str], topics: list) -> Optional[list]:
        """Cached messages for since=, None when the value is invalid."""
        msgs = [m for m in self._messages if m.topic in topics]
        if since is None:
            return []
        if since == "all":
            return msgs
        if re.fullmatch(r"\d+", since):
            return [m for m in msgs if m.time >= int(since)]
        d = re.fullmatch(r"(\d+)([smhd])", since)
        if d:
            secs = int(d.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[d.group(2)]
            return [m for m in msgs if m.time >= int(time.time()) - secs]
        ids = [m.id for m in self._messages]
        if since in ids:
            pos = ids.index(since)
            return [m for m in self._messages[pos + 1:] if m.topic in topics]
        return None

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[1] != "json":
            self._violation(f"GET {url.path}: not a JSON stream (/<topics>/json)")
            return self._reply(h, 404, {"error": "page not found"})
        topics = parts[0].split(",")
        if not topics or not all(TOPIC_RE.match(t) for t in topics):
            self._violation(f"GET /<topics>/json: a topic name is invalid")
            return self._reply(h, 404, {"error": "page not found"})
        if len(set(topics)) != len(topics):
            self._violation("GET /<topics>/json: a topic is listed twice")
        for k in query:
            if k not in STREAM_PARAMS:
                self._violation(f"GET /<topics>/json: unexpected parameter {k}")
        since = query.get("since", [None])[0]
        poll = query.get("poll", ["0"])[0] in ("1", "yes", "true")
        with self._lock:
            stream = Stream(len(self._streams) + 1, topics, since,
                            h.headers.get("User-Agent") or "", time.monotonic())
            self._streams.append(stream)
            if self.refuse_streams or self._stopping:
                stream.status = 503
                stream.closed_at = time.monotonic()
                self._lock.notify_all()
                refused = True
            else:
                refused = False
                cached = self._since(since, topics)
                if cached is None:
                    self._violation(f"GET /<topics>/json: since= names no message we sent")
                    cached = []
        if refused:
            return self._reply(h, 503, {"error": "service unavailable (test)"})
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            self._stream(h, stream, cached, poll)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            with self._lock:
                self._open.pop(stream.seq, None)
                stream.closed_at = time.monotonic()
                self._lock.notify_all()
            h.close_connection = True

    def _write(self, h, stream: Stream, event: dict) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        h.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        h.wfile.flush()
        stream.bytes_sent += len(line)

    def _stream(self, h, stream: Stream, cached: list, poll: bool) -> None:
        with self._lock:
            gen = self._drop_gen
            self._open[stream.seq] = stream
            sent = {m.id for m in cached}
            self._write(h, stream, {"id": _new_id(), "time": int(time.time()), "event": "open",
                                    "topic": ",".join(stream.topics)})
            for m in cached:
                self._write(h, stream, m.event())
                stream.delivered.append(m.id)
            seen = len(self._messages)
            self._lock.notify_all()
        if poll:
            h.wfile.write(b"0\r\n\r\n")
            return
        last = time.monotonic()
        while True:
            with self._lock:
                while (len(self._messages) == seen and self._drop_gen == gen
                       and time.monotonic() - last < self.keepalive):
                    self._lock.wait(max(0.0, self.keepalive - (time.monotonic() - last)))
                if self._drop_gen != gen:
                    # Cut without the chunked terminator: a drop, not an end.
                    try:
                        h.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                new = self._messages[seen:]
                seen = len(self._messages)
                for m in new:
                    if m.topic in stream.topics and m.id not in sent:
                        self._write(h, stream, m.event())
                        stream.delivered.append(m.id)
                        sent.add(m.id)
                if not new:
                    self._write(h, stream, {"id": _new_id(), "time": int(time.time()),
                                            "event": "keepalive",
                                            "topic": ",".join(stream.topics)})
                    stream.keepalives += 1
                last = time.monotonic()
                self._lock.notify_all()
