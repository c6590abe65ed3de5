"""The password in the Secret Service: a real GNOME Keyring (davtest/keyring.py)
and a real Radicale that checks the password (htpasswd), on a private bus.

An account with neither `password` nor `password_command` takes its password
from the item {"application": "davsyncd", "account": <id>} (or the
attributes in `secret`); `davsyncctl set-password` stores that item; a
missing item or a locked keyring waits for the user with an error that says
what to do, and no sync the user did not ask for brings up a prompt.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

from davtest.credentials import seed, wait_refused, wait_synced_ok
from davtest.daemon import account_for
from davtest.dbus import ACCOUNT as ACCOUNT_IFACE, account_path
from davtest.keyring import keyring  # noqa: F401  (fixture)
from test_daemon import INTERVAL, davsyncctl_path, local_items, start_daemon  # noqa: F401  (fixture)

ACCOUNT = "kr"
ITEM = {"application": "davsyncd", "account": ACCOUNT}


def _config(radicale, daemon_env, **extra):
    acc = account_for(radicale, ACCOUNT, sync_interval=INTERVAL, **extra)
    acc.pop("password")  # neither password nor password_command: the keyring
    return daemon_env.write_config([acc])


def _once(daemon_env, bus) -> subprocess.CompletedProcess:
    return daemon_env.run("--once", extra_env={"DBUS_SESSION_BUS_ADDRESS": bus.address})


def _synced_files(daemon_env) -> dict:
    return local_items(daemon_env.data_dir / ACCOUNT / "cal")


def test_secret_tool_item_used_by_once_and_by_the_daemon(radicale, daemon_env, bus, keyring, start_daemon):
    seed(radicale)
    keyring.store(ITEM, radicale.password, label="davsyncd: kr")
    cfg = _config(radicale, daemon_env)

    res = _once(daemon_env, bus)
    assert res.returncode == 0, res.stderr
    assert "kr/cal: 1 down" in res.stdout
    assert len(_synced_files(daemon_env)) == 1
    assert radicale.password not in res.stdout + res.stderr

    d = start_daemon(cfg)
    a = d.wait_synced(ACCOUNT)
    assert a["LastResult"] == "ok", a["LastError"]
    assert radicale.password not in d.log()


def test_attributes_named_in_secret(radicale, daemon_env, bus, keyring):
    seed(radicale)
    other = {"service": "dav.example.org", "user": "alice wonder"}
    keyring.store(other, radicale.password, label="stored by another program")
    _config(radicale, daemon_env, secret=other)
    res = _once(daemon_env, bus)
    assert res.returncode == 0, res.stderr
    assert len(_synced_files(daemon_env)) == 1


def test_missing_item_waits_then_set_password_makes_it_work(radicale, daemon_env, bus, keyring, start_daemon):
    seed(radicale)
    cfg = _config(radicale, daemon_env)
    res = _once(daemon_env, bus)
    hint = (f"no password for account '{ACCOUNT}': store one with `davsyncctl set-password {ACCOUNT}` "
            f"or `secret-tool store --label davsyncd application davsyncd account {ACCOUNT}`")
    assert res.returncode == 1
    assert hint in res.stderr

    d = start_daemon(cfg)
    refused = wait_refused(d, ACCOUNT)
    assert refused["LastError"] == hint

    # stdin is not a terminal: one line is the password.
    res = subprocess.run([str(davsyncctl_path()), "set-password", ACCOUNT], input=radicale.password + "\n",
                         env=daemon_env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address}),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "asked the running davsyncd to use it" in res.stdout
    assert keyring.lookup(ITEM) == radicale.password
    wait_synced_ok(d, ACCOUNT, refused["LastSync"])
    assert len(_synced_files(daemon_env)) == 1
    assert radicale.password not in d.log()


def test_set_password_replaces_the_item(radicale, daemon_env, bus, keyring):
    _config(radicale, daemon_env)
    env = daemon_env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address})
    for pw in ("first", "second"):
        res = subprocess.run([str(davsyncctl_path()), "set-password", ACCOUNT], input=pw + "\n", env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "asked the running" not in res.stdout  # no daemon: none started
    assert keyring.lookup(ITEM) == "second"
    res = subprocess.run([str(davsyncctl_path()), "set-password", "nosuch"], input="x\n", env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "no account 'nosuch'" in res.stderr


def test_locked_keyring_waits_without_a_prompt(radicale, daemon_env, bus, keyring, start_daemon):
    seed(radicale)
    keyring.store(ITEM, radicale.password)
    keyring.lock()
    calls = keyring.watch_calls()
    d = start_daemon(_config(radicale, daemon_env))  # its first sync is no user's request
    refused = wait_refused(d, ACCOUNT)
    assert "the keyring that holds it is locked" in refused["LastError"]
    assert f"`davsyncctl sync {ACCOUNT}`" in refused["LastError"]
    seen = calls.members()
    assert "SearchItems" in seen
    assert "Unlock" not in seen and "Prompt" not in seen, seen
    assert keyring.locked()
    assert not _synced_files(daemon_env)


def test_no_secret_service_on_the_bus(radicale, daemon_env, bus):
    _config(radicale, daemon_env)
    res = _once(daemon_env, bus)
    assert res.returncode == 1
    assert (f"no password for account '{ACCOUNT}': no Secret Service on the session bus "
            "(nothing owns org.freedesktop.secrets)") in res.stderr


def test_user_sync_of_a_locked_keyring_asks_the_keyring_to_prompt(radicale, daemon_env, bus, keyring,
                                                                   start_daemon):
    """Only a user's Sync() brings up the unlock prompt. Here no prompter can
    show one (no display), so the keyring dismisses it at once: the sync ends
    with that error instead of hanging."""
    seed(radicale)
    keyring.store(ITEM, radicale.password)
    keyring.lock()
    d = start_daemon(_config(radicale, daemon_env))
    refused = wait_refused(d, ACCOUNT)
    calls = keyring.watch_calls()
    d.bus.call(account_path(ACCOUNT), f"{ACCOUNT_IFACE}.Sync")
    a = d.wait(lambda: (a := d.account(ACCOUNT))["LastSync"] > refused["LastSync"] and a, 60,
               "the user's sync to end")
    assert "Unlock" in calls.members() and "Prompt" in calls.members()
    assert "unlock prompt was dismissed" in a["LastError"], a["LastError"]
    assert a["State"] == "auth-failed"


def test_set_password_on_a_terminal_does_not_echo(radicale, daemon_env, bus, keyring):
    _config(radicale, daemon_env)
    pid, fd = pty.fork()
    if pid == 0:  # the child: davsyncctl on the terminal
        os.execve(str(davsyncctl_path()), [str(davsyncctl_path()), "set-password", ACCOUNT],
                  daemon_env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address}))
    seen = b""

    def read_until(text: bytes):
        nonlocal seen
        deadline = time.monotonic() + 30
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} on the terminal: {seen!r}"
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    seen += os.read(fd, 1024)
                except OSError:  # the child closed the terminal
                    break
        return seen

    finished = False
    try:
        read_until(f"Password for account '{ACCOUNT}': ".encode())
        os.write(fd, b"typed-secret\n")
        out = read_until(b"stored the password")
        finished = True
    finally:
        if not finished:  # a failed wait above: never leave it waiting on the terminal
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"typed-secret" not in out
    assert keyring.lookup(ITEM) == "typed-secret"


def test_set_password_into_a_locked_keyring_says_why_it_failed(radicale, daemon_env, bus, keyring):
    """set-password may prompt (the user is there); with no prompter the
    keyring dismisses the prompt, and nothing is stored."""
    _config(radicale, daemon_env)
    keyring.lock()
    res = subprocess.run([str(davsyncctl_path()), "set-password", ACCOUNT], input="pw\n",
                         env=daemon_env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address}),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert (f"cannot store the password of account '{ACCOUNT}': the keyring's unlock prompt was dismissed; "
            f"run `davsyncctl set-password {ACCOUNT}` to be asked again") in res.stderr
