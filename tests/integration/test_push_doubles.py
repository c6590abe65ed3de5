"""Tests of the push test doubles themselves: the WebDAV-Push front
(davtest.pushfront) in front of a real Radicale, and the loopback UnifiedPush
distributor (davtest.distributor) on a private dbus-daemon, talked to by a
fake connector exported here with dbus-python.

Decryption and JWT checks in this file are written independently of
pushfront's own crypto (cryptography's HKDF here, hmac-based HKDF there)."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
import requests
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from davtest import pushfront
from davtest.daemon import wait_until
from davtest.distributor import Distributor
from davtest.pushfront import NS_PUSH, NS_PUSH_LEGACY, PushFront, PushSink
from davtest.servers import NS_DAV, clark

NSP = NS_PUSH
EVENT = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//davtest//push//EN\r\nBEGIN:VEVENT\r\n"
         "UID:{uid}\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:20240102T100000Z\r\n"
         "DTEND:20240102T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")

# ------------------------------------------------------------------ independent crypto


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


class Subscriber:
    """Client-side key material made with cryptography directly."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = bytes(range(16, 32))

    def register_body(self, push_resource: str, *, expires: str | None = None,
                      content: str | None = "1", prop: str | None = None, ns: str = NSP,
                      trigger: bool = True, encoding: str = "aes128gcm",
                      public_key: str | None = None, auth: str | None = None,
                      extra_subscription: bool = False) -> bytes:
        trig = ""
        if trigger:
            trig = "<P:trigger>"
            if content is not None:
                trig += f"<P:content-update><D:depth>{content}</D:depth></P:content-update>"
            if prop is not None:
                trig += (f"<P:property-update><D:depth>{prop}</D:depth><D:prop><D:displayname/>"
                         "</D:prop></P:property-update>")
            trig += "</P:trigger>"
        sub = (f"<P:subscription><P:web-push-subscription>"
               f"<P:push-resource>{push_resource}</P:push-resource>"
               f"<P:content-encoding>{encoding}</P:content-encoding>"
               f'<P:subscription-public-key type="p256dh">'
               f"{public_key or b64u(raw_public(self.key))}</P:subscription-public-key>"
               f"<P:auth-secret>{auth or b64u(self.auth)}</P:auth-secret>"
               f"</P:web-push-subscription></P:subscription>")
        if extra_subscription:
            sub += sub
        exp = f"<P:expires>{expires}</P:expires>" if expires else ""
        return (f'<?xml version="1.0" encoding="utf-8"?><P:push-register xmlns:P="{ns}" '
                f'xmlns:D="DAV:">{sub}{trig}{exp}</P:push-register>').encode()

    def decrypt(self, body: bytes) -> bytes:
        salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        assert idlen == 65 and rs == 4096
        sender = body[21:21 + idlen]
        ciphertext = body[21 + idlen:]
        shared = self.key.exchange(
            ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender))
        ikm = HKDF(hashes.SHA256(), 32, salt=self.auth,
                   info=b"WebPush: info\x00" + raw_public(self.key) + sender).derive(shared)
        cek = HKDF(hashes.SHA256(), 16, salt=salt,
                   info=b"Content-Encoding: aes128gcm\x00").derive(ikm)
        nonce = HKDF(hashes.SHA256(), 12, salt=salt,
                     info=b"Content-Encoding: nonce\x00").derive(ikm)
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None).rstrip(b"\x00")
        assert padded.endswith(b"\x02"), padded
        return padded[:-1]


def check_vapid(header: str, key_b64: str, aud: str) -> dict:
    assert header.startswith("vapid "), header
    params = dict(p.strip().split("=", 1) for p in header[6:].split(","))
    assert unb64u(params["k"]) == unb64u(key_b64)
    h, c, s = params["t"].split(".")
    assert json.loads(unb64u(h))["alg"] == "ES256"
    claims = json.loads(unb64u(c))
    sig = unb64u(s)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(params["k"]))
    pub.verify(der, f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if bad
    assert claims["aud"] == aud
    assert time.time() < claims["exp"] <= time.time() + 86400
    assert claims["sub"].startswith("mailto:")
    return claims


def message(data: bytes) -> ET.Element:
    return ET.fromstring(data)


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def front(radicale):
    f = PushFront(radicale.base_url).start()
    yield f
    f.stop()


@pytest.fixture
def sink():
    s = PushSink().start()
    yield s
    s.stop()


@pytest.fixture
def view(front, radicale):
    return front.server_view(radicale)


@pytest.fixture
def cal(view):
    return view.make_calendar("work", "Work")


def register(view, collection, body: bytes, headers: dict | None = None,
             auth: bool = True) -> requests.Response:
    return view.request("POST", collection, body=body, headers=headers,
                        content_type="application/xml; charset=utf-8", auth=auth)


def put_event(view, collection, name: str, headers: dict | None = None,
              summary: str = "x") -> requests.Response:
    h = {"Content-Type": "text/calendar; charset=utf-8"}
    h.update(headers or {})
    r = view.request("PUT", view.item_path(collection, name),
                     body=EVENT.format(uid=name, summary=summary), headers=h)
    assert r.status_code in (201, 204), r.text
    return r


def raw_request(view, method: str, path: str, headers: list, body: bytes) -> int:
    """A request with repeated header lines (requests cannot send those)."""
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=30)
    try:
        conn.putrequest(method, path)
        token = base64.b64encode(f"{view.user}:{view.password}".encode()).decode()
        conn.putheader("Authorization", "Basic " + token)
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def propfind_push(view, path, depth=0, names=("transports", "topic", "supported-triggers"),
                  ns=NSP) -> ET.Element:
    props = "".join(f"<P:{n}/>" for n in names)
    body = (f'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" xmlns:P="{ns}">'
            f"<D:prop><D:displayname/>{props}</D:prop></D:propfind>")
    r = view.request("PROPFIND", path, body=body, depth=depth)
    assert r.status_code == 207
    return ET.fromstring(r.content)


def ok_props(ms: ET.Element, href: str) -> dict:
    want = urllib.parse.unquote(urllib.parse.urlsplit(href).path).rstrip("/")
    for resp in ms.iter("{DAV:}response"):
        got = urllib.parse.unquote(urllib.parse.urlsplit(resp.findtext("{DAV:}href")).path)
        if got.rstrip("/") == want:
            out = {}
            for ps in resp.findall("{DAV:}propstat"):
                if ps.findtext("{DAV:}status").split()[1] == "200":
                    for p in ps.find("{DAV:}prop"):
                        out[p.tag] = p
            return out
    raise KeyError(href)


# ------------------------------------------------------------------ crypto unit tests

RFC8291 = {
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "ua_public": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "as_private": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
    "as_public": "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
    "plaintext": b"When I grow up, I want to be a watermelon",
}


def test_encryption_matches_rfc8291_appendix_a():
    v = RFC8291
    body = unb64u(v["body"])
    sender = pushfront.private_key_from_raw(v["as_private"])
    assert b64u(raw_public(sender)) == v["as_public"]
    out = pushfront.webpush_encrypt(v["plaintext"], unb64u(v["ua_public"]), unb64u(v["auth"]),
                                    sender_private=sender, salt=body[:16], record_size=4096)
    assert out == body
    # and the independent decryption of this file agrees
    sub = Subscriber()
    sub.key = pushfront.private_key_from_raw(v["ua_private"])
    sub.auth = unb64u(v["auth"])
    assert sub.decrypt(out) == v["plaintext"]
    assert pushfront.webpush_decrypt(body, sub.key, sub.auth) == v["plaintext"]


def test_encryption_with_fresh_keys_decrypts_independently():
    sub = Subscriber()
    a = pushfront.webpush_encrypt(b"<x/>", raw_public(sub.key), sub.auth)
    b = pushfront.webpush_encrypt(b"<x/>", raw_public(sub.key), sub.auth)
    assert a != b            # fresh salt and sender key each time
    assert sub.decrypt(a) == sub.decrypt(b) == b"<x/>"
    tampered = bytearray(a)
    tampered[-1] ^= 1
    with pytest.raises(InvalidTag):
        sub.decrypt(bytes(tampered))


def test_vapid_header_verifies_independently():
    key = ec.generate_private_key(ec.SECP256R1())
    header = pushfront.vapid_authorization(key, "http://127.0.0.1:1234/push/abc",
                                           "mailto:x@example.invalid")
    claims = check_vapid(header, b64u(raw_public(key)), "http://127.0.0.1:1234")
    assert claims["sub"] == "mailto:x@example.invalid"
    other = ec.generate_private_key(ec.SECP256R1())
    forged = header.replace(b64u(raw_public(key)), b64u(raw_public(other)))
    with pytest.raises(InvalidSignature):
        check_vapid(forged, b64u(raw_public(other)), "http://127.0.0.1:1234")


def test_push_dont_notify_parser():
    p = pushfront.parse_dont_notify
    assert p('"https://h/s/1"') == (["https://h/s/1"], None)
    assert p('"https://h/s/1", "https://h/s/2"') == (["https://h/s/1", "https://h/s/2"], None)
    assert p('"a\\"b",,') == (['a"b'], None)
    assert p("*") == ("*", None)
    assert p(' * ') == ("*", None)
    assert p('*, "https://h/s/1"')[0] is None
    assert p("https://h/s/1")[0] is None          # must be quoted
    assert p('"https://h/s/1')[0] is None         # unterminated


# ------------------------------------------------------------------ discovery


def test_options_advertises_webdav_push(view, radicale):
    dav = view.request("OPTIONS", "/").headers["DAV"]
    assert "webdav-push" in [c.strip() for c in dav.split(",")]
    direct = radicale.request("OPTIONS", "/").headers["DAV"]
    assert dav == direct + ", webdav-push"


def test_propfind_reports_push_properties_on_collections(view, front, cal):
    put_event(view, cal, "a.ics")
    ms = propfind_push(view, view.home_url, depth=1)
    props = ok_props(ms, cal)
    transports = props[clark(NSP, "transports")]
    key = transports.find(f"{{{NSP}}}web-push/{{{NSP}}}vapid-public-key")
    assert key.get("type") == "p256ecdsa"
    assert key.text == front.vapid_public_key
    raw = unb64u(key.text)
    assert len(raw) == 65 and raw[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    topic = props[clark(NSP, "topic")].text
    assert topic == front.topic_for(cal)
    trig = props[clark(NSP, "supported-triggers")]
    assert trig.findtext(f"{{{NSP}}}content-update/{{DAV:}}depth") == "1"
    assert trig.findtext(f"{{{NSP}}}property-update/{{DAV:}}depth") == "0"
    assert props[clark(NS_DAV, "displayname")].text == "Work"
    # the home is a collection too, with its own topic; the item has none
    assert ok_props(ms, view.home_url)[clark(NSP, "topic")].text != topic
    item = ok_props(propfind_push(view, cal, depth=1), view.item_path(cal, "a.ics"))
    assert clark(NSP, "topic") not in item
    # topics are stable
    assert ok_props(propfind_push(view, cal), cal)[clark(NSP, "topic")].text == topic


def test_propfind_without_push_properties_is_untouched(view, radicale, cal):
    put_event(view, cal, "a.ics")
    body = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
            "<D:getetag/><D:resourcetype/><D:sync-token/></D:prop></D:propfind>")
    via = view.request("PROPFIND", cal, body=body, depth=1)
    direct = radicale.request("PROPFIND", cal, body=body, depth=1)
    assert via.status_code == direct.status_code == 207
    assert via.content == direct.content


def test_allprop_includes_push_properties(view, front, cal):
    body = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:">'
            "<D:allprop/></D:propfind>")
    r = view.request("PROPFIND", cal, body=body, depth=0)
    props = ok_props(ET.fromstring(r.content), cal)
    assert props[clark(NSP, "topic")].text == front.topic_for(cal)
    assert clark(NSP, "transports") in props


def test_propfind_with_gzip_accepted_still_injects(view, front, cal):
    body = ('<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
            f'xmlns:P="{NSP}"><D:prop><P:topic/></D:prop></D:propfind>')
    r = view.request("PROPFIND", cal, body=body, depth=0, headers={"Accept-Encoding": "gzip"})
    assert ok_props(ET.fromstring(r.content), cal)[clark(NSP, "topic")].text == \
        front.topic_for(cal)


# ------------------------------------------------------------------ registration


def test_register_renew_unregister(view, front, cal, sink):
    sub = Subscriber()
    r = register(view, cal, sub.register_body(sink.url("a")))
    assert r.status_code == 201, r.text
    loc = r.headers["Location"]
    assert loc.startswith(front.base_url + "push-subscriptions/")
    exp = pushfront.parse_imf_fixdate(r.headers["Expires"])
    assert exp is not None, r.headers["Expires"]
    assert time.time() + 3 * 86400 - 120 <= exp <= time.time() + 3 * 86400 + 5
    (s,) = front.subscriptions(cal)
    assert s.url == loc and s.push_resource == sink.url("a")
    assert s.public_key == raw_public(sub.key) and s.auth_secret == sub.auth
    assert s.content_update == "1" and s.property_update is None

    # renewal: same push resource, same collection -> the draft's "same
    # response as for subscription registration" (201), same Location
    want = pushfront.http_date(time.time() + 86400)
    r2 = register(view, cal, sub.register_body(sink.url("a"), expires=want))
    assert r2.status_code == 201
    assert r2.headers["Location"] == loc
    assert r2.headers["Expires"] == want       # shorter than the cap: honoured
    assert len(front.subscriptions()) == 1
    front.update_status = 200                  # Xandikos' answer, as an option
    assert register(view, cal, sub.register_body(sink.url("a"))).status_code == 200

    # a second push resource is a second registration
    r3 = register(view, cal, Subscriber().register_body(sink.url("b")))
    assert r3.status_code == 201 and r3.headers["Location"] != loc

    d = view.request("DELETE", loc)
    assert d.status_code == 204
    assert view.request("DELETE", loc).status_code == 404
    assert [x.url for x in front.subscriptions()] == [r3.headers["Location"]]
    assert front.violations() == []
    actions = [e["action"] for e in front.registrations_log()]
    assert actions == ["created", "renewed", "renewed", "created", "deleted", "delete-unknown"]


def test_expiry_is_capped_and_can_be_emulated(radicale, sink):
    with PushFront(radicale.base_url, max_expiry=3600, expires_format="+0000") as front:
        view = front.server_view(radicale)
        cal = view.make_calendar("c")
        far = pushfront.http_date(time.time() + 30 * 86400)
        r = register(view, cal, Subscriber().register_body(sink.url(), expires=far))
        assert r.status_code == 201
        assert r.headers["Expires"].endswith(" +0000")
        assert pushfront.parse_imf_fixdate(r.headers["Expires"]) is None   # not GMT form
        exp = pushfront.parse_http_date(r.headers["Expires"])
        assert time.time() + 3600 - 60 <= exp <= time.time() + 3600 + 5
        # expired registrations disappear
        loc = r.headers["Location"]
        front.expire(loc)
        assert front.subscriptions() == []
        assert view.request("DELETE", loc).status_code == 404
        put_event(view, cal, "a.ics")
        front.wait_idle()
        assert front.pushes() == []
        assert "expired" in [e["action"] for e in front.registrations_log()]


@pytest.mark.parametrize("case, condition", [
    ("no-trigger", "no-trigger-supported"),
    ("bad-key", "invalid-subscription"),
    ("short-auth", "invalid-subscription"),
    ("encoding", "invalid-subscription"),
    ("two-subscriptions", "invalid-subscription"),
    ("relative-resource", "invalid-subscription"),
])
def test_register_refusals(view, front, cal, sink, case, condition):
    sub = Subscriber()
    body = {
        "no-trigger": lambda: sub.register_body(sink.url(), trigger=False),
        "bad-key": lambda: sub.register_body(sink.url(), public_key=b64u(b"\x04" + b"\x01" * 64)),
        "short-auth": lambda: sub.register_body(sink.url(), auth=b64u(b"short")),
        "encoding": lambda: sub.register_body(sink.url(), encoding="aesgcm"),
        "two-subscriptions": lambda: sub.register_body(sink.url(), extra_subscription=True),
        "relative-resource": lambda: sub.register_body("/push/x"),
    }[case]()
    r = register(view, cal, body)
    assert r.status_code == 403, r.text
    err = ET.fromstring(r.content)
    assert err.tag == "{DAV:}error"
    assert err.find(clark(NSP, condition)) is not None, r.text
    assert front.subscriptions() == []


def test_register_needs_credentials_and_a_collection(view, front, cal, sink):
    body = Subscriber().register_body(sink.url())
    assert register(view, cal, body, auth=False).status_code == 401
    put_event(view, cal, "a.ics")
    r = register(view, view.item_path(cal, "a.ics"), body)
    assert r.status_code == 403
    assert ET.fromstring(r.content).find(clark(NSP, "push-not-available")) is not None
    assert register(view, "/alice/missing/", body).status_code == 404
    assert register(view, cal, b"<P:push-register xmlns:P='" + NSP.encode() + b"'>").status_code \
        == 400
    assert front.subscriptions() == []


@pytest.mark.parametrize("mode", ["403", "400", "429"])
def test_refuse_modes(view, front, cal, sink, mode):
    front.refuse = mode
    front.retry_after = 77
    r = register(view, cal, Subscriber().register_body(sink.url()))
    assert r.status_code == int(mode)
    if mode == "429":
        assert r.headers["Retry-After"] == "77"
    if mode == "403":
        assert ET.fromstring(r.content).find(clark(NSP, "push-not-available")) is not None
    if mode == "400":
        assert b"sabredav" in r.content
    front.refuse, front.refuse_count = mode, 1        # refuse once, then accept
    assert register(view, cal, Subscriber().register_body(sink.url())).status_code == int(mode)
    assert register(view, cal, Subscriber().register_body(sink.url())).status_code == 201


def test_violations_are_refused_by_default_and_recorded(view, front, cal, sink):
    sub = Subscriber()
    # The draft: POST with Content-Type: application/xml, expires an IMF-fixdate.
    r = view.request("POST", cal, body=sub.register_body(sink.url()),
                     headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    body = sub.register_body(sink.url(), expires="2030-01-01T00:00:00Z")
    assert register(view, cal, body).status_code == 400
    assert front.subscriptions() == []
    v = front.take_violations()
    assert any("Content-Type text/plain" in x for x in v), v
    assert any("not an IMF-fixdate" in x for x in v), v
    assert front.violations() == []


def test_leniencies_are_explicit_options(view, front, cal, sink):
    front.strict_content_type = front.strict_expires = False
    sub = Subscriber()
    body = sub.register_body(sink.url(), expires="2030-01-01T00:00:00Z")
    r = view.request("POST", cal, body=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 201
    v = front.take_violations()
    assert any("Content-Type" in x for x in v) and any("IMF-fixdate" in x for x in v)


def test_an_untaken_violation_fails_the_test(view, radicale, tmp_path):
    """The finaliser of conftest.py (davtest.violations) sees what a double
    recorded and the test did not take."""
    from davtest import violations
    with PushFront(radicale.base_url) as other:
        other._violation("a client did something wrong")
        assert violations.unread() == ["PushFront: a client did something wrong"]
        assert violations.unread() == []     # reported once


# ------------------------------------------------------------------ pushes


def test_put_sends_encrypted_push_with_backend_sync_token(view, radicale, front, cal, sink):
    sub = Subscriber()
    r = register(view, cal, sub.register_body(sink.url("me")))
    loc = r.headers["Location"]
    put = put_event(view, cal, "a.ics")
    front.wait_idle()
    (got,) = sink.wait_for(1, "me")
    # the push left only after the response to the PUT
    (req,) = [q for q in front.requests("PUT")]
    (push,) = front.pushes()
    assert req.responded is not None and push.time >= req.responded
    assert push.subscription == loc and push.status == 201 and push.request_seqs == [req.seq]
    # headers
    assert got.headers["Content-Encoding"] == "aes128gcm"
    # The draft's Web Push transport: the message is XML.
    assert got.headers["Content-Type"] == 'application/xml; charset="UTF-8"'
    assert got.headers["TTL"] == "60"
    check_vapid(got.headers["Authorization"], front.vapid_public_key,
                f"http://127.0.0.1:{sink.port}")
    # body: record size 4096, one record, decrypts with our keys
    assert int.from_bytes(got.body[16:20], "big") == 4096
    doc = message(sub.decrypt(got.body))
    assert doc.tag == clark(NSP, "push-message")
    assert doc.findtext(clark(NSP, "topic")) == front.topic_for(cal)
    token = doc.findtext(f"{{{NSP}}}content-update/{{DAV:}}sync-token")
    assert token and token == radicale.sync_token(cal)
    assert push.sync_token == token and push.topic == front.topic_for(cal)
    assert put.status_code == 201


def test_delete_move_and_proppatch_push(view, radicale, front, cal, sink):
    sub = Subscriber()
    register(view, cal, sub.register_body(sink.url("c"), prop="0"))
    other = view.make_calendar("other")
    sub2 = Subscriber()
    register(view, other, sub2.register_body(sink.url("o")))
    put_event(view, cal, "a.ics")
    front.wait_idle()
    # MOVE a.ics from cal to other: both collections change
    r = view.request("MOVE", view.item_path(cal, "a.ics"),
                     headers={"Destination": front.url(view.item_path(other, "a.ics"))})
    assert r.status_code in (201, 204), r.text
    front.wait_idle()
    tok_c = message(sub.decrypt(sink.received("c")[-1].body)).findtext(
        f"{{{NSP}}}content-update/{{DAV:}}sync-token")
    tok_o = message(sub2.decrypt(sink.received("o")[-1].body)).findtext(
        f"{{{NSP}}}content-update/{{DAV:}}sync-token")
    assert tok_c == radicale.sync_token(cal) and tok_o == radicale.sync_token(other)
    # DELETE in other
    view.delete_item(other, "a.ics")
    front.wait_idle()
    assert len(sink.received("o")) == 2
    # PROPPATCH of cal's displayname: property update to the sub that asked for it
    n = len(sink.received("c"))
    view.proppatch(cal, {clark(NS_DAV, "displayname"): "Renamed"})
    front.wait_idle()
    new = sink.received("c")[n:]
    assert len(new) == 1
    doc = message(sub.decrypt(new[0].body))
    pu = doc.find(clark(NSP, "property-update"))
    assert pu is not None and pu.find("{DAV:}prop/{DAV:}displayname") is not None
    assert doc.findtext(clark(NSP, "topic")) == front.topic_for(cal)
    assert len(sink.received("o")) == 2         # other collection untouched


def test_push_dont_notify_honoured(view, front, cal, sink):
    a, b = Subscriber(), Subscriber()
    loc_a = register(view, cal, a.register_body(sink.url("a"))).headers["Location"]
    loc_b = register(view, cal, b.register_body(sink.url("b"))).headers["Location"]
    put_event(view, cal, "1.ics", headers={"Push-Dont-Notify": f'"{loc_a}"'})
    front.wait_idle()
    assert sink.received("a") == [] and len(sink.received("b")) == 1
    (sup,) = front.suppressed()
    assert sup.subscription == loc_a and sup.reason == "push-dont-notify"
    req = front.requests("PUT")[-1]
    assert req.push_dont_notify == f'"{loc_a}"' and req.dont_notify == [loc_a]

    # both listed, as two header lines
    status = raw_request(view, "PUT", view.item_path(cal, "2.ics"),
                         [("Content-Type", "text/calendar"), ("Push-Dont-Notify", f'"{loc_a}"'),
                          ("Push-Dont-Notify", f'"{loc_b}"')],
                         EVENT.format(uid="2", summary="x").encode())
    assert status == 201
    assert front.requests("PUT")[-1].dont_notify == [loc_a, loc_b]
    put_event(view, cal, "3.ics", headers={"Push-Dont-Notify": "*"})
    front.wait_idle()
    assert sink.received("a") == [] and len(sink.received("b")) == 1
    assert len(front.suppressed()) == 5

    # not byte-for-byte the Location: no suppression
    put_event(view, cal, "4.ics", headers={"Push-Dont-Notify": f'"{loc_a}/"'})
    # malformed (unquoted): ignored, recorded as a violation
    put_event(view, cal, "5.ics", headers={"Push-Dont-Notify": loc_a})
    front.wait_idle()
    assert len(sink.received("a")) == 2 and len(sink.received("b")) == 3
    assert any("unquoted" in v for v in front.take_violations())


def test_push_dont_notify_ignored_by_older_server(view, front, cal, sink):
    front.honour_dont_notify = False
    a = Subscriber()
    loc = register(view, cal, a.register_body(sink.url("a"))).headers["Location"]
    put_event(view, cal, "1.ics", headers={"Push-Dont-Notify": f'"{loc}"'})
    put_event(view, cal, "2.ics", headers={"Push-Dont-Notify": "*"})
    front.wait_idle()
    assert len(sink.received("a")) == 2
    assert front.suppressed() == []
    assert front.requests("PUT")[0].push_dont_notify == f'"{loc}"'


def test_xandikos_like_last_segment_matching(view, front, cal, sink):
    front.dont_notify_match = "last-segment"
    a = Subscriber()
    loc = register(view, cal, a.register_body(sink.url("a"))).headers["Location"]
    seg = loc.rsplit("/", 1)[1]
    put_event(view, cal, "1.ics", headers={"Push-Dont-Notify": f'"https://elsewhere/x/{seg}"'})
    front.wait_idle()
    assert sink.received("a") == []


def test_merge_window_and_order(view, radicale, front, cal, sink):
    # Delivery is paused while the three PUTs are made, so the merge does not
    # depend on all three fitting in the window on a loaded machine.
    front.merge_window = 1.5
    a = Subscriber()
    register(view, cal, a.register_body(sink.url("a")))
    front.pause_delivery()
    for i in range(3):
        put_event(view, cal, f"{i}.ics")
    wait_until(lambda: front.queued_updates() == 3, 30, "three updates in the outbox")
    assert sink.received("a") == []
    front.resume_delivery()
    front.wait_idle()
    (got,) = sink.received("a")
    token = message(a.decrypt(got.body)).findtext(f"{{{NSP}}}content-update/{{DAV:}}sync-token")
    assert token == radicale.sync_token(cal)
    assert front.pushes()[0].merged == 3
    # delay keeps the order of messages per subscription
    front.merge_window = 0
    front.delay = 0.3
    put_event(view, cal, "x.ics")
    put_event(view, cal, "y.ics")
    front.wait_idle()
    tokens = [message(a.decrypt(g.body)).findtext(f"{{{NSP}}}content-update/{{DAV:}}sync-token")
              for g in sink.received("a")[1:]]
    assert len(tokens) == 2 and tokens[-1] == radicale.sync_token(cal)


def test_rotate_vapid_key(view, front, cal, sink):
    a = Subscriber()
    register(view, cal, a.register_body(sink.url("a")))
    old = front.vapid_public_key
    new = front.rotate_vapid_key()
    assert new != old and front.vapid_public_key == new
    front.wait_idle()
    (got,) = sink.received("a")
    doc = message(a.decrypt(got.body))
    assert doc.find(clark(NSP, "topic")) is None
    assert doc.find(f"{{{NSP}}}property-update/{{DAV:}}prop/{{{NSP}}}transports") is not None
    # announced with the old key (the push resource is bound to it)
    check_vapid(got.headers["Authorization"], old, f"http://127.0.0.1:{sink.port}")
    key = ok_props(propfind_push(view, cal), cal)[clark(NSP, "transports")].find(
        f"{{{NSP}}}web-push/{{{NSP}}}vapid-public-key")
    assert key.text == new
    put_event(view, cal, "a.ics")
    front.wait_idle()
    check_vapid(sink.received("a")[-1].headers["Authorization"], new,
                f"http://127.0.0.1:{sink.port}")


def test_manual_messages_raw_wrong_namespace_and_drop(view, front, cal, sink):
    a = Subscriber()
    loc = register(view, cal, a.register_body(sink.url("a"), prop="0")).headers["Location"]
    front.send_property_update(cal)
    front.send_wrong_namespace_message()
    tampered = bytearray(front.encrypt_for(loc, b"<x/>"))
    tampered[30] ^= 0xFF
    rec = front.push_raw(loc, bytes(tampered), wait=True)
    assert rec.status == 201 and rec.kind == "raw"
    front.wait_idle()
    got = sink.received("a")
    assert len(got) == 3
    doc = message(a.decrypt(got[0].body))
    assert doc.find(clark(NSP, "property-update")) is not None
    assert doc.findtext(clark(NSP, "topic")) == front.topic_for(cal)
    wrong = message(a.decrypt(got[1].body))
    assert wrong.tag == clark(pushfront.NS_WRONG, "push-message")
    assert got[2].body == bytes(tampered)
    # Byte 30 is inside the sender's public key: no longer a point on P-256.
    with pytest.raises(ValueError):
        a.decrypt(got[2].body)
    assert front.drop_all_subscriptions() == 1
    put_event(view, cal, "a.ics")
    front.wait_idle()
    assert len(sink.received("a")) == 3
    assert view.request("DELETE", loc).status_code == 404


def test_dead_push_resource_loses_subscription(view, front, cal, sink):
    a = Subscriber()
    register(view, cal, a.register_body(sink.url("gone")))
    sink.set_status("gone", 410)
    put_event(view, cal, "a.ics")
    front.wait_idle()
    assert front.pushes()[0].status == 410
    assert front.subscriptions() == []
    assert front.registrations_log()[-1]["action"] == "dead"


def test_legacy_namespace(view, front, cal, sink):
    front.legacy_namespace = True
    ms = propfind_push(view, cal, ns=NS_PUSH_LEGACY)
    assert ok_props(ms, cal)[clark(NS_PUSH_LEGACY, "topic")].text == front.topic_for(cal)
    a = Subscriber()
    assert register(view, cal, a.register_body(sink.url("a"))).status_code == 201
    put_event(view, cal, "a.ics")
    front.wait_idle()
    doc = message(a.decrypt(sink.received("a")[0].body))
    assert doc.tag == clark(NS_PUSH_LEGACY, "push-message")
    assert doc.findtext(clark(NS_PUSH_LEGACY, "topic")) == front.topic_for(cal)


# ------------------------------------------------------------------ D-Bus: bus and fake connector

# dbus-python and PyGObject (python3-dbus, python3-gi; scripts/setup installs
# them) are needed by the D-Bus tests below only: without them those tests
# skip, through the `bus` fixture, and the other tests of this file still run.
try:
    import dbus
    import dbus.bus
    import dbus.mainloop.glib
    import dbus.service
    from gi.repository import GLib
    DBUS_MISSING = ""
except ImportError as exc:  # pragma: no cover - depends on the machine
    dbus = None
    DBUS_MISSING = f"{exc} (scripts/setup installs python3-dbus and python3-gi)"

from davtest.dbus import PrivateBus  # noqa: E402

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _ensure_loop() -> None:
    """One GLib main loop thread for every fake connector of this process."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None:
            dbus.mainloop.glib.threads_init()
            loop = GLib.MainLoop()
            _loop_thread = threading.Thread(target=loop.run, daemon=True, name="glib")
            _loop_thread.start()


def in_loop(fn, timeout: float = 15.0):
    done, box = threading.Event(), {}

    def run():
        try:
            box["v"] = fn()
        except Exception as e:  # noqa: BLE001
            box["e"] = e
        done.set()
        return False
    GLib.idle_add(run)
    assert done.wait(timeout), "GLib loop did not run the call"
    if "e" in box:
        raise box["e"]
    return box.get("v")


class FakeConnector:
    """An app's UnifiedPush connector: owns `name`, exports Connector2 (or
    Connector1) at /org/unifiedpush/Connector and records every call."""

    def __init__(self, address: str, name: str = "org.example.davtest.Connector",
                 version: int = 2):
        _ensure_loop()
        self.name, self.version = name, version
        self.calls: list[tuple[str, dict, str]] = []   # (method, args, sender)
        self.cv = threading.Condition()
        fc = self

        def setup():
            bus = dbus.bus.BusConnection(address,
                                         mainloop=dbus.mainloop.glib.DBusGMainLoop())
            if version == 2:
                class C(dbus.service.Object):
                    @dbus.service.method("org.unifiedpush.Connector2", in_signature="a{sv}",
                                         out_signature="a{sv}", sender_keyword="sender",
                                         byte_arrays=True)
                    def Message(self, args, sender=None):
                        d = {"token": str(args["token"]), "message": bytes(args["message"]),
                             "id": str(args.get("id", ""))}
                        fc._record("Message", d, sender)
                        return dbus.Dictionary({"id": d["id"]}, signature="sv")

                    @dbus.service.method("org.unifiedpush.Connector2", in_signature="a{sv}",
                                         out_signature="", sender_keyword="sender")
                    def NewEndpoint(self, args, sender=None):
                        fc._record("NewEndpoint", {"token": str(args["token"]),
                                                   "endpoint": str(args["endpoint"])}, sender)

                    @dbus.service.method("org.unifiedpush.Connector2", in_signature="a{sv}",
                                         out_signature="", sender_keyword="sender")
                    def Unregistered(self, args, sender=None):
                        fc._record("Unregistered", {"token": str(args["token"])}, sender)
            else:
                class C(dbus.service.Object):
                    @dbus.service.method("org.unifiedpush.Connector1", in_signature="says",
                                         out_signature="", sender_keyword="sender",
                                         byte_arrays=True)
                    def Message(self, token, msg, mid, sender=None):
                        fc._record("Message", {"token": str(token), "message": bytes(msg),
                                               "id": str(mid)}, sender)

                    @dbus.service.method("org.unifiedpush.Connector1", in_signature="ss",
                                         out_signature="", sender_keyword="sender")
                    def NewEndpoint(self, token, endpoint, sender=None):
                        fc._record("NewEndpoint", {"token": str(token),
                                                   "endpoint": str(endpoint)}, sender)

                    @dbus.service.method("org.unifiedpush.Connector1", in_signature="s",
                                         out_signature="", sender_keyword="sender")
                    def Unregistered(self, token, sender=None):
                        fc._record("Unregistered", {"token": str(token)}, sender)
            obj = C(bus, "/org/unifiedpush/Connector")
            rc = bus.request_name(name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
            assert rc == dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER
            return bus, obj
        self.bus, self.obj = in_loop(setup)
        self.unique_name = in_loop(lambda: self.bus.get_unique_name())

    def _record(self, method: str, args: dict, sender: str) -> None:
        with self.cv:
            self.calls.append((method, args, str(sender)))
            self.cv.notify_all()

    def wait(self, method: str, n: int = 1, timeout: float = 20.0) -> list:
        with self.cv:
            ok = self.cv.wait_for(lambda: len(self.of(method)) >= n, timeout)
        assert ok, f"{n} {method} call(s) expected, got {self.calls}"
        return self.of(method)

    def of(self, method: str) -> list:
        return [(a, s) for m, a, s in list(self.calls) if m == method]

    def dist(self, dist_name: str):
        return self.bus.get_object(dist_name, "/org/unifiedpush/Distributor", introspect=False)

    def register(self, dist_name: str, token: str, vapid: str | None = None,
                 description: str = "davtest", service: bool = True) -> tuple[str, str]:
        """(result, reason) via Distributor2 or Distributor1 by self.version;
        service=False leaves out the v2 'service' entry (a broken connector)."""
        def call():
            obj = self.dist(dist_name)
            if self.version == 2:
                args = {"token": token, "description": description}
                if service:
                    args["service"] = self.name
                if vapid:
                    args["vapid"] = vapid
                res = obj.Register(dbus.Dictionary(args, signature="sv"),
                                   dbus_interface="org.unifiedpush.Distributor2", timeout=10)
                return str(res["success"]), str(res.get("reason", ""))
            res = obj.Register(self.name, token, description,
                               dbus_interface="org.unifiedpush.Distributor1", timeout=10)
            return str(res[0]), str(res[1])
        return in_loop(call)

    def unregister(self, dist_name: str, token: str) -> None:
        def call():
            obj = self.dist(dist_name)
            if self.version == 2:
                obj.Unregister(dbus.Dictionary({"token": token}, signature="sv"),
                               dbus_interface="org.unifiedpush.Distributor2", timeout=10)
            else:
                obj.Unregister(token, dbus_interface="org.unifiedpush.Distributor1", timeout=10)
        in_loop(call)

    def introspect(self, dist_name: str) -> str:
        return in_loop(lambda: str(self.dist(dist_name).Introspect(
            dbus_interface="org.freedesktop.DBus.Introspectable")))

    def close(self) -> None:
        def close():
            self.obj.remove_from_connection()
            self.bus.close()
        in_loop(close)


@pytest.fixture
def bus(tmp_path):
    if dbus is None:
        pytest.skip(DBUS_MISSING)
    b = PrivateBus(tmp_path / "bus").start()
    yield b
    b.stop()


@pytest.fixture
def connectors(bus):
    made: list[FakeConnector] = []

    def make(version: int = 2, name: str = "org.example.davtest.Connector"):
        c = FakeConnector(bus.address, name=name, version=version)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture
def distributors(bus, tmp_path):
    made: list[Distributor] = []

    def make(mode: str = "v2", **kw) -> Distributor:
        d = Distributor(bus.address, tmp_path / f"dist{len(made)}", mode=mode, **kw).start()
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()
        d.close()


DIST = "org.unifiedpush.Distributor.test"


@pytest.mark.parametrize("version", [2, 1])
def test_distributor_register_endpoint_and_forward(distributors, connectors, version):
    dist = distributors(mode=f"v{version}")
    conn = connectors(version)
    token = "tok-" + str(version)
    assert conn.register(DIST, token) == ("REGISTRATION_SUCCEEDED", "")
    ((args, sender),) = conn.wait("NewEndpoint")
    assert sender == dist.unique_name
    assert args["token"] == token
    endpoint = args["endpoint"]
    assert endpoint.startswith(f"http://127.0.0.1:{dist.push_port}/push/")
    assert len(endpoint) <= 1000
    reg = dist.registration(token)
    assert reg["sender"] == conn.unique_name and reg["service"] == conn.name
    assert reg["version"] == version and reg["endpoint"] == endpoint

    body = bytes(range(256)) * 3
    r = requests.post(endpoint, data=body, headers={"Content-Encoding": "aes128gcm",
                                                    "TTL": "60"}, timeout=10)
    assert r.status_code == 201
    ((msg, msender),) = conn.wait("Message")
    assert msg["token"] == token and msg["message"] == body and msender == dist.unique_name
    assert dist.forwarded_count(token) == 1
    assert dist.message_bodies(token) == [body]
    if version == 2:
        (c,) = dist.wait_calls("Message")
        assert c["result"] == "ok" and c["reply"]["id"] == msg["id"]

    # same token again: success and NewEndpoint with the same endpoint
    assert conn.register(DIST, token) == ("REGISTRATION_SUCCEEDED", "")
    assert conn.wait("NewEndpoint", 2)[1][0]["endpoint"] == endpoint

    # unknown endpoints 404; unregistered 410 and Unregistered confirms
    assert requests.post(dist.push_base + "nope", data=b"x", timeout=10).status_code == 404
    conn.unregister(DIST, token)
    ((u, _),) = conn.wait("Unregistered")
    assert u["token"] == token
    assert requests.post(endpoint, data=b"x", timeout=10).status_code == 410
    assert dist.registrations() == []
    assert dist.violations() == []


@pytest.mark.parametrize("mode, present, absent", [
    ("v2", "org.unifiedpush.Distributor2", "org.unifiedpush.Distributor1"),
    ("v1", "org.unifiedpush.Distributor1", "org.unifiedpush.Distributor2"),
])
def test_distributor_introspection(distributors, connectors, mode, present, absent):
    distributors(mode=mode)
    xml = connectors(2).introspect(DIST)
    root = ET.fromstring(xml)
    names = {i.get("name") for i in root.findall("interface")}
    assert present in names and absent not in names
    iface = [i for i in root.findall("interface") if i.get("name") == present][0]
    reg = [m for m in iface.findall("method") if m.get("name") == "Register"][0]
    sig = [(a.get("direction"), a.get("type")) for a in reg.findall("arg")]
    if mode == "v2":
        assert sig == [("in", "a{sv}"), ("out", "a{sv}")]
    else:
        assert sig == [("in", "s"), ("in", "s"), ("in", "s"), ("out", "s"), ("out", "s")]


def test_distributor_both_interfaces(distributors, connectors):
    distributors(mode="both")
    c2 = connectors(2)
    c1 = connectors(1, name="org.example.davtest.Connector1")
    assert c2.register(DIST, "t2")[0] == "REGISTRATION_SUCCEEDED"
    assert c1.register(DIST, "t1")[0] == "REGISTRATION_SUCCEEDED"
    assert c2.wait("NewEndpoint")[0][0]["token"] == "t2"
    assert c1.wait("NewEndpoint")[0][0]["token"] == "t1"


def test_distributor_control(distributors, connectors):
    dist = distributors()
    conn = connectors(2)
    conn.register(DIST, "t")
    old = conn.wait("NewEndpoint")[0][0]["endpoint"]
    new = dist.change_endpoint("t")
    assert new != old
    assert conn.wait("NewEndpoint", 2)[1][0]["endpoint"] == new
    assert requests.post(old, data=b"x", timeout=10).status_code == 410
    assert requests.post(new, data=b"y", timeout=10).status_code == 201
    assert conn.wait("Message")[0][0]["message"] == b"y"
    # pause holds pushes, resume delivers them in order
    dist.pause()
    for b in (b"1", b"2", b"3"):
        assert requests.post(new, data=b, timeout=10).status_code == 201
    assert dist.state()["held"] == 3 and len(conn.of("Message")) == 1
    dist.resume()
    assert [a["message"] for a, _ in conn.wait("Message", 4)] == [b"y", b"1", b"2", b"3"]
    # the distributor drops us
    dist.send_unregistered("t")
    assert conn.wait("Unregistered")[0][0]["token"] == "t"
    assert dist.registrations() == []
    # refusals and VAPID
    dist.refuse("ACTION_REQUIRED", count=1)
    assert conn.register(DIST, "u") == ("REGISTRATION_FAILED", "ACTION_REQUIRED")
    dist.set_vapid_required(True)
    assert conn.register(DIST, "u") == ("REGISTRATION_FAILED", "VAPID_REQUIRED")
    key = b64u(raw_public(ec.generate_private_key(ec.SECP256R1())))
    assert conn.register(DIST, "u", vapid=key) == ("REGISTRATION_SUCCEEDED", "")
    assert dist.registration("u")["vapid"] == key
    # a new vapid key gets a new endpoint
    e1 = dist.endpoint_for("u")
    key2 = b64u(raw_public(ec.generate_private_key(ec.SECP256R1())))
    conn.register(DIST, "u", vapid=key2)
    assert dist.endpoint_for("u") != e1


def test_distributor_target_sender_and_order(distributors, connectors):
    dist = distributors(target="sender", endpoint_order="before")
    conn = connectors(2)
    conn.register(DIST, "t")
    conn.wait("NewEndpoint")
    (call,) = dist.wait_calls("NewEndpoint")
    assert call["target"] == conn.unique_name and call["result"] == "ok"


def test_distributor_restart_keeps_or_forgets_state(distributors, connectors):
    dist = distributors()
    conn = connectors(2)
    conn.register(DIST, "t")
    endpoint = conn.wait("NewEndpoint")[0][0]["endpoint"]
    old_pid = dist.proc.pid
    dist.restart()
    assert dist.proc.pid != old_pid
    wait_until(lambda: dist.registration("t"), 10, "registration restored after restart")
    assert dist.endpoint_for("t") == endpoint
    assert requests.post(endpoint, data=b"after", timeout=10).status_code == 201
    assert conn.wait("Message")[0][0]["message"] == b"after"
    dist.restart(fresh=True)
    assert dist.registrations() == []
    assert requests.post(endpoint, data=b"x", timeout=10).status_code == 404


def test_distributor_refuses_a_register_without_service(distributors, connectors):
    dist = distributors()
    conn = connectors(2)
    assert conn.register(DIST, "t", service=False) == ("REGISTRATION_FAILED", "INTERNAL_ERROR")
    assert dist.registrations() == []
    assert dist.take_violations() == ["Register v2 without 'service'"]
    # The lenient distributor, as an explicit option: registers and records.
    lenient = distributors(name="org.unifiedpush.Distributor.lenient",
                           accept_missing_service=True)
    assert conn.register(lenient.name, "t", service=False)[0] == "REGISTRATION_SUCCEEDED"
    assert lenient.take_violations() == ["Register v2 without 'service'"]


def test_distributor_vapid_enforcement(distributors, connectors):
    dist = distributors()        # enforced by default (RFC 8292)
    conn = connectors(2)
    key = ec.generate_private_key(ec.SECP256R1())
    conn.register(DIST, "t", vapid=b64u(raw_public(key)))
    endpoint = conn.wait("NewEndpoint")[0][0]["endpoint"]
    assert requests.post(endpoint, data=b"x", timeout=10).status_code == 401
    other = ec.generate_private_key(ec.SECP256R1())
    bad = pushfront.vapid_authorization(other, endpoint, "mailto:a@example.invalid")
    assert requests.post(endpoint, data=b"x", headers={"Authorization": bad},
                         timeout=10).status_code == 403
    good = pushfront.vapid_authorization(key, endpoint, "mailto:a@example.invalid")
    assert requests.post(endpoint, data=b"x", headers={"Authorization": good},
                         timeout=10).status_code == 201
    assert len(conn.wait("Message")) == 1
    assert dist.counters()["vapid_rejected"] == 1


def test_end_to_end_front_distributor_connector(view, radicale, front, cal, distributors,
                                                connectors):
    """Server change -> front -> distributor endpoint -> D-Bus Message -> decrypts."""
    dist = distributors(enforce_vapid=True)
    conn = connectors(2)
    assert conn.register(DIST, "e2e", vapid=front.vapid_public_key)[0] == "REGISTRATION_SUCCEEDED"
    endpoint = conn.wait("NewEndpoint")[0][0]["endpoint"]
    sub = Subscriber()
    loc = register(view, cal, sub.register_body(endpoint)).headers["Location"]
    put_event(view, cal, "a.ics")
    ((msg, sender),) = conn.wait("Message")
    assert sender == dist.unique_name
    doc = message(sub.decrypt(msg["message"]))
    assert doc.findtext(f"{{{NSP}}}content-update/{{DAV:}}sync-token") == \
        radicale.sync_token(cal)
    front.wait_idle()
    assert front.pushes()[-1].status == 201
    # after a VAPID key rotation the announcement (old key) still arrives, a push
    # signed with the new key is refused by the distributor until re-registration
    front.rotate_vapid_key()
    ((rot, _),) = conn.wait("Message", 2)[1:]
    assert message(sub.decrypt(rot["message"])).find(clark(NSP, "topic")) is None
    put_event(view, cal, "b.ics")
    front.wait_idle()
    refused = front.pushes()[-1]
    assert refused.status == 403
    # It was this subscription's push, to the distributor's endpoint, and
    # nothing more reached the connector.
    assert (refused.subscription, refused.push_resource) == (loc, endpoint)
    assert len(conn.of("Message")) == 2


def test_front_works_for_both_backends(dav_server, sink):
    """Discovery, registration and a push with the right token, for Radicale
    and Xandikos behind the front."""
    with PushFront(dav_server.base_url) as front:
        view = front.server_view(dav_server)
        cal = view.make_calendar("pushcal", "Push")
        props = ok_props(propfind_push(view, cal), cal)
        assert props[clark(NSP, "topic")].text == front.topic_for(cal)
        a = Subscriber()
        r = register(view, cal, a.register_body(sink.url("a")))
        assert r.status_code == 201, r.text
        put_event(view, cal, "a.ics")
        front.wait_idle()
        (got,) = sink.received("a")
        token = message(a.decrypt(got.body)).findtext(
            f"{{{NSP}}}content-update/{{DAV:}}sync-token")
        assert token == dav_server.sync_token(cal)
        assert front.violations() == []
