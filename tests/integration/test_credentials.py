"""A fixed password takes effect without a restart: after a 401 the next
attempt (a user's Sync(), a reload, or the config file saved on disk) runs
password_command again. Real Radicale (htpasswd auth), a private bus.
"""

from __future__ import annotations

import json

from davtest.credentials import seed, wait_refused, wait_synced_ok
from davtest.daemon import account_for
from davtest.dbus import ACCOUNT as ACCOUNT_IFACE, MANAGER, ROOT_PATH, account_path
from test_daemon import INTERVAL, start_daemon  # noqa: F401  (fixture)

ACCOUNT = "pw"


def _setup(radicale, daemon_env, wrong: bool = True):
    seed(radicale)
    secret = daemon_env.root / "secret"
    secret.write_text("wrong\n" if wrong else radicale.password + "\n")
    cfg = daemon_env.write_config([account_for(radicale, ACCOUNT, sync_interval=INTERVAL,
                                               password_command=f"cat {secret}")])
    return secret, cfg


def _refused(d) -> dict:
    return wait_refused(d, ACCOUNT)


def _synced_ok(d, after: int) -> dict:
    return wait_synced_ok(d, ACCOUNT, after)


def test_fixed_password_file_then_sync(radicale, daemon_env, bus, start_daemon):
    secret, cfg = _setup(radicale, daemon_env)
    d = start_daemon(cfg)
    refused = _refused(d)
    assert "401" in refused["LastError"]
    # README: "a refused password stops retries until you fix it": no retry
    # and no poll is planned (NextSync 0), and none happens.
    assert refused["NextSync"] == 0, refused
    secret.write_text(radicale.password + "\n")
    bus.call(account_path(ACCOUNT), f"{ACCOUNT_IFACE}.Sync")
    _synced_ok(d, refused["LastSync"])


def test_fixed_password_file_then_reload(radicale, daemon_env, bus, start_daemon):
    secret, cfg = _setup(radicale, daemon_env)
    d = start_daemon(cfg)
    refused = _refused(d)
    secret.write_text(radicale.password + "\n")
    bus.call(ROOT_PATH, f"{MANAGER}.Reload")  # the configuration itself is unchanged
    _synced_ok(d, refused["LastSync"])


def test_config_saved_on_disk_is_reloaded(radicale, daemon_env, bus, start_daemon):
    """The user fixes the password in config.json itself; no reload asked for."""
    secret, cfg = _setup(radicale, daemon_env)
    d = start_daemon(cfg)
    refused = _refused(d)
    doc = json.loads(cfg.read_text())
    doc["accounts"][0].pop("password_command")
    doc["accounts"][0]["password"] = radicale.password
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))  # as editors do: a new file renamed over the old one
    tmp.rename(cfg)
    _synced_ok(d, refused["LastSync"])
    assert "configuration reloaded" in d.log()

    # A broken save keeps the running configuration.
    cfg.write_text("{ not json")
    d.wait(lambda: "not reloaded" in d.log(), 30, "the refused reload")
    assert d.account(ACCOUNT)["LastResult"] == "ok"
