"""Real CalDAV/CardDAV servers for integration tests: Radicale and Xandikos.

Both classes are context managers:

    with Radicale(workdir) as srv:          # or Xandikos(workdir)
        cal = srv.make_calendar("work", "Work", "#1E90FF")
        etag = srv.put_item(cal, "a.ics", body)

Each server runs as the Debian package's program in its own process group on a
free 127.0.0.1 port, with its files, its storage and its log (stdout+stderr)
under `workdir`. Readiness is a condition, never a sleep: the process is alive,
the listening socket on the chosen port belongs to *this* process (so a
different server that happened to grab the port is never mistaken for ours),
and an HTTP OPTIONS answers. When the port was taken in the meantime the start
is retried on a fresh port.

Collections are named by their path on the server ("/alice/work/"); every
helper that takes a collection also accepts an absolute URL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Optional

import requests

from davtest.procs import stop_process_group

PYTHON = "/usr/bin/python3"

NS_DAV = "DAV:"
NS_CALDAV = "urn:ietf:params:xml:ns:caldav"
NS_CARDDAV = "urn:ietf:params:xml:ns:carddav"
NS_CS = "http://calendarserver.org/ns/"
NS_ICAL = "http://apple.com/ns/ical/"

_PREFIXES = {NS_DAV: "D", NS_CALDAV: "C", NS_CARDDAV: "A", NS_CS: "CS", NS_ICAL: "I"}
_XMLNS = " ".join(f'xmlns:{p}="{ns}"' for ns, p in _PREFIXES.items())

XML_CONTENT_TYPE = "application/xml; charset=utf-8"

START_TIMEOUT = 30.0      # seconds until a server must answer
STOP_TIMEOUT = 10.0       # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 30.0       # per request made by the helpers
START_ATTEMPTS = 3        # fresh ports tried when the chosen one was taken


class ServerError(RuntimeError):
    pass


def clark(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def _qname(clark_name: str) -> str:
    """'{DAV:}displayname' -> 'D:displayname' using the module's prefixes."""
    if not clark_name.startswith("{"):
        return "D:" + clark_name
    ns, name = clark_name[1:].split("}", 1)
    return f"{_PREFIXES[ns]}:{name}"


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    """Inodes of sockets in LISTEN state on 127.0.0.1/0.0.0.0 (or v6) :port."""
    inodes = set()
    hexport = "%04X" % port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and local.rsplit(":", 1)[1] == hexport:
                        inodes.add(inode)
        except FileNotFoundError:
            continue
    return inodes


def _process_listens_on(pid: int, port: int) -> bool:
    """True when process `pid` owns a listening socket on `port`."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def port_is_listening(port: int) -> bool:
    return bool(_listening_inodes(port))


class Multistatus(dict):
    """Parsed 207 response: {href (unquoted path): {clark name: Element}}.

    Only properties in a 200 propstat are included; `.missing[href]` holds the
    names the server reported as 404 (or any non-200 status).
    """

    def __init__(self, text: str):
        super().__init__()
        self.missing: dict[str, set[str]] = {}
        root = ET.fromstring(text)
        for resp in root.iter(clark(NS_DAV, "response")):
            href_el = resp.find(clark(NS_DAV, "href"))
            if href_el is None or href_el.text is None:
                continue
            href = _path_of(href_el.text.strip())
            props: dict[str, ET.Element] = {}
            missing: set[str] = set()
            for ps in resp.findall(clark(NS_DAV, "propstat")):
                status = (ps.findtext(clark(NS_DAV, "status")) or "").split()
                ok = len(status) >= 2 and status[1] == "200"
                prop = ps.find(clark(NS_DAV, "prop"))
                if prop is None:
                    continue
                for p in prop:
                    (props.__setitem__(p.tag, p) if ok else missing.add(p.tag))
            self[href] = props
            self.missing[href] = missing


def _path_of(href: str) -> str:
    """Path part of an href or URL, percent-decoded.

    Xandikos 0.2.8 answers PROPPATCH with a percent-quoted absolute URL
    ('http%3A//127.0.0.1%3A8080/alice/...'); that is handled too.
    """
    href = urllib.parse.unquote(href)
    return urllib.parse.urlsplit(href).path or "/"


class DavServer:
    """Common part: process handling, HTTP helpers, collection helpers.

    Attributes after start():
      port, base_url ('http://127.0.0.1:PORT/'), user, password,
      principal_url, home_url, calendar_home_url, addressbook_home_url,
      workdir, log_path, pid.
    """

    name = "dav"
    user = "alice"
    # Capabilities of the server as far as the tests are concerned.
    requires_auth = True
    restricts_components = True     # honours supported-calendar-component-set on MKCALENDAR
    supports_description = True     # calendar-/addressbook-description settable

    def __init__(self, workdir: Optional[os.PathLike | str] = None, *, user: str = "alice",
                 password: Optional[str] = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"davtest-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.password = password or "secret-" + secrets.token_hex(8)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.session = requests.Session()
        self.session.auth = (self.user, self.password)
        self.session.headers["User-Agent"] = "davtest"

    # ---------- process handling ----------

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _prepare(self, port: int) -> None:
        """Write config files etc. before a start attempt."""

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        """Absolute URL for a server path (or an absolute URL, returned as is)."""
        if path.startswith("http://") or path.startswith("https://"):
            return path
        return urllib.parse.urljoin(self.base_url, path)

    def start(self) -> "DavServer":
        if self.proc is not None:
            raise ServerError(f"{self.name} already started")
        errors = []
        for attempt in range(START_ATTEMPTS):
            port = free_port()
            self._prepare(port)
            log = open(self.log_path, "ab")
            log.write(f"=== davtest: starting {self.name} on port {port} (attempt {attempt + 1})\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._command(port), cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=self._env())
            log.close()
            self.proc, self.port = proc, port
            why = self._wait_ready(proc, port)
            if why is None:
                return self
            errors.append(f"port {port}: {why}")
            self._kill(proc)
            self.proc = None
        raise ServerError(f"{self.name} did not start ({'; '.join(errors)}); "
                          f"log {self.log_path}:\n{self.log_tail()}")

    def _env(self) -> dict:
        env = dict(os.environ)
        # Nothing from the user's setup (e.g. RADICALE_CONFIG) leaks in.
        for k in list(env):
            if k.startswith("RADICALE_") or k.startswith("XANDIKOS_"):
                del env[k]
        env["HOME"] = str(self.workdir)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def _wait_ready(self, proc: subprocess.Popen, port: int) -> Optional[str]:
        """None when ready, else a reason (process died / timed out)."""
        deadline = time.monotonic() + START_TIMEOUT
        probe = requests.Session()
        delay = 0.02
        while True:
            rc = proc.poll()
            if rc is not None:
                return f"process exited with status {rc}"
            if _process_listens_on(proc.pid, port):
                try:
                    r = probe.options(self.base_url, timeout=5)
                    if r.status_code < 500:
                        return None
                except requests.RequestException:
                    pass
            if time.monotonic() > deadline:
                return f"not answering after {START_TIMEOUT:.0f} s"
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _kill(self, proc: subprocess.Popen) -> None:
        stop_process_group(proc, STOP_TIMEOUT)
        # The group may hold children that outlived the leader.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc is not None:
            self._kill(self.proc)
        self.session.close()

    def cleanup(self) -> None:
        """stop() and remove the work folder when this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DavServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ---------- HTTP ----------

    def request(self, method: str, path: str, *, body: Optional[str | bytes] = None,
                headers: Optional[dict] = None, depth: Optional[str | int] = None,
                auth: bool = True, content_type: Optional[str] = None) -> requests.Response:
        h = dict(headers or {})
        if depth is not None:
            h["Depth"] = str(depth)
        if body is not None and "Content-Type" not in h:
            # Xandikos rejects XML bodies without an XML Content-Type (415).
            h["Content-Type"] = content_type or XML_CONTENT_TYPE
        if isinstance(body, str):
            body = body.encode("utf-8")
        if not auth:
            return requests.request(method, self.url(path), data=body, headers=h,
                                    timeout=HTTP_TIMEOUT)
        return self.session.request(method, self.url(path), data=body, headers=h,
                                    timeout=HTTP_TIMEOUT)

    def _check(self, r: requests.Response, ok: Iterable[int], what: str) -> requests.Response:
        if r.status_code not in ok:
            raise ServerError(f"{self.name}: {what}: {r.request.method} {r.url} -> "
                              f"{r.status_code} {r.reason}\n{r.text[:2000]}")
        return r

    def propfind(self, path: str, props: Iterable[str] = (), depth: int | str = 0) -> Multistatus:
        """PROPFIND; `props` are Clark names ('{DAV:}displayname'); empty = allprop."""
        props = list(props)
        if props:
            inner = "<D:prop>" + "".join(f"<{_qname(p)}/>" for p in props) + "</D:prop>"
        else:
            inner = "<D:allprop/>"
        body = f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_XMLNS}>{inner}</D:propfind>'
        r = self._check(self.request("PROPFIND", path, body=body, depth=depth), (207,),
                        "PROPFIND")
        return Multistatus(r.text)

    # ---------- collections ----------

    COLLECTION_PROPS = [
        clark(NS_DAV, "resourcetype"), clark(NS_DAV, "displayname"),
        clark(NS_ICAL, "calendar-color"), clark(NS_CALDAV, "supported-calendar-component-set"),
        clark(NS_CALDAV, "calendar-description"), clark(NS_CARDDAV, "addressbook-description"),
        clark(NS_DAV, "sync-token"), clark(NS_CS, "getctag"),
    ]

    @staticmethod
    def _collection_info(props: dict) -> dict:
        rt = props.get(clark(NS_DAV, "resourcetype"))
        types = {c.tag for c in rt} if rt is not None else set()
        comps_el = props.get(clark(NS_CALDAV, "supported-calendar-component-set"))
        comps = [c.get("name") for c in comps_el] if comps_el is not None else []

        def text(name):
            el = props.get(name)
            return (el.text or "").strip() if el is not None else None

        if clark(NS_CALDAV, "calendar") in types:
            kind = "calendar"
        elif clark(NS_CARDDAV, "addressbook") in types:
            kind = "addressbook"
            comps = []   # Radicale 3.1.8 reports calendar components on address books
        else:
            kind = "collection" if clark(NS_DAV, "collection") in types else "item"
        description = (text(clark(NS_CALDAV, "calendar-description"))
                       or text(clark(NS_CARDDAV, "addressbook-description")) or "")
        return {
            "kind": kind,
            "resourcetypes": types,
            "displayname": text(clark(NS_DAV, "displayname")),
            "color": text(clark(NS_ICAL, "calendar-color")),
            "components": comps,
            "description": description,
            "sync_token": text(clark(NS_DAV, "sync-token")),
            "ctag": text(clark(NS_CS, "getctag")),
        }

    def collection_info(self, collection: str) -> dict:
        """kind ('calendar'/'addressbook'/'collection'), displayname, color,
        components, description, sync_token, ctag of one collection."""
        ms = self.propfind(collection, self.COLLECTION_PROPS, depth=0)
        (props,) = ms.values()
        return self._collection_info(props)

    def list_collections(self, home: Optional[str] = None) -> dict[str, dict]:
        """Child collections of `home` (default: calendar home and address-book
        home): {path: collection_info}. Calendars and address books only."""
        homes = [home] if home else sorted({self.calendar_home_url, self.addressbook_home_url})
        out = {}
        for h in homes:
            base = _path_of(self.url(h))
            for href, props in self.propfind(h, self.COLLECTION_PROPS, depth=1).items():
                if href.rstrip("/") == base.rstrip("/"):
                    continue
                info = self._collection_info(props)
                if info["kind"] in ("calendar", "addressbook"):
                    out[href] = info
        return out

    def _mkcalendar_body(self, displayname, color, components, description) -> str:
        props = []
        if displayname is not None:
            props.append(f"<D:displayname>{_esc(displayname)}</D:displayname>")
        if color is not None:
            props.append(f"<I:calendar-color>{_esc(color)}</I:calendar-color>")
        if description is not None:
            props.append(f"<C:calendar-description>{_esc(description)}</C:calendar-description>")
        if components:
            comps = "".join(f'<C:comp name="{c}"/>' for c in components)
            props.append(f"<C:supported-calendar-component-set>{comps}"
                         "</C:supported-calendar-component-set>")
        return (f'<?xml version="1.0" encoding="utf-8"?><C:mkcalendar {_XMLNS}>'
                f'<D:set><D:prop>{"".join(props)}</D:prop></D:set></C:mkcalendar>')

    def make_calendar(self, name: str, displayname: Optional[str] = None,
                      color: Optional[str] = None, components: Iterable[str] = ("VEVENT",),
                      description: Optional[str] = None) -> str:
        """MKCALENDAR under the calendar home; returns the collection path."""
        path = _path_of(self.calendar_home_url) + name + "/"
        body = self._mkcalendar_body(displayname, color, list(components), description)
        self._check(self.request("MKCALENDAR", path, body=body), (201,), "MKCALENDAR")
        return path

    def make_addressbook(self, name: str, displayname: Optional[str] = None,
                         description: Optional[str] = None) -> str:
        """Extended MKCOL (RFC 5689) under the address-book home; returns the path."""
        path = _path_of(self.addressbook_home_url) + name + "/"
        props = ["<D:resourcetype><D:collection/><A:addressbook/></D:resourcetype>"]
        if displayname is not None:
            props.append(f"<D:displayname>{_esc(displayname)}</D:displayname>")
        if description is not None:
            props.append(f"<A:addressbook-description>{_esc(description)}</A:addressbook-description>")
        body = (f'<?xml version="1.0" encoding="utf-8"?><D:mkcol {_XMLNS}>'
                f'<D:set><D:prop>{"".join(props)}</D:prop></D:set></D:mkcol>')
        self._check(self.request("MKCOL", path, body=body), (201,), "MKCOL")
        return path

    def proppatch(self, collection: str, props: dict[str, str]) -> Multistatus:
        """Sets text properties {clark name: value}; raises unless all are 200."""
        inner = "".join(f"<{_qname(k)}>{_esc(v)}</{_qname(k)}>" for k, v in props.items())
        body = (f'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate {_XMLNS}>'
                f"<D:set><D:prop>{inner}</D:prop></D:set></D:propertyupdate>")
        r = self._check(self.request("PROPPATCH", collection, body=body), (207,), "PROPPATCH")
        ms = Multistatus(r.text)
        bad = set().union(*ms.missing.values()) if ms.missing else set()
        if bad:
            raise ServerError(f"{self.name}: PROPPATCH {collection}: not set: {sorted(bad)}\n{r.text}")
        return ms

    def delete_collection(self, collection: str) -> None:
        self._check(self.request("DELETE", collection), (200, 204), "DELETE collection")

    # ---------- items ----------

    def item_path(self, collection: str, filename: str) -> str:
        base = _path_of(self.url(collection))
        if not base.endswith("/"):
            base += "/"
        return base + urllib.parse.quote(filename)

    @staticmethod
    def _content_type(filename: str) -> str:
        return "text/vcard; charset=utf-8" if filename.endswith(".vcf") \
            else "text/calendar; charset=utf-8"

    def put_item(self, collection: str, filename: str, body: str | bytes, *,
                 etag: Optional[str] = None, create: Optional[bool] = None) -> str:
        """PUT an item; returns its ETag (re-read with GET when the reply has none).

        etag given: If-Match (update). create=True (default when no etag):
        If-None-Match: * (fails if it exists). create=False: unconditional.
        """
        headers = {"Content-Type": self._content_type(filename)}
        if etag is not None:
            headers["If-Match"] = etag
        elif create is None or create:
            headers["If-None-Match"] = "*"
        path = self.item_path(collection, filename)
        r = self._check(self.request("PUT", path, body=body, headers=headers),
                        (200, 201, 204), "PUT")
        got = r.headers.get("ETag")
        if not got:
            got = self.get_item(collection, filename)[1]
        return got

    def get_item(self, collection: str, filename: str) -> tuple[str, str]:
        """(body, etag) of an item."""
        r = self._check(self.request("GET", self.item_path(collection, filename)), (200,), "GET")
        return r.text, r.headers.get("ETag", "")

    def delete_item(self, collection: str, filename: str, etag: Optional[str] = None) -> None:
        headers = {"If-Match": etag} if etag else {}
        self._check(self.request("DELETE", self.item_path(collection, filename), headers=headers),
                    (200, 204), "DELETE")

    def list_items(self, collection: str) -> dict[str, str]:
        """{item path: etag} of the members of a collection (PROPFIND Depth 1)."""
        base = _path_of(self.url(collection))
        ms = self.propfind(collection, [clark(NS_DAV, "getetag"), clark(NS_DAV, "resourcetype")],
                           depth=1)
        out = {}
        for href, props in ms.items():
            if href.rstrip("/") == base.rstrip("/"):
                continue
            rt = props.get(clark(NS_DAV, "resourcetype"))
            if rt is not None and rt.find(clark(NS_DAV, "collection")) is not None:
                continue
            et = props.get(clark(NS_DAV, "getetag"))
            out[href] = (et.text or "").strip() if et is not None else ""
        return out

    def list_hrefs(self, collection: str) -> list[str]:
        """Sorted paths of the items in a collection."""
        return sorted(self.list_items(collection))

    def sync_token(self, collection: str) -> Optional[str]:
        return self.collection_info(collection)["sync_token"]


def _esc(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


# Radicale's owner_only rights written as a `from_file` rights file, to build
# on: the root listable, the user's principal collection writable, and the
# user's calendars and address books readable and writable. Sections are
# tried in order; the first whose `user` and `collection` match decides.
OWNER_ONLY_RIGHTS = """\
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[collections]
user: .+
collection: {user}/[^/]+
permissions: rw
"""


def read_only_rights(*collections: str) -> str:
    """A rights file granting read only ("rR") on `collections` (names
    under the user's principal, e.g. "holidays"), owner_only elsewhere."""
    sections = "".join(f"[read-only-{i}]\nuser: .+\ncollection: {{user}}/{name}\npermissions: rR\n\n"
                       for i, name in enumerate(collections))
    return sections + OWNER_ONLY_RIGHTS


class Radicale(DavServer):
    """Radicale 3.1.8 (Debian 12): htpasswd auth (plain), rights owner_only,
    filesystem storage under workdir/collections.

    Principal = calendar home = address-book home = /alice/ (home_url).
    The principal collection is created by Radicale on the first
    authenticated request. Failed logins are not delayed (auth delay 0).

    `rights`: the text of a `from_file` rights file instead of owner_only
    (see OWNER_ONLY_RIGHTS, read_only_rights()). Radicale 3.1.8 reads that
    file on every request, so set_rights() changes it on a running server:
    seed with write access, then take it away.
    """

    name = "radicale"

    def __init__(self, workdir: Optional[os.PathLike | str] = None, *, rights: Optional[str] = None,
                 log_level: str = "warning", **kwargs):
        super().__init__(workdir, **kwargs)
        self.rights_text = rights
        self.log_level = log_level
        self.rights_path = self.workdir / "rights"

    def set_rights(self, text: str) -> None:
        if self.rights_text is None:
            raise ServerError("radicale: set_rights() needs a server started with rights=")
        self.rights_text = text
        tmp = self.rights_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.rights_path)   # never a half-written file for a request to read

    def _rights_config(self) -> str:
        if self.rights_text is None:
            return "type = owner_only"
        self.rights_path.write_text(self.rights_text)
        return f"type = from_file\nfile = {self.rights_path}"

    def _prepare(self, port: int) -> None:
        self.storage_dir = self.workdir / "collections"
        htpasswd = self.workdir / "users"
        htpasswd.write_text(f"{self.user}:{self.password}\n")
        os.chmod(htpasswd, 0o600)
        self.config_path = self.workdir / "radicale.conf"
        # An explicit config file replaces /etc/radicale/config (which turns
        # on SSL and remote_user auth on Debian) and ~/.config/radicale/config.
        self.config_path.write_text(f"""\
[server]
hosts = 127.0.0.1:{port}
[encoding]
request = utf-8
stock = utf-8
[auth]
type = htpasswd
htpasswd_filename = {htpasswd}
htpasswd_encryption = plain
delay = 0
[rights]
{self._rights_config()}
[storage]
type = multifilesystem
filesystem_folder = {self.storage_dir}
[web]
type = none
[logging]
level = {self.log_level}
mask_passwords = True
""")

    def _command(self, port: int) -> list[str]:
        return [PYTHON, "-m", "radicale", "--config", str(self.config_path)]

    def requests_logged(self, method: str, path: str) -> int:
        """How many `method` requests for `path` ("/alice/work/") the log
        shows; needs log_level "info" (raises otherwise)."""
        if self.log_level not in ("info", "debug"):
            raise ServerError("radicale: requests_logged() needs log_level='info'")
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(f"] {method} request for '{path}'")

    @property
    def principal_url(self) -> str:
        return self.url(f"/{self.user}/")

    home_url = principal_url
    calendar_home_url = principal_url
    addressbook_home_url = principal_url


class Xandikos(DavServer):
    """Xandikos 0.2.8 (Debian 12), started with --defaults.

    No authentication (credentials are sent and ignored). Layout:
      principal            /alice/                 (home_url)
      calendar home        /alice/calendars/
      address-book home    /alice/contacts/
      default collections  /alice/calendars/calendar/  (displayname "calendar")
                           /alice/contacts/addressbook/ (displayname "addressbook")
      plus a schedule inbox /alice/inbox/
    Quirks (0.2.8): every calendar reports VEVENT, VTODO, VJOURNAL, VFREEBUSY
    whatever MKCALENDAR asked for; calendar-color is not applied by MKCALENDAR
    (404 in the reply) so make_calendar() sets it with PROPPATCH afterwards;
    descriptions cannot be set at all; XML bodies need an XML Content-Type.
    """

    name = "xandikos"
    requires_auth = False
    restricts_components = False
    supports_description = False
    default_calendar = "/alice/calendars/calendar/"
    default_addressbook = "/alice/contacts/addressbook/"

    def _prepare(self, port: int) -> None:
        self.data_dir = self.workdir / "data"

    def _command(self, port: int) -> list[str]:
        return [PYTHON, "/usr/bin/xandikos", "--defaults", "-d", str(self.data_dir),
                "-l", "127.0.0.1", "-p", str(port),
                "--current-user-principal", f"/{self.user}/"]

    @property
    def principal_url(self) -> str:
        return self.url(f"/{self.user}/")

    home_url = principal_url

    @property
    def calendar_home_url(self) -> str:
        return self.url(f"/{self.user}/calendars/")

    @property
    def addressbook_home_url(self) -> str:
        return self.url(f"/{self.user}/contacts/")

    @property
    def default_collections(self) -> list[str]:
        return [f"/{self.user}/calendars/calendar/", f"/{self.user}/contacts/addressbook/"]

    def make_calendar(self, name, displayname=None, color=None, components=("VEVENT",),
                      description=None) -> str:
        path = _path_of(self.calendar_home_url) + name + "/"
        body = self._mkcalendar_body(displayname, None, [], None)
        self._check(self.request("MKCALENDAR", path, body=body), (201,), "MKCALENDAR")
        if color is not None:
            self.proppatch(path, {clark(NS_ICAL, "calendar-color"): color})
        return path

    def make_addressbook(self, name, displayname=None, description=None) -> str:
        return super().make_addressbook(name, displayname, None)


SERVERS = {"radicale": Radicale, "xandikos": Xandikos}
