"""verify_tls against a real TLS server: a certificate no CA signed (made by
`openssl req -x509`, served by a TLS front before Radicale) is refused by
default, with an error that says so, and accepted with "verify_tls": false."""

from __future__ import annotations

import pytest

from davtest import sampledata
from davtest.daemon import account_for, wait_until
from davtest.tlsproxy import TlsProxy


@pytest.fixture
def tls_radicale(radicale, tmp_path):
    sampledata.seed_demo(radicale)
    with TlsProxy(radicale.port, tmp_path / "tls") as proxy:
        yield radicale, proxy


def test_a_self_signed_certificate_is_refused_by_default(tls_radicale, daemon_env):
    radicale, proxy = tls_radicale
    cfg = daemon_env.write_config([account_for(radicale, "tls", url=proxy.url(f"/{radicale.user}/"))])
    res = daemon_env.run("--config", cfg, "--once")
    assert res.returncode != 0, res.stdout
    assert "certificate" in res.stderr.lower(), res.stderr
    # The proxy's thread counts the refused handshake after the client has
    # already closed: wait for it rather than race it.
    wait_until(lambda: proxy.handshakes_failed >= 1, 30, "the proxy to see the refused handshake")
    # Nothing was synced, and the password never went out (no request got
    # past the handshake).
    assert not list((daemon_env.data_dir / "tls").rglob("*.ics"))


def test_verify_tls_false_accepts_it(tls_radicale, daemon_env):
    radicale, proxy = tls_radicale
    cfg = daemon_env.write_config([account_for(radicale, "tls", url=proxy.url(f"/{radicale.user}/"),
                                               verify_tls=False)])
    res = daemon_env.run("--config", cfg, "--once")
    assert res.returncode == 0, res.stderr
    assert proxy.handshakes_failed == 0
    assert list((daemon_env.data_dir / "tls").rglob("*.ics")), res.stdout
    # https: no warning about a password in clear text.
    assert "clear text" not in res.stderr
