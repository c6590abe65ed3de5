"""A WebDAV-Push server front for tests (draft-bitfire-webdav-push-00).

PushFront is an HTTP reverse proxy on a free 127.0.0.1 port in front of a
running Radicale or Xandikos: every request is forwarded to the backend on the
same path, and the front adds the server side of WebDAV-Push:

    with Radicale(tmp) as srv, PushFront(srv.base_url) as front:
        view = front.server_view(srv)          # srv's helpers, through the front
        cal = view.make_calendar("work")
        ...                                    # the daemon talks to front.base_url
        front.wait_idle()                      # all pushes caused so far are out
        front.pushes()                         # what was sent, to whom, with which token

What the front does:
  - OPTIONS: "webdav-push" is added to the DAV header.
  - PROPFIND: on collections, the properties P:transports (P:web-push with
    P:vapid-public-key type="p256ecdsa"), P:topic and P:supported-triggers
    (content-update depth 1, property-update depth 0) are injected into the
    207 multistatus when the request asked for them (or for allprop /
    propname). The rest of the body stays byte for byte what the backend sent.
    Without such a request the response is passed through untouched.
  - POST push-register to a collection: registration (201 + Location +
    Expires), renewal (200, same Location), refusals (403 DAV:error with
    P:invalid-subscription / P:push-not-available / P:no-trigger-supported;
    400 for malformed XML). The caller must be allowed to read the collection
    on the backend (the front checks with a Depth-0 PROPFIND using the request's
    Authorization; 401/404 are relayed).
  - DELETE <registration URL>: 204, or 404 when unknown or expired.
  - After a successful PUT, DELETE, MOVE, COPY, PROPPATCH, MKCOL or MKCALENDAR
    the front answers the client first, then (in a worker thread) reads the
    parent collection's new DAV:sync-token from the backend and sends a push
    message, RFC 8291 (aes128gcm) encrypted and VAPID (RFC 8292) signed, to
    every subscription of that collection. A PROPPATCH on a collection also
    sends a property update to subscriptions that asked for property updates.
    Delivery is in order per subscription; a push resource answering 404/410
    loses its subscription.
  - Push-Dont-Notify (list of quoted registration URLs, or "*" alone) is
    honoured (exact, byte-for-byte match) unless honour_dont_notify=False.

Everything the front sees and does is logged (requests(), pushes(),
suppressed(), registrations_log(), violations(), counters()).

The module also has the Web Push crypto used by the front (webpush_encrypt,
webpush_decrypt, vapid_* helpers), PushSink (a loopback HTTP push resource
that records what it receives) and WebPushKeys (a subscriber's key pair and
auth secret, to play "another client" in tests).
"""

from __future__ import annotations

import base64
import calendar
import copy
import dataclasses
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import struct
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Optional, Union

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from davtest import violations

NS_PUSH = "https://bitfire.at/webdav-push"
NS_PUSH_LEGACY = "DAV:Push"
NS_DAV = "DAV:"
NS_WRONG = "urn:example:davtest:not-webdav-push"

STATE_METHODS = frozenset({"PUT", "DELETE", "MOVE", "COPY", "PROPPATCH", "MKCOL", "MKCALENDAR"})

BACKEND_TIMEOUT = 60.0     # per request forwarded to the backend
PUSH_TIMEOUT = 10.0        # per POST to a push resource
DEFAULT_MAX_EXPIRY = 3 * 86400

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length"}


# =========================================================== encoding helpers


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: Union[str, bytes]) -> bytes:
    """base64url with or without padding; raises ValueError on bad input."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise ValueError("bad base64url length")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def http_date(ts: float, fmt: str = "gmt") -> str:
    """IMF-fixdate ('Wed, 20 Dec 2023 10:03:31 GMT'); fmt '+0000' gives
    Nextcloud's variant ('Wed, 20 Dec 2023 10:03:31 +0000')."""
    s = email.utils.formatdate(int(ts), usegmt=True)
    if fmt == "+0000":
        s = s[:-3] + "+0000"
    elif fmt != "gmt":
        raise ValueError(f"unknown date format {fmt!r}")
    return s


_IMF = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|"
                  r"Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d) GMT")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def parse_imf_fixdate(text: str) -> Optional[int]:
    """Seconds since the epoch of a strict IMF-fixdate, None if it is not one."""
    m = _IMF.fullmatch(text.strip())
    if not m:
        return None
    _, d, mon, y, hh, mm, ss = m.groups()
    try:
        ts = calendar.timegm((int(y), _MONTHS.index(mon) + 1, int(d), int(hh), int(mm), int(ss)))
    except (ValueError, OverflowError):
        return None
    # The weekday must match the date.
    if email.utils.formatdate(ts, usegmt=True)[:3] != m.group(1):
        return None
    return ts


def parse_http_date(text: str) -> Optional[int]:
    """Lenient: IMF-fixdate with 'GMT' or a numeric zone ('+0000'); None if neither."""
    try:
        dt = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return int(dt.timestamp())


# =========================================================== Web Push crypto (RFC 8291/8188)

P256 = ec.SECP256R1()


def generate_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(P256)


def private_key_from_raw(d: Union[bytes, str]) -> ec.EllipticCurvePrivateKey:
    """P-256 private key from its 32-byte scalar (bytes or base64url)."""
    if isinstance(d, str):
        d = b64u_decode(d)
    return ec.derive_private_key(int.from_bytes(d, "big"), P256)


def public_bytes(key: Union[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]) -> bytes:
    """Uncompressed point (65 bytes, 0x04 || X || Y)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def public_key_from_bytes(raw: bytes) -> ec.EllipticCurvePublicKey:
    """Raises ValueError unless `raw` is an uncompressed P-256 point on the curve."""
    if len(raw) != 65 or raw[0] != 4:
        raise ValueError("not an uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(P256, raw)


def _hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _hkdf_one_block(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) for outputs of at most 32 bytes (one block)."""
    assert length <= 32
    prk = _hmac256(salt, ikm)
    return _hmac256(prk, info + b"\x01")[:length]


def _webpush_keys(ecdh_secret: bytes, auth_secret: bytes, ua_public: bytes, as_public: bytes,
                  salt: bytes) -> tuple[bytes, bytes]:
    ikm = _hkdf_one_block(auth_secret, ecdh_secret,
                          b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = _hkdf_one_block(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf_one_block(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    return cek, nonce


def webpush_encrypt(plaintext: bytes, ua_public: bytes, auth_secret: bytes, *,
                    sender_private: Optional[ec.EllipticCurvePrivateKey] = None,
                    salt: Optional[bytes] = None, record_size: int = 4096,
                    padding: int = 0) -> bytes:
    """RFC 8291 message encryption with the aes128gcm content coding (RFC 8188).

    One record: salt(16) | rs(4) | idlen(1)=65 | sender public key(65) |
    AES-128-GCM(plaintext || 0x02 || padding zeros). A fresh sender key and
    salt are made unless given (the RFC 8291 Appendix A vector gives both).
    """
    if sender_private is None:
        sender_private = generate_p256()
    if salt is None:
        salt = os.urandom(16)
    if len(salt) != 16:
        raise ValueError("salt must be 16 bytes")
    if len(auth_secret) != 16:
        raise ValueError("auth secret must be 16 bytes")
    as_public = public_bytes(sender_private)
    ecdh = sender_private.exchange(ec.ECDH(), public_key_from_bytes(ua_public))
    cek, nonce = _webpush_keys(ecdh, auth_secret, ua_public, as_public, salt)
    padded = plaintext + b"\x02" + b"\x00" * padding
    if len(padded) + 16 > record_size:
        raise ValueError("plaintext too long for one record")
    header = salt + struct.pack("!I", record_size) + bytes([len(as_public)]) + as_public
    return header + AESGCM(cek).encrypt(nonce, padded, None)


def webpush_decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey,
                    auth_secret: bytes) -> bytes:
    """Inverse of webpush_encrypt (single record); raises ValueError on bad input."""
    if len(body) < 21:
        raise ValueError("too short for an aes128gcm header")
    salt, rs, idlen = body[:16], struct.unpack("!I", body[16:20])[0], body[20]
    if idlen != 65 or len(body) < 21 + idlen + 17:
        raise ValueError("bad key id or no ciphertext")
    as_public = body[21:21 + idlen]
    ciphertext = body[21 + idlen:]
    if len(ciphertext) > rs:
        raise ValueError("more than one record")
    ua_public = public_bytes(ua_private)
    ecdh = ua_private.exchange(ec.ECDH(), public_key_from_bytes(as_public))
    cek, nonce = _webpush_keys(ecdh, auth_secret, ua_public, as_public, salt)
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except Exception as e:  # cryptography's InvalidTag
        raise ValueError(f"decryption failed: {type(e).__name__}") from None
    padded = padded.rstrip(b"\x00")
    if not padded.endswith(b"\x02"):
        raise ValueError("no last-record padding delimiter")
    return padded[:-1]


# ----------------------------------------------------------- VAPID (RFC 8292)


def vapid_jwt(private_key: ec.EllipticCurvePrivateKey, aud: str, sub: str,
              exp: Optional[int] = None) -> str:
    """Compact JWS (ES256) with claims aud, exp (default now + 12 h), sub."""
    header = {"typ": "JWT", "alg": "ES256"}
    claims = {"aud": aud, "exp": int(exp if exp is not None else time.time() + 12 * 3600),
              "sub": sub}
    signing_input = (b64u_encode(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64u_encode(json.dumps(claims, separators=(",", ":")).encode()))
    der = private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64u_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def vapid_authorization(private_key: ec.EllipticCurvePrivateKey, endpoint: str, sub: str,
                        exp: Optional[int] = None) -> str:
    """Authorization header value 'vapid t=<JWT>, k=<public key>' for a push resource."""
    return (f"vapid t={vapid_jwt(private_key, origin_of(endpoint), sub, exp)}, "
            f"k={b64u_encode(public_bytes(private_key))}")


def origin_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def parse_vapid_authorization(value: str) -> dict:
    """{'t': jwt, 'k': key} of a 'vapid t=..., k=...' header; ValueError otherwise."""
    m = re.fullmatch(r"\s*vapid\s+(.*)", value or "", re.I | re.S)
    if not m:
        raise ValueError("not a vapid authorization")
    params = {}
    for part in m.group(1).split(","):
        if "=" not in part:
            raise ValueError(f"bad vapid parameter {part!r}")
        k, v = part.split("=", 1)
        params[k.strip().lower()] = v.strip().strip('"')
    if "t" not in params or "k" not in params:
        raise ValueError("vapid authorization lacks t or k")
    return params


def verify_vapid(value: str, *, expected_key: Optional[str] = None,
                 expected_aud: Optional[str] = None, now: Optional[float] = None) -> dict:
    """Checks a vapid Authorization header: ES256 signature with key k, exp in
    the future (at most 24 h ahead), aud (when given) and k (when given, compared
    as decoded bytes). Returns the JWT claims; raises ValueError with the reason."""
    params = parse_vapid_authorization(value)
    key_raw = b64u_decode(params["k"])
    if expected_key is not None and key_raw != b64u_decode(expected_key):
        raise ValueError("vapid key differs from the subscription's")
    parts = params["t"].split(".")
    if len(parts) != 3:
        raise ValueError("JWT is not a compact JWS")
    header = json.loads(b64u_decode(parts[0]))
    claims = json.loads(b64u_decode(parts[1]))
    if header.get("alg") != "ES256":
        raise ValueError(f"JWT alg {header.get('alg')!r}")
    sig = b64u_decode(parts[2])
    if len(sig) != 64:
        raise ValueError("ES256 signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        public_key_from_bytes(key_raw).verify(der, (parts[0] + "." + parts[1]).encode("ascii"),
                                              ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ValueError("bad JWT signature") from None
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + 86400 + 60:
        raise ValueError(f"bad exp {exp!r}")
    if expected_aud is not None and claims.get("aud") != expected_aud:
        raise ValueError(f"aud {claims.get('aud')!r} != {expected_aud!r}")
    return claims


# =========================================================== push messages


def _x(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def push_message_xml(topic: Optional[str], *, content_update: bool = False,
                     sync_token: Optional[str] = None, property_update: bool = False,
                     props: Iterable[str] = (), ns: str = NS_PUSH) -> bytes:
    """A push-message document. `props` are Clark names listed in
    property-update/D:prop (a '{ns}name' in the push namespace gets prefix P)."""
    out = [f'<?xml version="1.0" encoding="utf-8"?>\n<P:push-message xmlns:P="{_x(ns)}" '
           f'xmlns:D="DAV:">']
    if topic is not None:
        out.append(f"<P:topic>{_x(topic)}</P:topic>")
    if content_update:
        if sync_token is not None:
            out.append(f"<P:content-update><D:sync-token>{_x(sync_token)}</D:sync-token>"
                       "</P:content-update>")
        else:
            out.append("<P:content-update/>")
    if property_update:
        props = list(props)
        if props:
            inner = []
            for p in props:
                pns, local = p[1:].split("}", 1) if p.startswith("{") else (NS_DAV, p)
                if pns == ns:
                    inner.append(f"<P:{local}/>")
                elif pns == NS_DAV:
                    inner.append(f"<D:{local}/>")
                else:
                    inner.append(f'<X:{local} xmlns:X="{_x(pns)}"/>')
            out.append("<P:property-update><D:prop>" + "".join(inner)
                       + "</D:prop></P:property-update>")
        else:
            out.append("<P:property-update/>")
    out.append("</P:push-message>\n")
    return "".join(out).encode("utf-8")


def parse_push_message(data: bytes) -> dict:
    """{'namespace', 'topic', 'content_update', 'sync_token', 'property_update',
    'props' (Clark names), 'vapid_rotation'} of a push-message document (in
    either namespace); raises ValueError for anything else."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"not XML: {e}") from None
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if root.tag not in ("{%s}push-message" % NS_PUSH, "{%s}push-message" % NS_PUSH_LEGACY):
        raise ValueError(f"root is {root.tag}")
    topic = root.findtext("{%s}topic" % ns)
    cu = root.findall("{%s}content-update" % ns)
    token = None
    for c in cu:
        t = c.findtext("{DAV:}sync-token")
        if t is not None:
            token = t.strip()
    pu = root.findall("{%s}property-update" % ns)
    props = []
    for p in pu:
        prop = p.find("{DAV:}prop")
        if prop is not None:
            props.extend(child.tag for child in prop)
    return {
        "namespace": ns,
        "topic": topic.strip() if topic is not None else None,
        "content_update": bool(cu),
        "sync_token": token,
        "property_update": bool(pu),
        "props": props,
        "vapid_rotation": topic is None and "{%s}transports" % ns in props,
    }


# =========================================================== records


class Headers:
    """Case-insensitive view of a list of (name, value) header pairs."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items_list = [(str(k), str(v)) for k, v in items]

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        vals = self.get_all(name)
        return ", ".join(vals) if vals else default

    def get_all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.items_list if k.lower() == n]

    def __contains__(self, name: str) -> bool:
        return bool(self.get_all(name))

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v

    def items(self) -> list[tuple[str, str]]:
        return list(self.items_list)

    def __repr__(self) -> str:
        return f"Headers({self.items_list!r})"


@dataclass
class RequestRecord:
    """One request the front received. push_dont_notify is the raw header
    (all lines joined with ', ') or None; dont_notify its parsed value (a list
    of URLs, '*', or None when absent/invalid; see dont_notify_error)."""
    seq: int
    time: float            # when the request was read (time.time())
    method: str
    path: str
    headers: Headers
    body: bytes
    push_dont_notify: Optional[str]
    dont_notify: Union[list, str, None]
    dont_notify_error: Optional[str]
    status: Optional[int] = None
    handled_by: str = "backend"    # 'backend' or 'front'
    responded: Optional[float] = None   # when the response was written


@dataclass
class Subscription:
    """A registration. url is the registration URL (the Location sent)."""
    url: str
    collection: str               # collection path, unquoted, with a trailing '/'
    topic: str
    push_resource: str
    public_key: bytes             # subscriber's uncompressed P-256 key
    auth_secret: bytes
    content_encoding: str
    content_update: Optional[str]   # requested depth, None when not requested
    property_update: Optional[str]
    props: list                   # property-update/D:prop (Clark names)
    expires: int                  # epoch seconds
    created: float
    updated: float
    authorization: Optional[str] = field(default=None, repr=False)
    requested_expires: Optional[str] = None

    @property
    def id(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class PushRecord:
    """One POST to a push resource (or an attempt)."""
    time: float
    subscription: str           # registration URL
    push_resource: str
    collection: Optional[str]
    topic: Optional[str]
    sync_token: Optional[str]
    kind: str                   # 'content-update', 'property-update', 'update' (both),
                                # 'vapid-rotation', 'wrong-namespace', 'raw'
    plaintext: Optional[bytes]
    body: bytes
    headers: dict
    status: Optional[int] = None
    error: Optional[str] = None
    request_seqs: list = field(default_factory=list)   # requests that caused it
    merged: int = 1             # number of updates merged into this message


@dataclass
class SuppressedRecord:
    time: float
    request_seq: int
    subscription: str
    collection: str
    reason: str                 # 'push-dont-notify' or 'push-dont-notify-*'


# =========================================================== XML helpers


_TAG_NAME = re.compile(rb"<([^\s/>]+)")


class _Frame:
    __slots__ = ("name", "start", "end", "close_start", "selfclosing", "children", "text",
                 "qname")

    def __init__(self, name: str, start: int):
        self.name = name
        self.start = start
        self.end = start
        self.close_start = start
        self.selfclosing = False
        self.children: list[_Frame] = []
        self.text: list[str] = []
        self.qname = b""

    def child(self, name: str) -> Optional["_Frame"]:
        for c in self.children:
            if c.name == name:
                return c
        return None


def _parse_frames(body: bytes) -> _Frame:
    """Element tree of `body` with byte offsets (expat, names 'ns local')."""
    p = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    root = _Frame("#document", 0)
    stack = [root]

    def start(name, attrs):
        f = _Frame(name, p.CurrentByteIndex)
        m = _TAG_NAME.match(body, f.start)
        f.qname = m.group(1) if m else b""
        stack[-1].children.append(f)
        stack.append(f)

    def end(name):
        f = stack.pop()
        idx = p.CurrentByteIndex
        closing = b"</" + f.qname
        if (body.startswith(closing, idx)
                and body[idx + len(closing):idx + len(closing) + 1] in (b">", b" ", b"\t",
                                                                       b"\r", b"\n")):
            f.close_start = idx
            f.end = body.index(b">", idx) + 1
        else:  # empty-element tag: expat reports the position after it
            f.selfclosing = True
            f.close_start = idx
            f.end = idx

    def chars(data):
        stack[-1].text.append(data)

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    p.Parse(body, True)
    return root


def _clark(ns: str, local: str) -> str:
    return "{%s}%s" % (ns, local)


def _frame_clark(f: _Frame) -> str:
    if " " in f.name:
        ns, local = f.name.split(" ", 1)
        return _clark(ns, local)
    return f.name


# =========================================================== the front


class PushFrontError(RuntimeError):
    pass


@dataclass
class _Event:
    seq: int
    collection: str
    kind: str                 # 'content' or 'property'
    authorization: Optional[str]
    dont_notify: Union[list, str, None]
    request_seq: int
    props: list


@dataclass
class _Pending:
    seq: int
    due: float
    sub_url: str
    kind: str                 # 'message', 'raw', 'wrong-namespace', 'vapid-rotation'
    topic: Optional[str] = None
    collection: Optional[str] = None
    content: bool = False
    sync_token: Optional[str] = None
    property: bool = False
    props: list = field(default_factory=list)
    body: Optional[bytes] = None          # for 'raw'
    extra_headers: dict = field(default_factory=dict)
    vapid_key: Any = None                 # signing key override
    request_seqs: list = field(default_factory=list)
    merged: int = 1
    done: Optional[threading.Event] = None
    result: Optional[PushRecord] = None


class PushFront:
    """WebDAV-Push front for a backend at `backend_url` (see the module docstring).

    Keyword arguments (all are also attributes that may be changed while
    running; they take effect with the next request/push):
      max_expiry          cap on registration lifetime in seconds (3 days)
      default_expiry      lifetime when the client asks for none (= max_expiry)
      expires_format      'gmt' (IMF-fixdate) or '+0000' (Nextcloud's Expires)
      refuse              None, '403' (push-not-available), '400' (Nextcloud-like
                          error body) or '429' (with Retry-After: retry_after)
      refuse_count        refuse only this many registrations, then accept again
      retry_after         seconds sent in Retry-After with refuse='429'
      update_status       status of a renewal (same push resource, same collection):
                          201 (the draft: "the same as for subscription registration",
                          201 or 204); 200 models Xandikos
      strict_content_type refuse (415) a push-register whose Content-Type is not
                          application/xml or text/xml; False only records it
      strict_expires      refuse (400) an expires that is not an IMF-fixdate;
                          False only records it and ignores the element
      push_content_type   Content-Type of the push message POST (the draft's
                          Web Push transport: application/xml; charset="UTF-8")
      honour_dont_notify  honour Push-Dont-Notify (False = an older server)
      dont_notify_match   'exact' (byte-for-byte URL) or 'last-segment' (Xandikos)
      legacy_namespace    properties/messages/errors in 'DAV:Push' (registrations
                          are accepted in both namespaces, see accept_new_namespace)
      merge_window        seconds: content updates per subscription within the
                          window are merged into one message with the latest token
      delay               seconds each push is held before delivery
      advertise_vapid     include P:vapid-public-key in P:transports
      advertise_options   add 'webdav-push' to the DAV header of OPTIONS
      ttl, urgency, topic_header   TTL/Urgency headers; topic_header=True sends a
                          Topic header derived from the collection topic
      vapid_subject       'sub' claim of the VAPID JWT
      backend_auth        (user, password) for the front's own backend lookups
                          (default: the Authorization of the triggering request)
      drop_dead           drop a subscription whose push resource answers 404/410
      no_trigger_condition  precondition name for a registration without a
                          supported trigger ('no-trigger-supported')
      push_filter         callable(collection path) -> bool: which collections
                          are push-capable (default: every collection)
      vapid_private_key   P-256 private key (object, raw bytes or base64url)
    """

    def __init__(self, backend_url: str, *, host: str = "127.0.0.1", port: int = 0,
                 max_expiry: int = DEFAULT_MAX_EXPIRY, default_expiry: Optional[int] = None,
                 expires_format: str = "gmt", refuse: Optional[str] = None,
                 refuse_count: Optional[int] = None, retry_after: int = 120,
                 update_status: int = 201, honour_dont_notify: bool = True,
                 dont_notify_match: str = "exact", legacy_namespace: bool = False,
                 accept_new_namespace: bool = True,
                 merge_window: float = 0.0, delay: float = 0.0, advertise_vapid: bool = True,
                 advertise_options: bool = True, ttl: int = 60, urgency: Optional[str] = None,
                 topic_header: bool = False,
                 vapid_subject: str = "mailto:davtest-pushfront@example.invalid",
                 backend_auth: Optional[tuple[str, str]] = None, drop_dead: bool = True,
                 no_trigger_condition: str = "no-trigger-supported",
                 push_filter: Optional[Callable[[str], bool]] = None,
                 vapid_private_key: Any = None, topic_salt: str = "davtest-push-topic:",
                 registration_prefix: str = "/push-subscriptions/",
                 push_content_type: str = 'application/xml; charset="UTF-8"',
                 strict_content_type: bool = True, strict_expires: bool = True):
        u = urllib.parse.urlsplit(backend_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"backend must be an http:// URL, not {backend_url!r}")
        self.backend_url = backend_url if backend_url.endswith("/") else backend_url + "/"
        self.backend_host = u.hostname
        self.backend_port = u.port or 80
        self.host = host
        self._requested_port = port
        self.max_expiry = max_expiry
        self.default_expiry = default_expiry
        self.expires_format = expires_format
        self.refuse = refuse
        self.refuse_count = refuse_count
        self.retry_after = retry_after
        self.update_status = update_status
        self.honour_dont_notify = honour_dont_notify
        self.dont_notify_match = dont_notify_match
        self.legacy_namespace = legacy_namespace
        self.accept_new_namespace = accept_new_namespace
        self.merge_window = merge_window
        self.delay = delay
        self.advertise_vapid = advertise_vapid
        self.advertise_options = advertise_options
        self.ttl = ttl
        self.urgency = urgency
        self.topic_header = topic_header
        self.vapid_subject = vapid_subject
        self.backend_auth = backend_auth
        self.drop_dead = drop_dead
        self.no_trigger_condition = no_trigger_condition
        self.push_filter = push_filter
        self.topic_salt = topic_salt
        self.registration_prefix = registration_prefix
        self.push_content_type = push_content_type
        self.strict_content_type = strict_content_type
        self.strict_expires = strict_expires
        if vapid_private_key is None:
            self._vapid = generate_p256()
        elif isinstance(vapid_private_key, (bytes, str)):
            self._vapid = private_key_from_raw(vapid_private_key)
        else:
            self._vapid = vapid_private_key
        self.old_vapid_keys: list[ec.EllipticCurvePrivateKey] = []

        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._subs: dict[str, Subscription] = {}      # registration URL -> Subscription
        self._requests: list[RequestRecord] = []
        self._pushes: list[PushRecord] = []
        self._suppressed: list[SuppressedRecord] = []
        self._reglog: list[dict] = []
        self._violations: list[str] = []
        self._counters: dict[str, int] = {}
        self._seq = 0
        self._events: list[_Event] = []
        self._event_busy = False
        self._staged = 0
        self._outbox: list[_Pending] = []
        self._delivering = False
        self._last_due: dict[str, float] = {}
        self._paused = False
        self._stopping = False
        self._server: Optional[ThreadingHTTPServer] = None
        self._threads: list[threading.Thread] = []
        self._http = requests.Session()
        violations.track(self)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "PushFront":
        if self._server is not None:
            raise PushFrontError("already started")
        front = self

        class Handler(_Handler):
            pass
        Handler.front = front
        self._server = ThreadingHTTPServer((self.host, self._requested_port), Handler)
        self._server.daemon_threads = True
        self._stopping = False
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731
        for target, name in ((serve, "pushfront-http"),
                             (self._event_loop, "pushfront-events"),
                             (self._delivery_loop, "pushfront-delivery")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=PUSH_TIMEOUT + 5)
        self._threads.clear()
        self._server = None
        self._http.close()

    def __enter__(self) -> "PushFront":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise PushFrontError("not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return urllib.parse.urljoin(self.base_url, path)

    def server_view(self, server):
        """A copy of a davtest DavServer whose helpers talk to the front
        (same user/password, own session). Stopping the view does not stop
        the backend."""
        view = copy.copy(server)
        view.port = self.port
        view.proc = None
        view.session = requests.Session()
        view.session.auth = (server.user, server.password)
        view.session.headers["User-Agent"] = "davtest-via-pushfront"
        return view

    # ------------------------------------------------------------ keys and topics

    @property
    def vapid_public_key(self) -> str:
        """Current VAPID public key, base64url of the uncompressed point."""
        with self._lock:
            return b64u_encode(public_bytes(self._vapid))

    @property
    def vapid_private_key(self) -> ec.EllipticCurvePrivateKey:
        with self._lock:
            return self._vapid

    @property
    def namespace(self) -> str:
        return NS_PUSH_LEGACY if self.legacy_namespace else NS_PUSH

    def topic_for(self, collection: str) -> str:
        """The stable topic of a collection (path or URL)."""
        key = self.collection_key(collection)
        return b64u_encode(hashlib.sha256((self.topic_salt + key).encode()).digest()[:16])

    @staticmethod
    def collection_key(path_or_url: str) -> str:
        """Unquoted path with exactly one trailing '/'."""
        path = urllib.parse.urlsplit(path_or_url).path or "/"
        path = urllib.parse.unquote(path)
        return path.rstrip("/") + "/"

    @staticmethod
    def parent_key(path_or_url: str) -> str:
        path = urllib.parse.unquote(urllib.parse.urlsplit(path_or_url).path or "/").rstrip("/")
        return (path.rsplit("/", 1)[0] if "/" in path else "") + "/"

    # ------------------------------------------------------------ logs

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def counters(self) -> dict[str, int]:
        """requests, forwarded, registrations, renewals, refusals, unregistrations,
        pushes_sent, pushes_failed, pushes_suppressed, subscriptions_dropped, ..."""
        with self._lock:
            return dict(self._counters)

    def requests(self, method: Optional[str] = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._requests if method is None or r.method == method]

    def pushes(self, subscription: Any = None) -> list[PushRecord]:
        """Pushes attempted (all, or to one subscription: object, URL or push resource)."""
        with self._lock:
            out = list(self._pushes)
        if subscription is not None:
            url = self._sub_url(subscription, must_exist=False)
            out = [p for p in out if p.subscription == url or p.push_resource == url]
        return out

    def suppressed(self) -> list[SuppressedRecord]:
        """Pushes not sent because of Push-Dont-Notify."""
        with self._lock:
            return list(self._suppressed)

    def registrations_log(self) -> list[dict]:
        """Registration events: {'time', 'action' (created/renewed/refused/deleted/
        expired/dropped/dead), 'url', 'status', 'detail'}."""
        with self._lock:
            return list(self._reglog)

    def violations(self) -> list[str]:
        """Protocol violations the front noticed in client requests (read
        only: whatever no test takes fails the test, see davtest.violations)."""
        with self._lock:
            return list(self._violations)

    def take_violations(self) -> list[str]:
        """The violations so far, cleared: for a test that caused them on
        purpose and asserts them."""
        with self._lock:
            out = list(self._violations)
            self._violations.clear()
            return out

    def clear_logs(self) -> None:
        with self._lock:
            self._requests.clear()
            self._pushes.clear()
            self._suppressed.clear()
            self._reglog.clear()
            self._violations.clear()
            self._counters.clear()

    def _violation(self, text: str) -> None:
        with self._lock:
            self._violations.append(text)

    def _reg_event(self, action: str, url: Optional[str], status: Optional[int] = None,
                   detail: str = "") -> None:
        with self._lock:
            self._reglog.append({"time": time.time(), "action": action, "url": url,
                                 "status": status, "detail": detail})

    # ------------------------------------------------------------ subscriptions

    def _prune(self) -> None:
        now = time.time()
        with self._lock:
            for url, s in list(self._subs.items()):
                if s.expires <= now:
                    del self._subs[url]
                    self._reg_event("expired", url)
                    self._count("subscriptions_expired")

    def subscriptions(self, collection: Optional[str] = None) -> list[Subscription]:
        """Copies of the live registrations (of one collection when given)."""
        self._prune()
        key = self.collection_key(collection) if collection is not None else None
        with self._lock:
            return [dataclasses.replace(s) for s in self._subs.values()
                    if key is None or s.collection == key]

    def subscription(self, which: Any) -> Subscription:
        """One live registration by object, registration URL or push resource."""
        url = self._sub_url(which)
        with self._lock:
            return dataclasses.replace(self._subs[url])

    def _sub_url(self, which: Any, must_exist: bool = True) -> Optional[str]:
        if isinstance(which, Subscription):
            return which.url
        which = str(which)
        with self._lock:
            if which in self._subs:
                return which
            for s in self._subs.values():
                if s.push_resource == which:
                    return s.url
        if must_exist:
            raise KeyError(f"no subscription {which!r}")
        return which

    def expire(self, which: Any) -> None:
        """Lets a registration expire now (it is dropped on the next access)."""
        url = self._sub_url(which)
        with self._lock:
            self._subs[url].expires = int(time.time()) - 1
        self._prune()

    def set_expiry(self, which: Any, when: float) -> None:
        url = self._sub_url(which)
        with self._lock:
            self._subs[url].expires = int(when)

    def drop_all_subscriptions(self) -> int:
        """Forgets every registration (as after a server upgrade); returns how many."""
        with self._lock:
            n = len(self._subs)
            for url in list(self._subs):
                self._reg_event("dropped", url)
            self._subs.clear()
            self._count("subscriptions_dropped", n)
            return n

    # ------------------------------------------------------------ waiting

    def idle(self) -> bool:
        """True when no event is queued or being processed and no push is pending."""
        with self._lock:
            return not self._events and not self._event_busy and not self._outbox \
                and not self._delivering and not self._staged

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Waits until every push caused so far is delivered (or failed).
        With delay/merge_window this includes the held messages."""
        with self._cv:
            if not self._cv.wait_for(self.idle, timeout):
                raise TimeoutError(f"push front not idle after {timeout:g} s "
                                   f"(events {len(self._events)}, outbox {len(self._outbox)})")

    def wait_for_push(self, pred: Callable[[PushRecord], bool] = lambda p: True,
                      timeout: float = 30.0, start: int = 0) -> PushRecord:
        """The first push (from index `start` of pushes()) matching pred."""
        def check():
            for p in self._pushes[start:]:
                if pred(p):
                    return p
            return None
        with self._cv:
            found = self._cv.wait_for(check, timeout)
        if not found:
            raise TimeoutError(f"no matching push within {timeout:g} s; "
                               f"pushes: {self.pushes()}")
        return found

    # ------------------------------------------------------------ manual pushes

    def pause_delivery(self) -> None:
        """Holds every push in the outbox until resume_delivery(), whatever
        their due time: a test then controls the order of merging and
        delivery instead of racing a clock."""
        with self._cv:
            self._paused = True

    def resume_delivery(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def queued_updates(self) -> int:
        """Updates waiting in the outbox (a merged message counts each)."""
        with self._lock:
            return sum(q.merged for q in self._outbox)

    def rotate_vapid_key(self) -> str:
        """New VAPID key pair. Every subscription gets a message with no topic
        and property-update/D:prop/P:transports, signed with the old key (the
        push resources are bound to it); PROPFIND reports the new key from now
        on. Returns the new public key (base64url)."""
        with self._lock:
            old = self._vapid
            self.old_vapid_keys.append(old)
            self._vapid = generate_p256()
            subs = list(self._subs.values())
            for s in subs:
                self._enqueue_pending(_Pending(0, 0, s.url, "vapid-rotation", vapid_key=old),
                                      mergeable=False)
            self._count("vapid_rotations")
            return b64u_encode(public_bytes(self._vapid))

    def send_property_update(self, collection: str, props: Iterable[str] = (),
                             all_subscriptions: bool = False) -> int:
        """A property update of `collection` to its subscriptions that asked for
        property updates (all of them with all_subscriptions=True). Returns the count."""
        key = self.collection_key(collection)
        self._prune()
        n = 0
        with self._lock:
            for s in self._subs.values():
                if s.collection == key and (s.property_update is not None or all_subscriptions):
                    self._enqueue_pending(_Pending(0, 0, s.url, "message", topic=s.topic,
                                                   collection=key, property=True,
                                                   props=list(props)))
                    n += 1
        return n

    def send_content_update(self, collection: str, sync_token: Optional[str] = None,
                            look_up: bool = True) -> int:
        """A content update of `collection` to its content-update subscriptions,
        with `sync_token` (looked up at the backend when None and look_up)."""
        key = self.collection_key(collection)
        self._prune()
        if sync_token is None and look_up:
            auth = None
            with self._lock:
                for s in self._subs.values():
                    if s.collection == key and s.authorization:
                        auth = s.authorization
            sync_token = self._lookup_sync_token(key, auth)
        n = 0
        with self._lock:
            for s in self._subs.values():
                if s.collection == key and s.content_update is not None:
                    self._enqueue_pending(_Pending(0, 0, s.url, "message", topic=s.topic,
                                                   collection=key, content=True,
                                                   sync_token=sync_token))
                    n += 1
        return n

    def send_wrong_namespace_message(self, subscription: Any = None) -> int:
        """A content-update-like message whose elements are in a foreign namespace
        (the daemon must ignore it), to one subscription or all."""
        subs = [self.subscription(subscription)] if subscription is not None \
            else self.subscriptions()
        with self._lock:
            for s in subs:
                self._enqueue_pending(_Pending(0, 0, s.url, "wrong-namespace", topic=s.topic,
                                               collection=s.collection), mergeable=False)
        return len(subs)

    def push_raw(self, subscription: Any, body: bytes, headers: Optional[dict] = None,
                 wait: bool = False, timeout: float = 30.0) -> Optional[PushRecord]:
        """POSTs `body` unchanged (e.g. a tampered ciphertext) to the subscription's
        push resource, in order with its other pushes; with wait=True returns
        the PushRecord once sent."""
        url = self._sub_url(subscription)
        p = _Pending(0, 0, url, "raw", body=bytes(body), extra_headers=dict(headers or {}),
                     done=threading.Event() if wait else None)
        with self._lock:
            s = self._subs[url]
            p.topic, p.collection = s.topic, s.collection
            self._enqueue_pending(p, mergeable=False)
        if wait:
            if not p.done.wait(timeout):
                raise TimeoutError("raw push not sent in time")
            return p.result
        return None

    def encrypt_for(self, subscription: Any, plaintext: bytes, **kw) -> bytes:
        """plaintext encrypted for a subscription (for hand-made/tampered pushes)."""
        s = self.subscription(subscription)
        return webpush_encrypt(plaintext, s.public_key, s.auth_secret, **kw)

    # ------------------------------------------------------------ request handling

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _handle(self, h: "_Handler") -> None:
        method = h.command.upper()
        target = h.path
        if target.startswith("http://") or target.startswith("https://"):
            u = urllib.parse.urlsplit(target)
            target = u.path + ("?" + u.query if u.query else "")
        try:
            body = h.read_body()
        except ValueError as e:
            h.send_simple(400, str(e).encode(), "text/plain")
            return
        header_items = list(h.headers.items())
        raw_pdn = h.headers.get_all("Push-Dont-Notify")
        pdn_raw = ", ".join(raw_pdn) if raw_pdn else None
        dont, dont_err = (None, None)
        if pdn_raw is not None:
            dont, dont_err = parse_dont_notify(pdn_raw)
            if dont_err:
                self._violation(f"{method} {target}: Push-Dont-Notify {pdn_raw!r}: {dont_err}")
        rec = RequestRecord(self._next_seq(), time.time(), method, target, Headers(header_items),
                            body, pdn_raw, dont, dont_err)
        with self._lock:
            self._requests.append(rec)
        self._count("requests")
        path = urllib.parse.urlsplit(target).path
        events: list[_Event] = []
        try:
            if path.startswith(self.registration_prefix):
                rec.handled_by = "front"
                status, hdrs, out = self._handle_registration_url(method, path, h)
            elif method == "POST" and self._is_push_register(body):
                rec.handled_by = "front"
                status, hdrs, out = self._handle_register(path, body, h)
            else:
                status, hdrs, out = self._forward(method, target, header_items, body, h)
                if method in STATE_METHODS and 200 <= status < 300:
                    events = self._events_for(method, path, h, rec)
        except Exception as e:  # noqa: BLE001 - answered as 502 and logged
            self._violation(f"push front internal error: {method} {target}: "
                            f"{type(e).__name__}: {e}")
            status, hdrs, out = 502, [("Content-Type", "text/plain")], \
                f"push front: {type(e).__name__}: {e}".encode()
        rec.status = status
        if events:
            # Counted as pending (see idle()) before the client can see the
            # response, handed to the worker only after it was written.
            with self._cv:
                self._staged += len(events)
        try:
            h.send_full(status, hdrs, out, head=(method == "HEAD"))
            rec.responded = time.time()
        finally:
            if events:
                with self._cv:
                    self._staged -= len(events)
                    self._events.extend(events)
                    self._cv.notify_all()

    # ---- forwarding

    def _backend_request(self, method: str, target: str, headers: list[tuple[str, str]],
                         body: Optional[bytes]) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.backend_host, self.backend_port,
                                          timeout=BACKEND_TIMEOUT)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            has_host = False
            for k, v in headers:
                if k.lower() in _HOP_BY_HOP:
                    continue
                if k.lower() == "host":
                    has_host = True
                conn.putheader(k, v)
            if not has_host:
                conn.putheader("Host", f"{self.backend_host}:{self.backend_port}")
            if body or method in ("PUT", "POST", "PROPFIND", "PROPPATCH", "REPORT",
                                  "MKCALENDAR", "MKCOL"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _forward(self, method: str, target: str, header_items: list, body: bytes,
                 h: "_Handler") -> tuple[int, list, bytes]:
        self._count("forwarded")
        inject = None
        fwd_headers = header_items
        if method == "PROPFIND":
            inject = self._propfind_request(body)
            if inject is not None:
                # the body is rewritten: ask for it uncompressed
                fwd_headers = [(k, v) for k, v in header_items
                               if k.lower() != "accept-encoding"] + [("Accept-Encoding",
                                                                      "identity")]
        status, reason, rhdrs, data = self._backend_request(method, target, fwd_headers, body)
        h.reason_override = reason
        out_headers = [(k, v) for k, v in rhdrs if k.lower() not in _HOP_BY_HOP]
        if method == "OPTIONS" and self.advertise_options:
            out_headers = _add_dav_class(out_headers, "webdav-push")
        if inject is not None and status == 207:
            new = self._inject(data, *inject)
            if new is not None:
                data = new
        if method == "HEAD":
            cl = [v for k, v in rhdrs if k.lower() == "content-length"]
            h.head_length = cl[0] if cl else None
        return status, out_headers, data

    # ---- PROPFIND

    def _push_prop_names(self) -> list[str]:
        ns = self.namespace
        return [_clark(ns, "transports"), _clark(ns, "topic"), _clark(ns, "supported-triggers")]

    def _propfind_request(self, body: bytes) -> Optional[tuple[str, list[str]]]:
        """(mode, push props asked for) or None when nothing is to be injected."""
        names = self._push_prop_names()
        if not body.strip():
            return ("allprop", names)
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return None
        if root.tag != "{DAV:}propfind":
            return None
        if root.find("{DAV:}propname") is not None:
            return ("propname", names)
        if root.find("{DAV:}allprop") is not None:
            return ("allprop", names)
        prop = root.find("{DAV:}prop")
        if prop is None:
            return None
        asked = [c.tag for c in prop if c.tag in names]
        return ("prop", asked) if asked else None

    def _render_prop(self, name: str, path: str, empty: bool) -> str:
        ns = self.namespace
        local = name.split("}", 1)[1]
        if empty:
            return f'<P:{local} xmlns:P="{ns}"/>'
        if local == "transports":
            key = ""
            if self.advertise_vapid:
                key = (f'<P:vapid-public-key type="p256ecdsa">{self.vapid_public_key}'
                       "</P:vapid-public-key>")
            return f'<P:transports xmlns:P="{ns}"><P:web-push>{key}</P:web-push></P:transports>'
        if local == "topic":
            return f'<P:topic xmlns:P="{ns}">{_x(self.topic_for(path))}</P:topic>'
        if local == "supported-triggers":
            return (f'<P:supported-triggers xmlns:P="{ns}" xmlns:D="DAV:">'
                    "<P:content-update><D:depth>1</D:depth></P:content-update>"
                    "<P:property-update><D:depth>0</D:depth></P:property-update>"
                    "</P:supported-triggers>")
        raise AssertionError(name)

    def _push_capable(self, key: str) -> bool:
        return self.push_filter is None or bool(self.push_filter(key))

    def _inject(self, body: bytes, mode: str, names: list[str]) -> Optional[bytes]:
        try:
            doc = _parse_frames(body)
        except xml.parsers.expat.ExpatError:
            return None
        ms = doc.child("DAV: multistatus")
        if ms is None:
            return None
        edits: list[tuple[int, int, bytes]] = []
        for resp in ms.children:
            if resp.name != "DAV: response":
                continue
            href = resp.child("DAV: href")
            if href is None:
                continue
            href_text = "".join(href.text).strip()
            key = self.collection_key(href_text)
            propstats = [c for c in resp.children if c.name == "DAV: propstat"]
            is_coll = None
            for ps in propstats:
                prop = ps.child("DAV: prop")
                rt = prop.child("DAV: resourcetype") if prop is not None else None
                if rt is not None:
                    is_coll = rt.child("DAV: collection") is not None
            if is_coll is None:
                is_coll = urllib.parse.urlsplit(href_text).path.endswith("/")
            if not is_coll or not self._push_capable(key):
                continue
            ok_ps = None
            present = set()
            for ps in propstats:
                status = "".join(ps.child("DAV: status").text) if ps.child("DAV: status") \
                    else ""
                prop = ps.child("DAV: prop")
                if prop is None:
                    continue
                parts = status.split()
                if len(parts) >= 2 and parts[1] == "200":
                    ok_ps = ok_ps or ps
                    present |= {_frame_clark(c) for c in prop.children}
                    continue
                doomed = [c for c in prop.children if _frame_clark(c) in names]
                if not doomed:
                    continue
                if len(doomed) == len(prop.children):
                    edits.append((ps.start, ps.end, b""))
                else:
                    edits.extend((c.start, c.end, b"") for c in doomed)
            add = [n for n in names if n not in present]
            if not add:
                continue
            text = "".join(self._render_prop(n, key, mode == "propname") for n in add).encode()
            if ok_ps is not None:
                prop = ok_ps.child("DAV: prop")
                if prop.selfclosing:
                    q = prop.qname
                    edits.append((prop.start, prop.end, b"<" + q + b">" + text + b"</" + q
                                  + b">"))
                else:
                    edits.append((prop.close_start, prop.close_start, text))
            else:
                new = (b'<D:propstat xmlns:D="DAV:"><D:prop>' + text
                       + b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
                if resp.selfclosing:
                    continue
                edits.append((resp.close_start, resp.close_start, new))
        if not edits:
            return body
        out = body
        for start, end, rep in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            out = out[:start] + rep + out[end:]
        return out

    # ---- registration

    def _accepted_namespaces(self) -> tuple[str, ...]:
        if self.legacy_namespace:
            return (NS_PUSH_LEGACY, NS_PUSH) if self.accept_new_namespace else (NS_PUSH_LEGACY,)
        return (NS_PUSH,)

    def _is_push_register(self, body: bytes) -> bool:
        if not body or b"push-register" not in body:
            return False
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return any(f"{ns}".encode() in body for ns in self._accepted_namespaces())
        return any(root.tag == _clark(ns, "push-register") for ns in self._accepted_namespaces())

    def _error(self, status: int, condition: str) -> tuple[int, list, bytes]:
        ns = self.namespace
        body = (f'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:" '
                f'xmlns:P="{ns}"><P:{condition}/></D:error>\n').encode()
        return status, [("Content-Type", "application/xml; charset=utf-8")], body

    def _check_access(self, collection: str, h: "_Handler"):
        """Depth-0 PROPFIND of the collection at the backend with the caller's
        credentials: (status, headers, body, is_collection)."""
        hdrs = [("Depth", "0"), ("Content-Type", "application/xml; charset=utf-8")]
        for k in ("Authorization", "Host", "Cookie"):
            for v in h.headers.get_all(k) or []:
                hdrs.append((k, v))
        body = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                b"<D:resourcetype/></D:prop></D:propfind>")
        status, reason, rh, data = self._backend_request("PROPFIND", urllib.parse.quote(collection),
                                                         hdrs, body)
        is_coll = False
        if status == 207:
            try:
                root = ET.fromstring(data)
                is_coll = root.find(".//{DAV:}resourcetype/{DAV:}collection") is not None
            except ET.ParseError:
                pass
        return status, [(k, v) for k, v in rh if k.lower() not in _HOP_BY_HOP], data, is_coll

    def _handle_register(self, path: str, body: bytes, h: "_Handler") -> tuple[int, list, bytes]:
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in ("application/xml", "text/xml"):
            self._violation(f"POST push-register with Content-Type {ctype or '(none)'}")
            if self.strict_content_type:
                self._reg_event("refused", None, 415, f"Content-Type {ctype or '(none)'}")
                self._count("refusals")
                return 415, [("Content-Type", "text/plain")], \
                    b"push-register needs Content-Type: application/xml"
        key = self.collection_key(path)
        status, rh, data, is_coll = self._check_access(key, h)
        if status in (401, 403, 404):
            self._reg_event("refused", None, status, f"backend answered {status}")
            self._count("refusals")
            return status, rh, data
        if status != 207:
            return 502, [("Content-Type", "text/plain")], \
                f"backend PROPFIND answered {status}".encode()
        if not is_coll or not self._push_capable(key):
            self._reg_event("refused", None, 403, "push-not-available")
            self._count("refusals")
            return self._error(403, "push-not-available")
        if self.refuse is not None and (self.refuse_count is None or self.refuse_count > 0):
            mode = str(self.refuse)
            if self.refuse_count is not None:
                self.refuse_count -= 1
                if self.refuse_count <= 0:
                    self.refuse, self.refuse_count = None, None
            return self._refusal(mode)
        try:
            parsed = self._parse_register(body)
        except _RegisterError as e:
            self._reg_event("refused", None, e.status, e.detail)
            self._count("refusals")
            if e.condition is None:
                return e.status, [("Content-Type", "text/plain")], e.detail.encode()
            return self._error(e.status, e.condition)
        now = time.time()
        requested = parsed["expires"]
        limit = int(now) + int(self.max_expiry)
        if requested is None:
            expires = int(now) + int(self.default_expiry or self.max_expiry)
        else:
            expires = requested
        expires = min(expires, limit)
        self._prune()
        with self._lock:
            existing = None
            for s in self._subs.values():
                if s.collection == key and s.push_resource == parsed["push_resource"]:
                    existing = s
            if existing is not None:
                existing.public_key = parsed["public_key"]
                existing.auth_secret = parsed["auth_secret"]
                existing.content_encoding = parsed["content_encoding"]
                existing.content_update = parsed["content_update"]
                existing.property_update = parsed["property_update"]
                existing.props = parsed["props"]
                existing.expires = expires
                existing.updated = now
                existing.authorization = h.headers.get("Authorization")
                existing.requested_expires = parsed["expires_text"]
                sub, status, action = existing, self.update_status, "renewed"
                self._count("renewals")
            else:
                url = self.url(self.registration_prefix + secrets.token_urlsafe(12))
                sub = Subscription(url=url, collection=key, topic=self.topic_for(key),
                                   push_resource=parsed["push_resource"],
                                   public_key=parsed["public_key"],
                                   auth_secret=parsed["auth_secret"],
                                   content_encoding=parsed["content_encoding"],
                                   content_update=parsed["content_update"],
                                   property_update=parsed["property_update"],
                                   props=parsed["props"], expires=expires, created=now,
                                   updated=now, authorization=h.headers.get("Authorization"),
                                   requested_expires=parsed["expires_text"])
                self._subs[url] = sub
                status, action = 201, "created"
                self._count("registrations")
            self._reg_event(action, sub.url, status)
        ns = self.namespace
        exp_text = http_date(expires, self.expires_format)
        out = (f'<?xml version="1.0" encoding="utf-8"?>\n<P:push-register-result xmlns:P="{ns}" '
               f'xmlns:D="DAV:"><D:href>{_x(sub.url)}</D:href><P:topic>{_x(sub.topic)}</P:topic>'
               f"<P:expires>{exp_text}</P:expires></P:push-register-result>\n").encode()
        hdrs = [("Location", sub.url), ("Expires", exp_text),
                ("Content-Type", "application/xml; charset=utf-8")]
        if status == 204:
            out = b""
            hdrs = hdrs[:2]
        return status, hdrs, out

    def _refusal(self, mode: str) -> tuple[int, list, bytes]:
        self._count("refusals")
        self._reg_event("refused", None, int(mode) if mode.isdigit() else None, f"mode {mode}")
        if mode == "403":
            return self._error(403, "push-not-available")
        if mode == "400":
            body = ('<?xml version="1.0" encoding="utf-8"?>\n<d:error xmlns:d="DAV:" '
                    'xmlns:s="http://sabredav.org/ns">\n  <s:exception>Sabre\\DAV\\Exception\\'
                    'BadRequest</s:exception>\n  <s:message>Push subscriptions are not allowed '
                    'for this collection</s:message>\n</d:error>\n').encode()
            return 400, [("Content-Type", "application/xml; charset=utf-8")], body
        if mode == "429":
            return 429, [("Retry-After", str(self.retry_after)),
                         ("Content-Type", "text/plain")], b"Too many subscriptions\n"
        raise ValueError(f"unknown refuse mode {mode!r}")

    def _parse_register(self, body: bytes) -> dict:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            raise _RegisterError(400, None, f"malformed XML: {e}") from None
        ns = root.tag[1:].split("}", 1)[0]
        P = lambda local: _clark(ns, local)  # noqa: E731
        subs = root.findall(P("subscription"))
        if len(subs) != 1:
            raise _RegisterError(403, "invalid-subscription",
                                 f"{len(subs)} subscription elements")
        wps = list(subs[0])
        if len(wps) != 1 or wps[0].tag != P("web-push-subscription"):
            raise _RegisterError(403, "invalid-subscription",
                                 "subscription must hold exactly one web-push-subscription")
        wp = wps[0]

        def one(local: str) -> ET.Element:
            els = wp.findall(P(local))
            if len(els) != 1:
                raise _RegisterError(403, "invalid-subscription",
                                     f"{len(els)} {local} elements")
            return els[0]

        resource = (one("push-resource").text or "").strip()
        u = urllib.parse.urlsplit(resource)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise _RegisterError(403, "invalid-subscription",
                                 f"push-resource {resource!r} is not an absolute http(s) URI")
        enc = (one("content-encoding").text or "").strip()
        if enc != "aes128gcm":
            raise _RegisterError(403, "invalid-subscription", f"content-encoding {enc!r}")
        key_el = one("subscription-public-key")
        if key_el.get("type") != "p256dh":
            raise _RegisterError(403, "invalid-subscription",
                                 f"subscription-public-key type {key_el.get('type')!r}")
        try:
            pub = b64u_decode(key_el.text or "")
            public_key_from_bytes(pub)
        except ValueError as e:
            raise _RegisterError(403, "invalid-subscription",
                                 f"subscription-public-key: {e}") from None
        try:
            auth = b64u_decode(one("auth-secret").text or "")
        except ValueError as e:
            raise _RegisterError(403, "invalid-subscription", f"auth-secret: {e}") from None
        if len(auth) != 16:
            raise _RegisterError(403, "invalid-subscription",
                                 f"auth-secret is {len(auth)} bytes, not 16")
        triggers = root.findall(P("trigger"))
        if len(triggers) != 1:
            raise _RegisterError(403, self.no_trigger_condition,
                                 f"{len(triggers)} trigger elements")
        trig = triggers[0]
        cu = trig.findall(P("content-update"))
        pu = trig.findall(P("property-update"))
        if len(cu) > 1 or len(pu) > 1:
            raise _RegisterError(400, None, "repeated trigger element")
        content = prop = None
        props: list[str] = []
        if cu:
            content = self._depth(cu[0])
        if pu:
            prop = self._depth(pu[0])
            pl = pu[0].find("{DAV:}prop")
            if pl is not None:
                props = [c.tag for c in pl]
                bad = {"{DAV:}getetag", "{DAV:}getlastmodified", "{DAV:}sync-token"} & set(props)
                if bad:
                    self._violation(f"property-update asks for content properties {sorted(bad)}")
        if content is None and prop is None:
            raise _RegisterError(403, self.no_trigger_condition, "no supported trigger")
        exps = root.findall(P("expires"))
        expires = None
        expires_text = None
        if len(exps) > 1:
            raise _RegisterError(400, None, "repeated expires")
        if exps:
            expires_text = (exps[0].text or "").strip()
            expires = parse_imf_fixdate(expires_text)
            if expires is None:
                self._violation(f"expires {expires_text!r} is not an IMF-fixdate")
                if self.strict_expires:
                    raise _RegisterError(400, None, f"expires {expires_text!r} is not an IMF-fixdate")
            elif expires <= time.time():
                self._violation(f"expires {expires_text!r} is in the past")
                expires = None
        known = {P("subscription"), P("trigger"), P("expires")}
        for c in root:
            if c.tag not in known:
                self._violation(f"unknown element {c.tag} in push-register")
        return {"push_resource": resource, "content_encoding": enc, "public_key": pub,
                "auth_secret": auth, "content_update": content, "property_update": prop,
                "props": props, "expires": expires, "expires_text": expires_text}

    def _depth(self, el: ET.Element) -> str:
        d = el.find("{DAV:}depth")
        if d is None:
            if el.find("{DAV:}sync-level") is not None:
                self._violation(f"{el.tag} uses the pre-draft-00 DAV:sync-level")
                return (el.findtext("{DAV:}sync-level") or "1").strip()
            return "1" if el.tag.endswith("content-update") else "0"
        v = (d.text or "").strip()
        if v not in ("0", "1", "infinity"):
            raise _RegisterError(400, None, f"bad DAV:depth {v!r}")
        return v

    def _handle_registration_url(self, method: str, path: str,
                                 h: "_Handler") -> tuple[int, list, bytes]:
        url = self.url(path)
        self._prune()
        if method != "DELETE":
            return 405, [("Allow", "DELETE"), ("Content-Type", "text/plain")], \
                b"registration URLs only support DELETE\n"
        with self._lock:
            sub = self._subs.get(url)
        if sub is None:
            self._reg_event("delete-unknown", url, 404)
            return 404, [("Content-Type", "text/plain")], b"no such registration\n"
        status, rh, data, _ = self._check_access(sub.collection, h)
        if status in (401, 403):
            return status, rh, data
        with self._lock:
            self._subs.pop(url, None)
        self._reg_event("deleted", url, 204)
        self._count("unregistrations")
        return 204, [], b""

    # ---- events and delivery

    def _events_for(self, method: str, path: str, h: "_Handler",
                    rec: RequestRecord) -> list[_Event]:
        auth = h.headers.get("Authorization")
        evs: list[tuple[str, str, list]] = []
        parent = self.parent_key(path)
        if method in ("PUT", "DELETE", "MKCOL", "MKCALENDAR"):
            evs.append((parent, "content", []))
        elif method in ("MOVE", "COPY"):
            if method == "MOVE":
                evs.append((parent, "content", []))
            dest = h.headers.get("Destination")
            if dest:
                evs.append((self.parent_key(dest), "content", []))
        elif method == "PROPPATCH":
            key = self.collection_key(path)
            with self._lock:
                known = any(s.collection == key for s in self._subs.values())
            if path.endswith("/") or known:
                evs.append((key, "property", _proppatch_names(rec.body)))
            evs.append((parent, "content", []))
        out = []
        seen = set()
        with self._lock:
            for coll, kind, props in evs:
                if (coll, kind) in seen:
                    continue
                seen.add((coll, kind))
                if any(s.collection == coll for s in self._subs.values()):
                    self._seq += 1
                    out.append(_Event(self._seq, coll, kind, auth, rec.dont_notify
                                      if self.honour_dont_notify else None, rec.seq, props))
        return out

    def _event_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._events or self._stopping)
                if self._stopping:
                    return
                ev = self._events.pop(0)
                self._event_busy = True
            try:
                self._process_event(ev)
            except Exception as e:  # noqa: BLE001
                self._violation(f"push front internal error: {type(e).__name__}: {e}")
            finally:
                with self._cv:
                    self._event_busy = False
                    self._cv.notify_all()

    def _dont_notify_matches(self, dont: Union[list, str, None], url: str) -> bool:
        if dont is None:
            return False
        if dont == "*":
            return True
        if self.dont_notify_match == "last-segment":
            last = url.rstrip("/").rsplit("/", 1)[-1]
            return any(d.rstrip("/").rsplit("/", 1)[-1] == last for d in dont)
        return url in dont

    def _targets_for(self, ev: _Event) -> list:
        """The subscriptions `ev` is pushed to; the ones its Push-Dont-Notify
        names are recorded as suppressed. Call with self._lock held."""
        subs = [s for s in self._subs.values() if s.collection == ev.collection
                and (s.content_update if ev.kind == "content" else s.property_update)
                is not None]
        targets = []
        for s in subs:
            if self._dont_notify_matches(ev.dont_notify, s.url):
                self._suppressed.append(SuppressedRecord(
                    time.time(), ev.request_seq, s.url, ev.collection,
                    "push-dont-notify-*" if ev.dont_notify == "*" else "push-dont-notify"))
                self._count("pushes_suppressed")
            else:
                targets.append(s)
        return targets

    def _enqueue_for(self, ev: _Event, targets: list, token: Optional[str]) -> None:
        """Queues the push message of `ev` for each target still subscribed.
        Call with self._lock held."""
        for s in targets:
            if s.url not in self._subs:
                continue
            self._enqueue_pending(_Pending(
                0, 0, s.url, "message", topic=s.topic, collection=ev.collection,
                content=ev.kind == "content", sync_token=token,
                property=ev.kind == "property", props=list(ev.props),
                request_seqs=[ev.request_seq]))

    def _process_event(self, ev: _Event) -> None:
        self._prune()
        with self._lock:
            targets = self._targets_for(ev)
        if not targets:
            return
        token = None
        if ev.kind == "content":
            token = self._lookup_sync_token(ev.collection, ev.authorization,
                                            fallback=[s.authorization for s in targets])
        with self._lock:
            self._enqueue_for(ev, targets, token)

    def _lookup_sync_token(self, collection: str, authorization: Optional[str],
                           fallback: Iterable[Optional[str]] = ()) -> Optional[str]:
        body = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                b"<D:sync-token/></D:prop></D:propfind>")
        auths: list[Optional[str]] = []
        if self.backend_auth is not None:
            user, pw = self.backend_auth
            auths.append("Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())
        auths.append(authorization)
        auths.extend(fallback)
        tried = set()
        for auth in auths:
            if auth in tried:
                continue
            tried.add(auth)
            hdrs = [("Depth", "0"), ("Content-Type", "application/xml; charset=utf-8"),
                    ("Host", f"{self.host}:{self.port}")]
            if auth:
                hdrs.append(("Authorization", auth))
            try:
                status, _, _, data = self._backend_request(
                    "PROPFIND", urllib.parse.quote(collection), hdrs, body)
            except OSError:
                continue
            if status != 207:
                continue
            try:
                root = ET.fromstring(data)
            except ET.ParseError:
                continue
            for ps in root.iter("{DAV:}propstat"):
                st = (ps.findtext("{DAV:}status") or "").split()
                tok = ps.find("{DAV:}prop/{DAV:}sync-token")
                if tok is not None and len(st) >= 2 and st[1] == "200":
                    return (tok.text or "").strip()
            return None
        return None

    def _enqueue_pending(self, p: _Pending, mergeable: bool = True) -> None:
        """Adds to the outbox (caller holds the lock)."""
        now = time.monotonic()
        if mergeable and p.kind == "message" and self.merge_window > 0:
            for q in self._outbox:
                if q.sub_url == p.sub_url and q.kind == "message" and q.topic == p.topic:
                    q.content = q.content or p.content
                    if p.content:
                        q.sync_token = p.sync_token
                    q.property = q.property or p.property
                    q.props = q.props + [x for x in p.props if x not in q.props]
                    q.request_seqs.extend(p.request_seqs)
                    q.merged += 1
                    self._count("pushes_merged")
                    self._cv.notify_all()
                    return
        hold = max(float(self.delay), float(self.merge_window) if p.kind == "message" else 0.0)
        p.due = max(now + hold, self._last_due.get(p.sub_url, 0.0))
        self._last_due[p.sub_url] = p.due
        self._seq += 1
        p.seq = self._seq
        self._outbox.append(p)
        self._cv.notify_all()

    def _delivery_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopping:
                        return
                    if self._outbox and not self._paused:
                        nxt = min(self._outbox, key=lambda q: (q.due, q.seq))
                        wait = nxt.due - time.monotonic()
                        if wait <= 0:
                            break
                        self._cv.wait(wait)
                    else:
                        self._cv.wait()
                self._outbox.remove(nxt)
                self._delivering = True
            try:
                nxt.result = self._deliver(nxt)
            except Exception as e:  # noqa: BLE001
                self._violation(f"push front delivery error: {type(e).__name__}: {e}")
            finally:
                with self._cv:
                    self._delivering = False
                    self._cv.notify_all()
                if nxt.done is not None:
                    nxt.done.set()

    def _deliver(self, p: _Pending) -> Optional[PushRecord]:
        self._prune()
        with self._lock:
            sub = self._subs.get(p.sub_url)
            if sub is None:
                self._count("pushes_skipped_unsubscribed")
                return None
            sub = dataclasses.replace(sub)
            signing = p.vapid_key or self._vapid
        ns = self.namespace
        plaintext = None
        if p.kind == "message":
            plaintext = push_message_xml(p.topic, content_update=p.content,
                                         sync_token=p.sync_token, property_update=p.property,
                                         props=p.props, ns=ns)
            kind = "update" if p.content and p.property else \
                ("content-update" if p.content else "property-update")
        elif p.kind == "vapid-rotation":
            plaintext = push_message_xml(None, property_update=True,
                                         props=[_clark(ns, "transports")], ns=ns)
            kind = "vapid-rotation"
        elif p.kind == "wrong-namespace":
            plaintext = push_message_xml(p.topic, content_update=True,
                                         sync_token=p.sync_token or "http://example.invalid/"
                                         "wrong-namespace", ns=NS_WRONG)
            kind = "wrong-namespace"
        else:
            kind = "raw"
        body = p.body if p.kind == "raw" else webpush_encrypt(plaintext, sub.public_key,
                                                              sub.auth_secret)
        headers = {"Content-Encoding": "aes128gcm", "Content-Type": self.push_content_type,
                   "TTL": str(self.ttl),
                   "Authorization": vapid_authorization(signing, sub.push_resource,
                                                        self.vapid_subject)}
        if self.urgency:
            headers["Urgency"] = self.urgency
        if self.topic_header and p.topic:
            headers["Topic"] = (p.topic + ("c" if p.content else "") +
                                ("p" if p.property else ""))[:32]
        headers.update(p.extra_headers)
        rec = PushRecord(time.time(), sub.url, sub.push_resource, sub.collection, p.topic,
                         p.sync_token if p.content else None, kind, plaintext, body, headers,
                         request_seqs=list(p.request_seqs), merged=p.merged)
        try:
            r = self._http.post(sub.push_resource, data=body, headers=headers,
                                timeout=PUSH_TIMEOUT)
            rec.status = r.status_code
        except requests.RequestException as e:
            rec.error = f"{type(e).__name__}: {e}"
        with self._cv:
            self._pushes.append(rec)
            if rec.status is not None and 200 <= rec.status < 300:
                self._count("pushes_sent")
            else:
                self._count("pushes_failed")
            if self.drop_dead and rec.status in (404, 410):
                if self._subs.pop(sub.url, None) is not None:
                    self._reg_event("dead", sub.url, rec.status,
                                    f"push resource answered {rec.status}")
                    self._count("subscriptions_dropped")
            self._cv.notify_all()
        return rec


class _RegisterError(Exception):
    def __init__(self, status: int, condition: Optional[str], detail: str):
        super().__init__(detail)
        self.status, self.condition, self.detail = status, condition, detail


def _proppatch_names(body: bytes) -> list[str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    names = []
    for prop in root.iter("{DAV:}prop"):
        names.extend(c.tag for c in prop if c.tag not in names)
    return names


def _add_dav_class(headers: list[tuple[str, str]], cls: str) -> list[tuple[str, str]]:
    out, done = [], False
    for k, v in headers:
        if k.lower() == "dav" and not done:
            classes = [c.strip() for c in v.split(",")]
            if cls not in classes:
                v = v + ", " + cls
            done = True
        out.append((k, v))
    return out


def parse_dont_notify(value: str) -> tuple[Union[list, str, None], Optional[str]]:
    """Parses Push-Dont-Notify = 1#quoted-string / "*" (RFC 9110 list syntax).

    Returns (list of unquoted URLs | '*', None) or (None, error text) when the
    value does not follow the grammar ('*' mixed with URLs, unquoted URL, ...).
    Empty list elements are allowed and skipped, as RFC 9110 §5.6.1 asks.
    """
    items: list[tuple[str, bool]] = []   # (text, quoted)
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            buf = []
            while i < n and value[i] != '"':
                if value[i] == "\\":
                    if i + 1 >= n:
                        return None, "unterminated quoted-pair"
                    buf.append(value[i + 1])
                    i += 2
                    continue
                buf.append(value[i])
                i += 1
            if i >= n:
                return None, "unterminated quoted-string"
            i += 1
            items.append(("".join(buf), True))
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] != ",":
                return None, "junk after quoted-string"
        else:
            j = i
            while j < n and value[j] != ",":
                j += 1
            tok = value[i:j].strip()
            items.append((tok, False))
            i = j
    if not items:
        return None, "empty list"
    stars = [t for t, q in items if not q and t == "*"]
    if stars:
        if len(items) != 1:
            return None, '"*" must stand alone'
        return "*", None
    bad = [t for t, q in items if not q]
    if bad:
        return None, f"unquoted element {bad[0]!r}"
    return [t for t, _ in items], None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "davtest-pushfront"
    front: PushFront = None  # set per server
    reason_override: Optional[str] = None
    head_length: Optional[str] = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self.reason_override = None
        self.head_length = None
        self.front._handle(self)

    def read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ValueError("truncated chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise ValueError("bad Content-Length") from None
        return self.rfile.read(n) if n > 0 else b""

    def send_full(self, status: int, headers: list, body: bytes, head: bool = False) -> None:
        self.send_response_only(status, self.reason_override)
        have_date = False
        for k, v in headers:
            if k.lower() == "date":
                have_date = True
            self.send_header(k, v)
        if not have_date:
            self.send_header("Date", self.date_time_string())
        if head:
            if self.head_length is not None:
                self.send_header("Content-Length", self.head_length)
        elif status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body and status not in (204, 304):
            self.wfile.write(body)
        self.wfile.flush()

    def send_simple(self, status: int, body: bytes, ctype: str) -> None:
        self.send_full(status, [("Content-Type", ctype)], body)


# =========================================================== test helpers


@dataclass
class SinkRecord:
    time: float
    path: str
    headers: Headers
    body: bytes
    status: int


class PushSink:
    """A loopback HTTP server standing in for a push service: it records every
    POST (path, headers, body) and answers `status` (201), or the status set
    for a path with set_status(). url(name) is a push resource."""

    def __init__(self, status: int = 201):
        self.status = status
        self._status_for: dict[str, int] = {}
        self._records: list[SinkRecord] = []
        self._cv = threading.Condition()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "PushSink":
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path
                with sink._cv:
                    st = sink._status_for.get(path, sink.status)
                    sink._records.append(SinkRecord(time.time(), path,
                                                    Headers(self.headers.items()), body, st))
                    sink._cv.notify_all()
                self.send_response(st)
                self.send_header("Content-Length", "0")
                if st == 201:
                    self.send_header("Location", f"/message/{len(sink._records)}")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="pushsink")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "PushSink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str = "default") -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    def set_status(self, name_or_url: str, status: int) -> None:
        path = urllib.parse.urlsplit(name_or_url).path if "://" in name_or_url \
            else f"/push/{name_or_url}"
        with self._cv:
            self._status_for[path] = status

    def received(self, name_or_url: Optional[str] = None) -> list[SinkRecord]:
        with self._cv:
            recs = list(self._records)
        if name_or_url is None:
            return recs
        path = urllib.parse.urlsplit(name_or_url).path if "://" in name_or_url \
            else f"/push/{name_or_url}"
        return [r for r in recs if r.path == path]

    def wait_for(self, n: int, name_or_url: Optional[str] = None,
                 timeout: float = 30.0) -> list[SinkRecord]:
        """Waits until at least n POSTs arrived (for one resource when given)."""
        with self._cv:
            ok = self._cv.wait_for(lambda: len(self.received(name_or_url)) >= n, timeout)
        if not ok:
            raise TimeoutError(f"sink got {len(self.received(name_or_url))} of {n} pushes "
                               f"in {timeout:g} s")
        return self.received(name_or_url)

    def clear(self) -> None:
        with self._cv:
            self._records.clear()


class WebPushKeys:
    """A subscriber's side of RFC 8291: P-256 key pair and auth secret, the
    push-register body for a push resource, and decryption of what arrives."""

    def __init__(self, private_key: Any = None, auth_secret: Optional[bytes] = None):
        if private_key is None:
            private_key = generate_p256()
        elif isinstance(private_key, (bytes, str)):
            private_key = private_key_from_raw(private_key)
        self.private_key = private_key
        self.auth_secret = auth_secret if auth_secret is not None else os.urandom(16)

    @property
    def public_key(self) -> bytes:
        return public_bytes(self.private_key)

    @property
    def public_key_b64(self) -> str:
        return b64u_encode(self.public_key)

    @property
    def auth_secret_b64(self) -> str:
        return b64u_encode(self.auth_secret)

    def register_body(self, push_resource: str, *, expires: Optional[str] = None,
                      content_depth: Optional[str] = "1", property_depth: Optional[str] = None,
                      props: Iterable[str] = (), ns: str = NS_PUSH,
                      content_encoding: str = "aes128gcm", trigger: bool = True) -> bytes:
        """A push-register document (content-update depth 1 by default)."""
        trig = ""
        if trigger:
            inner = ""
            if content_depth is not None:
                inner += f"<P:content-update><D:depth>{content_depth}</D:depth></P:content-update>"
            if property_depth is not None:
                pl = "".join(f"<D:{p}/>" for p in props)
                inner += (f"<P:property-update><D:depth>{property_depth}</D:depth>"
                          + (f"<D:prop>{pl}</D:prop>" if pl else "") + "</P:property-update>")
            trig = f"<P:trigger>{inner}</P:trigger>"
        exp = f"<P:expires>{expires}</P:expires>" if expires else ""
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<P:push-register xmlns:P="{ns}" '
                f'xmlns:D="DAV:"><P:subscription><P:web-push-subscription>'
                f"<P:push-resource>{_x(push_resource)}</P:push-resource>"
                f"<P:content-encoding>{content_encoding}</P:content-encoding>"
                f'<P:subscription-public-key type="p256dh">{self.public_key_b64}'
                f"</P:subscription-public-key>"
                f"<P:auth-secret>{self.auth_secret_b64}</P:auth-secret>"
                f"</P:web-push-subscription></P:subscription>{trig}{exp}"
                f"</P:push-register>\n").encode()

    def decrypt(self, body: bytes) -> bytes:
        return webpush_decrypt(body, self.private_key, self.auth_secret)
