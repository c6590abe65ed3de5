"""Helpers for sync tests: davsyncd's vdir folders, state and conflicts on
disk, the `--once` summary lines, and item contents on both sides.

    lines = run_once(env, cfg)                      # asserts exit 0, parses stdout
    lines["demo/personal"].down                     # SyncLine fields
    local = local_by_uid(vdir_folder(env, "demo", "personal"))   # {uid: LocalItem}
    remote = server_by_uid(srv, "/alice/personal/")              # {uid: ServerItem}
    assert_same_items(local, remote)                # same UIDs, same content per UID

Content is compared semantically (`normalized()`): both servers re-serialise
what they store (Radicale and Xandikos reorder properties and fold lines), so
byte equality between an uploaded file and the server copy is not expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterable, Optional

from davtest.servers import NS_CALDAV, NS_CARDDAV, NS_DAV, _path_of, clark

ITEM_SUFFIXES = (".ics", ".vcf")
MAIN_COMPONENTS = ("VEVENT", "VTODO", "VJOURNAL", "VCARD")


# ---------- the --once summary lines ----------

_LINE_RE = re.compile(
    r"^(?P<label>[^\s:]+(?:/[^\s:]+)?): (?P<down>\d+) down, (?P<up>\d+) up, "
    r"(?P<deleted_here>\d+) deleted here, (?P<deleted_server>\d+) deleted on server, "
    r"(?P<conflicts>\d+) conflicts, (?P<requests>\d+) requests, (?P<seconds>\d+(?:\.\d+)?) s"
    r"(?:, (?P<refused_items>\d+) refused by the server)?"
    r"(?:, (?P<waiting>\d+) waiting to upload)?"
    r"(?:, (?P<skipped>\d+) skipped)?"
    r"(?: -- REFUSED: (?P<refused>.+))?$")


@dataclasses.dataclass
class SyncLine:
    label: str
    down: int
    up: int
    deleted_here: int
    deleted_server: int
    conflicts: int
    requests: int
    seconds: float
    skipped: int
    refused: Optional[str]     # why a mass deletion was refused
    text: str
    refused_items: int = 0     # local changes the server refused this sync
    waiting: int = 0           # local changes waiting to be sent again

    @property
    def transfers(self) -> int:
        """Everything that moved data or deleted something."""
        return self.down + self.up + self.deleted_here + self.deleted_server


def parse_sync_lines(stdout: str) -> dict[str, SyncLine]:
    """{label ('account/folder'): SyncLine} for every line of `--once` output.

    Every non-empty line must be a collection line (FAILED lines and other
    text raise AssertionError naming the line), and labels must be unique.
    """
    out: dict[str, SyncLine] = {}
    for raw in stdout.splitlines():
        if not raw.strip():
            continue
        m = _LINE_RE.match(raw)
        if not m:
            raise AssertionError(f"not a --once summary line: {raw!r}\nwhole stdout:\n{stdout}")
        d = m.groupdict()
        line = SyncLine(label=d["label"], down=int(d["down"]), up=int(d["up"]),
                        deleted_here=int(d["deleted_here"]),
                        deleted_server=int(d["deleted_server"]),
                        conflicts=int(d["conflicts"]), requests=int(d["requests"]),
                        seconds=float(d["seconds"]), skipped=int(d["skipped"] or 0),
                        refused=d["refused"], text=raw,
                        refused_items=int(d["refused_items"] or 0), waiting=int(d["waiting"] or 0))
        if line.label in out:
            raise AssertionError(f"two lines for {line.label!r}:\n{stdout}")
        out[line.label] = line
    return out


def describe(res: subprocess.CompletedProcess) -> str:
    return (f"exit status {res.returncode}\nstdout:\n{res.stdout}\n"
            f"stderr (last 4000 chars):\n{res.stderr[-4000:]}")


def run_once(env, config: os.PathLike | str, *extra: str, expect_status: int = 0,
             timeout: float = 120.0) -> dict[str, SyncLine]:
    """Runs `davsyncd --config CFG --once [extra]`, asserts the exit status and
    returns the parsed lines (the CompletedProcess is in `.result`)."""
    res = env.run("--config", config, "--once", *extra, timeout=timeout)
    assert res.returncode == expect_status, \
        f"davsyncd --once {' '.join(extra)}: expected exit status {expect_status}\n{describe(res)}"
    try:
        lines = parse_sync_lines(res.stdout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe(res)}") from None
    lines = _Lines(lines)
    lines.result = res
    return lines


class _Lines(dict):
    result: subprocess.CompletedProcess


# ---------- where the daemon keeps things ----------

def vdir_folder(env, account: str, folder: str) -> Path:
    """$XDG_DATA_HOME/davsyncd/<account>/<folder>/"""
    return env.data_dir / account / folder


def state_file(env, account: str, folder: str) -> Path:
    """$XDG_STATE_HOME/davsyncd/<account>/collections/<folder>.json"""
    return env.state_dir / account / "collections" / f"{folder}.json"


def load_state(env, account: str, folder: str) -> dict:
    return json.loads(state_file(env, account, folder).read_text())


def conflicts_dir(env, account: str, folder: str) -> Path:
    """$XDG_STATE_HOME/davsyncd/<account>/conflicts/<folder>/"""
    return env.state_dir / account / "conflicts" / folder


_CONFLICT_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)(?P<extra>.*?)-(?P<side>local|server)-(?P<file>.+)$")


@dataclasses.dataclass
class ConflictCopy:
    path: Path
    stamp: str
    side: str       # "local" or "server": the side whose version lost
    file: str       # the vdir file name it belonged to
    text: str

    @property
    def key(self) -> tuple[str, str]:
        """Identity of one copy: name and content (an overwritten copy is another copy)."""
        return (self.path.name, self.text)


def conflict_copies(env, account: str, folder: str) -> list[ConflictCopy]:
    """Every file in the conflicts folder, named <UTCSTAMP>-<local|server>-<file>
    (anything between the stamp and the side, such as a counter that keeps
    names unique, is tolerated); other names raise AssertionError. The
    `<name>.reason` files beside refused versions are not copies (see
    refusal_reason())."""
    d = conflicts_dir(env, account, folder)
    if not d.exists():
        return []
    out = []
    for p in sorted(d.iterdir()):
        if p.name.endswith(".reason"):
            continue
        m = _CONFLICT_RE.match(p.name)
        assert m, f"unexpected name in the conflicts folder: {p}"
        out.append(ConflictCopy(p, m["stamp"], m["side"], m["file"],
                                p.read_bytes().decode("utf-8", errors="replace")))
    return out


def refusal_reason(copy: ConflictCopy) -> Optional[str]:
    """The server's reason written beside a refused version, None for a conflict."""
    p = copy.path.with_name(copy.path.name + ".reason")
    return p.read_text() if p.exists() else None


def forget_discovery(env, account: str) -> None:
    """Removes the cached discovery so that the next --once discovers again."""
    try:
        (env.state_dir / account / "collections.json").unlink()
    except FileNotFoundError:
        pass


# ---------- item text ----------

def unfold(text: str) -> list[str]:
    """Logical content lines (RFC 5545 §3.1 unfolding), without line ends."""
    out: list[str] = []
    for physical in re.split(r"\r\n|\n|\r", text):
        if physical[:1] in (" ", "\t") and out:
            out[-1] += physical[1:]
        else:
            out.append(physical)
    return [line for line in out if line.strip()]


def _name_of(line: str) -> str:
    m = re.match(r"^([^:;]+)", line)
    name = m.group(1) if m else line
    return name.rsplit(".", 1)[-1].upper()   # vCard group prefix


def _value_of(line: str) -> str:
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == ":" and not quoted:
            return line[i + 1:]
    return ""


def main_properties(text: str) -> dict[str, list[str]]:
    """{NAME: [values]} of the first VEVENT/VTODO/VJOURNAL/VCARD's own lines."""
    props: dict[str, list[str]] = {}
    depth_in_main = None
    stack: list[str] = []
    for line in unfold(text):
        name, value = _name_of(line), _value_of(line).strip()
        if name == "BEGIN":
            stack.append(value.upper())
            if depth_in_main is None and value.upper() in MAIN_COMPONENTS:
                depth_in_main = len(stack)
            continue
        if name == "END":
            if stack:
                stack.pop()
            if depth_in_main is not None and len(stack) < depth_in_main:
                break
            continue
        if depth_in_main is not None and len(stack) == depth_in_main:
            props.setdefault(name, []).append(value)
    return props


def prop(text: str, name: str) -> Optional[str]:
    values = main_properties(text).get(name.upper())
    return values[0] if values else None


def uid_of(text: str) -> Optional[str]:
    return prop(text, "UID")


def title_of(text: str) -> Optional[str]:
    """SUMMARY of an event/todo, FN of a vCard."""
    return prop(text, "SUMMARY") if prop(text, "SUMMARY") is not None else prop(text, "FN")


def normalized(text: str) -> tuple[str, ...]:
    """Order-insensitive form of an item: its sorted logical lines."""
    return tuple(sorted(line.rstrip() for line in unfold(text)))


def replace_title(text: str, new_title: str) -> str:
    """The item with its SUMMARY (events/todos) or FN (vCards) replaced."""
    name = "SUMMARY" if prop(text, "SUMMARY") is not None else "FN"
    lines = unfold(text)
    done = False
    for i, line in enumerate(lines):
        if not done and _name_of(line) == name:
            lines[i] = f"{name}:{new_title}"
            done = True
    assert done, f"no {name} in {text!r}"
    return "\r\n".join(lines) + "\r\n"


def set_property(text: str, name: str, value: str) -> str:
    """The item with NAME:value set in its main component (replaced or added)."""
    lines = unfold(text)
    for i, line in enumerate(lines):
        if _name_of(line) == name.upper():
            lines[i] = f"{name.upper()}:{value}"
            return "\r\n".join(lines) + "\r\n"
    for i, line in enumerate(lines):
        if _name_of(line) == "END" and _value_of(line).strip().upper() in MAIN_COMPONENTS:
            lines.insert(i, f"{name.upper()}:{value}")
            return "\r\n".join(lines) + "\r\n"
    raise AssertionError(f"no main component in {text!r}")


def without_uid(text: str) -> str:
    return "\r\n".join(line for line in unfold(text) if _name_of(line) != "UID") + "\r\n"


# ---------- the local side ----------

@dataclasses.dataclass
class LocalItem:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name


def local_files(folder: Path) -> dict[str, str]:
    """{file name: text} of the item files (*.ics, *.vcf, not hidden) in a vdir folder."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in ITEM_SUFFIXES and not p.name.startswith("."):
            out[p.name] = p.read_bytes().decode("utf-8")
    return out


def local_by_uid(folder: Path, ignore: Iterable[str] = ()) -> dict[str, LocalItem]:
    """{UID: LocalItem}; a file without UID or two files with one UID raise.
    Files named in `ignore` are left out."""
    out: dict[str, LocalItem] = {}
    ignore = set(ignore)
    for name, text in local_files(folder).items():
        if name in ignore:
            continue
        uid = uid_of(text)
        assert uid, f"local file without UID: {folder / name}:\n{text}"
        assert uid not in out, (f"two local files with UID {uid!r}: "
                                f"{out[uid].path.name} and {name}")
        out[uid] = LocalItem(folder / name, text)
    return out


def write_local(path: Path, text: str) -> None:
    """Writes a vdir file the way an editor would (new content, new mtime).

    The daemon's cheap change check compares size and mtime; a write that
    lands within the file system's timestamp granularity of the daemon's own
    write and keeps the size would look unchanged. A human edit never does
    that, so the mtime is moved forward when it did not change.
    """
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_text(text, encoding="utf-8", newline="")
    if before is not None:
        after = path.stat().st_mtime_ns
        if after <= before:
            os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


# ---------- the server side ----------

@dataclasses.dataclass
class ServerItem:
    href: str       # decoded path
    etag: str
    text: str

    @property
    def filename(self) -> str:
        return self.href.rstrip("/").rsplit("/", 1)[-1]


def server_items(srv, collection: str) -> dict[str, ServerItem]:
    """{href: ServerItem} of every item, fetched with one calendar-query or
    addressbook-query REPORT (falls back to GET per item when the server
    leaves data out)."""
    kind = srv.collection_info(collection)["kind"]
    if kind == "addressbook":
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                f'<A:addressbook-query xmlns:D="DAV:" xmlns:A="{NS_CARDDAV}">'
                '<D:prop><D:getetag/><A:address-data/></D:prop><A:filter/>'
                '</A:addressbook-query>')
        data_tag = clark(NS_CARDDAV, "address-data")
    else:
        body = ('<?xml version="1.0" encoding="utf-8"?>'
                f'<C:calendar-query xmlns:D="DAV:" xmlns:C="{NS_CALDAV}">'
                '<D:prop><D:getetag/><C:calendar-data/></D:prop>'
                '<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>')
        data_tag = clark(NS_CALDAV, "calendar-data")
    r = srv._check(srv.request("REPORT", collection, body=body, depth=1), (207,), "REPORT query")
    root = ET.fromstring(r.content)
    base = _path_of(srv.url(collection)).rstrip("/")
    out: dict[str, ServerItem] = {}
    for resp in root.iter(clark(NS_DAV, "response")):
        href = _path_of((resp.findtext(clark(NS_DAV, "href")) or "").strip())
        if href.rstrip("/") == base:
            continue
        etag, data = "", None
        for ps in resp.findall(clark(NS_DAV, "propstat")):
            status = (ps.findtext(clark(NS_DAV, "status")) or "").split()
            if len(status) < 2 or status[1] != "200":
                continue
            etag = (ps.findtext(f"{clark(NS_DAV, 'prop')}/{clark(NS_DAV, 'getetag')}") or etag).strip()
            el = ps.find(f"{clark(NS_DAV, 'prop')}/{data_tag}")
            if el is not None and el.text:
                data = el.text
        if data is None:
            data, etag = srv.get_item(collection, href.rsplit("/", 1)[-1])
        out[href] = ServerItem(href, etag, data)
    # Make sure nothing was left out of the query (PROPFIND lists everything).
    listed = set(srv.list_items(collection))
    assert listed == set(out), (f"{srv.name}: REPORT and PROPFIND disagree on {collection}: "
                                f"only in PROPFIND {sorted(listed - set(out))}, "
                                f"only in REPORT {sorted(set(out) - listed)}")
    return out


def server_by_uid(srv, collection: str) -> dict[str, ServerItem]:
    """{UID: ServerItem}; two server items with one UID raise."""
    out: dict[str, ServerItem] = {}
    for href, item in server_items(srv, collection).items():
        uid = uid_of(item.text)
        assert uid, f"{srv.name}: server item without UID: {href}:\n{item.text}"
        assert uid not in out, f"{srv.name}: two server items with UID {uid!r}: {out[uid].href}, {href}"
        out[uid] = item
    return out


def server_put(srv, item: ServerItem, text: str) -> str:
    """Replaces a server item (If-Match its etag); returns the new etag."""
    collection = item.href.rsplit("/", 1)[0] + "/"
    return srv.put_item(collection, item.filename, text, etag=item.etag or None,
                        create=False)


def server_delete(srv, item: ServerItem) -> None:
    collection = item.href.rsplit("/", 1)[0] + "/"
    srv.delete_item(collection, item.filename)


# ---------- both sides ----------

def assert_same_items(local: dict[str, LocalItem], remote: dict[str, ServerItem],
                      context: str = "") -> None:
    """Same UIDs on both sides and the same content (normalized()) per UID."""
    prefix = f"{context}: " if context else ""
    only_local = sorted(set(local) - set(remote))
    only_remote = sorted(set(remote) - set(local))
    assert not only_local and not only_remote, \
        f"{prefix}UIDs differ: only local {only_local}, only on the server {only_remote}"
    differing = [u for u in sorted(local) if normalized(local[u].text) != normalized(remote[u].text)]
    assert not differing, prefix + "content differs for " + ", ".join(
        f"{u}:\n  local  {local[u].path.name}: {normalized(local[u].text)}\n"
        f"  server {remote[u].href}: {normalized(remote[u].text)}" for u in differing[:5])


# ---------- processes ----------

def poll(predicate: Callable[[], object], timeout: float, what: str,
         interval: float = 0.001) -> object:
    """Like daemon.wait_until, but with a constant short interval: for
    catching a short-lived state (a process in the middle of its work)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL to the process group of `proc` (started with start_new_session);
    returns the exit status."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait(timeout=30)


def files_matching(root: Path, suffixes: Iterable[str] = ITEM_SUFFIXES) -> list[Path]:
    """Every file under `root` (recursively) whose name ends in one of `suffixes`."""
    suffixes = tuple(suffixes)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def atomic_write(path: Path, text: str) -> None:
    """Writes like an editor does: a hidden temporary file next to it, then rename."""
    tmp = path.parent / f".{path.name}.swp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
