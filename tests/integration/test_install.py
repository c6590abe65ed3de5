"""What `meson install` puts on a system besides the binaries: the man pages
(rendered by man(1) without a warning), the shell completions, and the
example configuration that error messages point to. Also: the man pages
document every configuration key, option and command, and the bash
completion offers the names a running daemon knows.

The install test configures and builds a folder of its own (in the test's
temporary folder, prefix /usr, without tests): the shared build folder
belongs to the other tests and is never installed from here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from davtest import sampledata
from davtest.daemon import REPO_ROOT, DaemonEnv, account_for, davsyncd_path, wait_until
from davtest.dbus import PrivateBus

MAN_PAGES = {"davsyncd.1": "man1", "davsyncctl.1": "man1", "davsyncd.conf.5": "man5"}
MAN_SOURCE = REPO_ROOT / "docs" / "man"
SCHEMA = REPO_ROOT / "config" / "config.schema.json"
COMPLETION = REPO_ROOT / "completions" / "davsyncctl.bash"
# Keys other branches add to the schema; the page documents them already.
KEYS_BEING_ADDED = {"top": {"push_service"}, "account": {"secret", "push_service"}}


def davsyncctl_path() -> Path:
    return davsyncd_path().parent / "davsyncctl"


# ------------------------------------------------------------------ install


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh build folder (optimisation off: only the files matter here),
    installed into a DESTDIR. Returns dest and usr (dest/usr)."""
    top = tmp_path_factory.mktemp("install")
    build, dest = top / "build", top / "dest"
    steps = [
        ["meson", "setup", str(build), str(REPO_ROOT), "--prefix=/usr", "--buildtype=plain",
         "-Dtests=false", "-Dfuzzers=false"],
        ["ninja", "-C", str(build), "-j2"],
        ["meson", "install", "-C", str(build), "--no-rebuild", "--destdir", str(dest)],
    ]
    for cmd in steps:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
        assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return {"dest": dest, "usr": dest / "usr", "build": build}


def test_install_places_man_pages_completions_and_example(installed):
    usr = installed["usr"]
    for page, section in MAN_PAGES.items():
        assert (usr / "share" / "man" / section / page).is_file(), sorted(map(str, usr.rglob("*")))
    # bash-completion loads the file named after the command being completed.
    completions = usr / "share" / "bash-completion" / "completions"
    for name in ("davsyncctl", "davsyncd"):
        assert (completions / name).read_text() == COMPLETION.read_text()
    assert (usr / "share" / "zsh" / "site-functions" / "_davsyncctl").is_file()
    for name in ("davsyncctl.fish", "davsyncd.fish"):
        assert (usr / "share" / "fish" / "vendor_completions.d" / name).is_file()
    doc = usr / "share" / "doc" / "davsyncd"
    for name in ("config.example.json", "config.schema.json"):
        assert (doc / name).read_text() == (REPO_ROOT / "config" / name).read_text()


@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_renders_without_warnings(installed, page):
    path = installed["usr"] / "share" / "man" / MAN_PAGES[page] / page
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    res = subprocess.run(["man", "--warnings=all", "-l", str(path)], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    # groff itself, every warning on: nothing either.
    res2 = subprocess.run(["groff", "-ww", "-z", "-man", str(path)], capture_output=True, text=True, timeout=60)
    assert res2.returncode == 0 and res2.stderr == "", res2.stderr
    name, section = page.rsplit(".", 1)
    text = re.sub(r".\x08", "", res.stdout)   # man's overstrike bold and underline
    assert text.startswith(f"{name}({section})"), text[:200]
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.M), heading


def test_man_warning_check_can_fail(tmp_path):
    """The check above would see a broken page: a roff request that does not exist."""
    bad = tmp_path / "bad.1"
    bad.write_text('.TH BAD 1\n.SH NAME\nbad \\- broken\n.NOSUCHMACRO x\n')
    res = subprocess.run(["groff", "-ww", "-z", "-man", str(bad)], capture_output=True, text=True, timeout=60)
    assert res.stderr != ""


def test_missing_config_names_the_installed_example(installed, tmp_path):
    """The error for a missing configuration points to the example where it
    was installed (prefix/share/doc/davsyncd)."""
    env = DaemonEnv(tmp_path / "env")
    res = subprocess.run([str(installed["usr"] / "bin" / "davsyncd"), "--discover"], capture_output=True,
                         text=True, env=env.env(), timeout=60)
    assert res.returncode == 78, res.stderr
    assert "/usr/share/doc/davsyncd/config.example.json" in res.stderr, res.stderr
    assert (installed["dest"] / "usr/share/doc/davsyncd/config.example.json").is_file()


# ------------------------------------------------------------------ what the pages document


def schema_keys() -> dict[str, set[str]]:
    schema = json.loads(SCHEMA.read_text())
    account = schema["$defs"]["account"]["properties"]
    keys = {"top": set(schema["properties"]), "account": set(account)}
    # Objects inside an account (collections: include, exclude).
    for prop in account.values():
        keys["account"] |= set(prop.get("properties", {}))
    return keys


def undocumented(keys: set[str], page: str) -> set[str]:
    """Keys that the page source never names in bold (*key*)."""
    return {k for k in keys if f"*{k}*" not in page}


def test_conf_page_documents_every_schema_key():
    page = (MAN_SOURCE / "davsyncd.conf.5.scd").read_text()
    keys = schema_keys()
    assert "accounts" in keys["top"] and "password_command" in keys["account"] and "exclude" in keys["account"]
    for part in ("top", "account"):
        assert not undocumented(keys[part] | KEYS_BEING_ADDED[part], page), part
    # The check can fail: a page without one key's entry is caught.
    assert undocumented(keys["account"], page.replace("*verify_tls*", "verify_tls")) == {"verify_tls"}


def help_words(binary: Path, pattern: str) -> set[str]:
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30).stdout
    return set(re.findall(pattern, out, re.M))


def test_davsyncd_page_documents_every_option_and_exit_status():
    page = (MAN_SOURCE / "davsyncd.1.scd").read_text()
    options = help_words(davsyncd_path(), r"^\s+(--[a-z-]+)")
    assert {"--config", "--once", "--discover"} <= options
    assert {o for o in options if f"*{o}*" not in page} == set()
    for status in help_words(davsyncd_path(), r"^\s+(\d+)\s{2,}"):
        assert f"*{status}*" in page, status
    for sig in ("SIGHUP", "SIGTERM"):
        assert f"*{sig}*" in page
    for xml in (REPO_ROOT / "dbus").glob("io.github.davsyncd.*.xml"):
        assert xml.stem in page, xml.stem
    assert "journalctl --user -u davsyncd ACCOUNT=personal" in page
    # Every journal MESSAGE_ID the code sends.
    ids = re.findall(r'= "([0-9a-f]{32})"', (REPO_ROOT / "daemon" / "core" / "log.hpp").read_text())
    assert len(ids) >= 6
    assert [i for i in ids if f"*{i}*" not in page] == []


def test_davsyncctl_page_documents_every_command_and_option():
    page = (MAN_SOURCE / "davsyncctl.1.scd").read_text()
    commands = help_words(davsyncctl_path(), r"^  ([a-z][a-z-]+)")
    assert {"status", "sync", "watch", "reload", "confirm-delete", "list"} <= commands
    assert {c for c in commands | {"set-password"} if f"*{c}*" not in page} == set()
    options = help_words(davsyncctl_path(), r"^\s+(--[a-z-]+)")
    assert {o for o in options if f"*{o}*" not in page} == set()


# ------------------------------------------------------------------ bash completion


def complete(words: list[str], env: dict, script: Path = COMPLETION) -> list[str]:
    """Runs the completion function for `words` (the last one is the word
    being completed) in a bash that sourced `script`; returns COMPREPLY."""
    command = Path(words[0]).name
    prog = f"""
source {script}
COMP_WORDS=({' '.join(_bash_quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
_{command}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line]


def _bash_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@pytest.fixture
def running_daemon(tmp_path, radicale):
    """davsyncd on a private bus with two accounts on Radicale's demo data,
    first sync done; yields the environment for completion runs."""
    sampledata.seed_demo(radicale)
    env = DaemonEnv(tmp_path / "env")
    config = env.write_config([account_for(radicale, "personal", sync_interval=3600),
                               account_for(radicale, "work", sync_interval=3600,
                                           local_root=str(tmp_path / "work-data"))])
    with PrivateBus(tmp_path / "bus") as bus:
        proc = env.start("--config", config, extra_env={"DBUS_SESSION_BUS_ADDRESS": bus.address})
        try:
            run_env = dict(env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address}),
                           PATH=f"{davsyncd_path().parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")

            def listed(*args):
                res = subprocess.run([str(davsyncctl_path()), "list", *args], capture_output=True, text=True,
                                     env=run_env, timeout=30)
                return res.stdout.split() if res.returncode == 0 else None

            wait_until(lambda: proc.poll() is not None or listed("work") == ["contacts", "personal", "tasks"]
                       or None, 60, "both accounts' collections on the bus")
            assert proc.poll() is None, (env.root / "davsyncd.log").read_text()
            yield run_env
        finally:
            DaemonEnv.stop(proc)


def test_davsyncctl_list_prints_names(running_daemon):
    ctl = str(davsyncctl_path())
    res = subprocess.run([ctl, "list"], capture_output=True, text=True, env=running_daemon, timeout=30)
    assert res.returncode == 0 and res.stdout == "personal\nwork\n", res.stdout + res.stderr
    res = subprocess.run([ctl, "list", "nosuch"], capture_output=True, text=True, env=running_daemon, timeout=30)
    assert res.returncode == 1 and "no account 'nosuch'" in res.stderr


def test_bash_completion_offers_the_daemons_names(running_daemon):
    env = running_daemon
    assert complete(["davsyncctl", ""], env) == \
        ["status", "sync", "watch", "reload", "confirm-delete", "set-password", "list"]
    assert complete(["davsyncctl", "s"], env) == ["status", "sync", "set-password"]
    assert complete(["davsyncctl", "--j"], env) == ["--json"]
    # Account names, then that account's collections, from the running daemon.
    assert complete(["davsyncctl", "sync", ""], env) == ["personal", "work"]
    assert complete(["davsyncctl", "--json", "sync", "w"], env) == ["work"]
    assert complete(["davsyncctl", "sync", "work", ""], env) == ["contacts", "personal", "tasks"]
    assert complete(["davsyncctl", "sync", "work", "t"], env) == ["tasks"]
    assert complete(["davsyncctl", "sync", "work", "tasks", ""], env) == []
    assert complete(["davsyncctl", "set-password", "p"], env) == ["personal"]
    assert complete(["davsyncctl", "confirm-delete", ""], env) == ["personal/", "work/"]
    assert complete(["davsyncctl", "confirm-delete", "personal/c"], env) == ["personal/contacts"]
    assert complete(["davsyncctl", "--timeout", ""], env) == []
    # davsyncd: options, and --account from the daemon.
    assert complete(["davsyncd", "--acc"], env) == ["--account"]
    assert complete(["davsyncd", "--account", ""], env) == ["personal", "work"]


def test_bash_completion_takes_names_literally(tmp_path):
    """Collection ids are the server's choice: a name is offered as it is,
    never expanded as a shell word (compgen -W would run a $(...))."""
    marker = tmp_path / "expanded"
    names = f"$(touch {marker})\n`touch {marker}`\n* a b\nplain"
    prog = f"""
source {COMPLETION}
cur=''
COMPREPLY=()
_davsyncctl_add_matching {_bash_quote(names)} ""
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == names.split("\n")
    assert not marker.exists()


def test_bash_completion_without_a_daemon_offers_no_names(tmp_path):
    """No daemon (and no activation on this empty bus): commands still
    complete, names are just absent, and nothing hangs or prints."""
    with PrivateBus(tmp_path / "bus") as bus:
        env = dict(DaemonEnv(tmp_path / "env").env({"DBUS_SESSION_BUS_ADDRESS": bus.address}),
                   PATH=f"{davsyncd_path().parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        assert complete(["davsyncctl", "sync", ""], env) == []
        assert complete(["davsyncctl", "rel"], env) == ["reload"]


def test_zsh_and_fish_completions_parse():
    for shell, files in (("zsh", ["_davsyncctl.zsh"]), ("fish", ["davsyncctl.fish", "davsyncd.fish"])):
        if not shutil.which(shell):
            pytest.skip(f"{shell} is not installed (Debian package {shell})")
        for name in files:
            res = subprocess.run([shell, "-n", str(REPO_ROOT / "completions" / name)], capture_output=True,
                                 text=True, timeout=60)
            assert res.returncode == 0 and res.stderr == "", (name, res.stderr)


def fish_complete(line: str, env: dict) -> list[str]:
    """fish's completions (without descriptions) for a command line."""
    files = " ".join(str(REPO_ROOT / "completions" / n) for n in ("davsyncctl.fish", "davsyncd.fish"))
    prog = f"for f in {files}; source $f; end; complete -C {_bash_quote(line)}"
    res = subprocess.run(["fish", "--no-config", "-c", prog], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return [l.split("\t")[0] for l in res.stdout.splitlines() if l]


def test_fish_completion_offers_the_daemons_names(running_daemon):
    if not shutil.which("fish"):
        pytest.skip("fish is not installed (Debian package fish)")
    env = running_daemon
    assert fish_complete("davsyncctl sync ", env) == ["personal", "work"]
    assert fish_complete("davsyncctl --timeout 9 sync work ", env) == ["contacts", "personal", "tasks"]
    assert fish_complete("davsyncctl confirm-delete w", env) == ["work/contacts", "work/personal", "work/tasks"]
    assert fish_complete("davsyncd --account ", env) == ["personal", "work"]
    assert fish_complete("davsyncctl rel", env) == ["reload"]
