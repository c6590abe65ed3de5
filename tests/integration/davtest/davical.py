"""DAViCal 1.1.12 (Debian 12) as a third real server for the integration tests.

    with DAViCal(workdir) as srv:               # same interface as Radicale/Xandikos
        cal = srv.make_calendar("work", "Work", "#1E90FF")
        etag = srv.put_item(cal, "a.ics", body)

DAViCal is PHP on PostgreSQL. Each server gets:

- its own PostgreSQL 15 cluster (the Debian package's binaries; the system's
  cluster, if any, is never used): a copy of a template data folder in a
  private folder under /tmp, with its unix socket in that folder and no TCP
  listener at all, fsync off. The template (initdb, then DAViCal's own
  `dba/create-database.sh`) is built once per process, i.e. once per pytest
  session, in 3-5 s, and removed at exit. Per server: copy 0.3 s, PostgreSQL
  start 0.1 s, user 0.1 s, PHP 0.15 s: about 0.7-0.9 s per start and 0.2 s
  per stop on the project's 2-core machine. PostgreSQL refuses to run as
  root, so as root the cluster belongs to and runs as `postgres` (the
  Debian package's user; `nobody` when it does not exist); as another user,
  as that user.
- PHP's built-in web server (`php -q -S 127.0.0.1:PORT`) with a router script
  in `workdir` that does what Debian's Apache site
  (/etc/apache2/sites-available/davical.conf) does: DAViCal lives at
  `/davical/caldav.php/`, `/.well-known/*` is handed to it, and (the
  optional "DAViCal in the root" rewrite of that file) so is every other
  path, so that `/` answers OPTIONS and PROPFIND like the other servers.
  PHP's server runs one request at a time and closes the connection after
  each (no keep-alive). The log gets one `davtest: METHOD URI -> status`
  line per request, PHP's errors, and with debug=True (or
  $DAVTEST_DAVICAL_DEBUG=1) every request and response in full.
- its configuration in `workdir/davical-conf.php`. DAViCal reads
  `/etc/davical/<SERVER_NAME>-conf.php`, else `/etc/davical/config.php`;
  the router sets SERVER_NAME to `../..<workdir>/davical` so that DAViCal
  includes our file (through `/etc/davical/../..`), and that file sets
  SERVER_NAME and `$c->domain_name` back to 127.0.0.1. Nothing is written
  outside the temporary folders, and the system's DAViCal configuration
  is never read.
- the user `alice` (with DavServer's random password), created with
  DAViCal's own code (Principal::Create, as its admin pages do), without
  home collections by default so that the account holds only what a test
  creates. `home_collections=True` adds what DAViCal gives a principal made
  in its admin pages: the calendar `calendar/`, the address book
  `addresses/` and the scheduling inbox and outbox `.in/` and `.out/`.
- `sql(query)`: psql in DAViCal's database, for states HTTP cannot make.

Layout (the principal is also both homes):
  principal = calendar home = address-book home = /davical/caldav.php/alice/

Quirks of DAViCal 1.1.12 that matter to the tests:
- vCards: a card without REV gets one (the PUT time) and any other
  normalisation DAViCal's vCard class does; the PUT's answer carries an
  ETag only when what was stored is byte for byte what was sent. So a new
  card without REV is answered 201 without ETag, and the server's copy
  differs from the client's (a client has to download it once). Calendar
  objects are stored as sent, and their PUT answers carry the ETag.
- Sync tokens are `data:,N`, N from one sequence shared by all collections;
  a PROPFIND of DAV:sync-token after a change makes a new token. An
  unknown or malformed token is not refused with DAV:valid-sync-token
  (RFC 6578 §3.2): DAViCal answers as if no token had been sent (every
  item, no 404 for what was deleted meanwhile, a new token), which a client
  cannot tell from a delta.
- When a new token is made, the tokens (and their change records) older
  than the newest token that is more than 7 days old are deleted: a client
  whose token is older than that gets the answer above.
- DAV:limit in sync-collection is ignored; DAViCal never answers 507.
- A failed If-Match or If-None-Match gets 412 with a body naming a DAV:
  "precondition" of its own: <error xmlns="DAV:"><if-match/>Existing
  resource ETag of "..." does not match "..."</error> (or <if-none-match/>).
  That is the ordinary changed-etag case, not a refusal of the content.
- The scheduling inbox/outbox (.in/, .out/) are reported as plain
  calendars (resourcetype calendar, no schedule-inbox/-outbox), so a
  client that lists calendars by resourcetype syncs them too.
- OPTIONS and PROPFIND without credentials get 401 (HTTP Basic, realm
  "davtest DAViCal"). MKCALENDAR keeps supported-calendar-component-set,
  calendar-color and calendar-description; extended MKCOL makes address
  books with displayname and addressbook-description.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from davtest.servers import START_TIMEOUT, STOP_TIMEOUT, DavServer, ServerError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PHP = "/usr/bin/php"
DAVICAL_ROOT = Path("/usr/share/davical")
HTDOCS = DAVICAL_ROOT / "htdocs"
CREATE_DATABASE = DAVICAL_ROOT / "dba" / "create-database.sh"
SCRIPT_NAME = "/davical/caldav.php"     # where Debian's Apache site serves it
DB_NAME = "davical"
DB_APP_USER = "davical_app"
TEMPLATE_TIMEOUT = 120.0    # initdb + create-database.sh (about 9 s here)

# PostgreSQL for tests: no durability, small footprint, no TCP.
PG_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "20",
    "shared_buffers": "16MB",
    "max_wal_size": "64MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


def missing_programs() -> list[str]:
    """Files DAViCal needs that are not installed (empty when all are there)."""
    need = [PG_BIN / "initdb", PG_BIN / "postgres", PG_BIN / "pg_isready", Path(PHP),
            HTDOCS / "caldav.php", CREATE_DATABASE, Path("/usr/bin/psql"),
            Path("/etc/davical")]
    return [str(p) for p in need if not p.exists()]


def _pg_user() -> Optional[pwd.struct_passwd]:
    """The account PostgreSQL runs as: None = the current one (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerError("running as root, and neither 'postgres' nor 'nobody' exists "
                      "to run PostgreSQL as")


def _private_dir(prefix: str) -> Path:
    """A new 0700 folder under the system's temp folder, owned by the
    PostgreSQL user (short path: the unix socket lives in it)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    user = _pg_user()
    if user is not None:
        os.chown(d, user.pw_uid, user.pw_gid)
    return d


def _pg_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C.UTF-8"
    env["PGOPTIONS"] = "--client-min-messages=warning"
    return env


def _run(cmd: list[str], *, log, as_pg: bool, env: Optional[dict] = None,
         timeout: float = TEMPLATE_TIMEOUT, cwd: Optional[Path] = None) -> None:
    user = _pg_user() if as_pg else None
    log.write(f"=== davtest: {' '.join(cmd)}\n".encode())
    log.flush()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         env=env or _pg_env(), timeout=timeout, cwd=cwd or "/",
                         user=user.pw_uid if user else None,
                         group=user.pw_gid if user else None,
                         extra_groups=[] if user else None)
    if res.returncode != 0:
        raise ServerError(f"davical: {' '.join(cmd)} exited with status {res.returncode}; "
                          f"see {log.name}")


class PgCluster:
    """A PostgreSQL cluster in `folder` (data in folder/data, socket in folder)."""

    def __init__(self, folder: Path, log_path: Path):
        self.folder = folder
        self.data = folder / "data"
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    @property
    def socket_dir(self) -> str:
        return str(self.folder)

    def initdb(self) -> None:
        with open(self.log_path, "ab") as log:
            _run([str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust",
                  "--username=postgres", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                 log=log, as_pg=True)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        user = _pg_user()
        cmd = [str(PG_BIN / "postgres"), "-D", str(self.data), "-k", self.socket_dir]
        for k, v in PG_SETTINGS.items():
            cmd += ["-c", f"{k}={v}"]
        with open(self.log_path, "ab") as log:
            log.write(f"=== davtest: starting PostgreSQL in {self.data}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_pg_env(), cwd=str(self.folder),
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise ServerError(f"davical: PostgreSQL exited with status {rc}; "
                                  f"log {self.log_path}:\n{_tail(self.log_path)}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-q", "-h", self.socket_dir, "-U", "postgres",
                 "-d", "postgres"], env=_pg_env(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
            if ready:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"davical: PostgreSQL not ready after {timeout:.0f} s; "
                                  f"log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def env(self) -> dict:
        env = _pg_env()
        env.update(PGHOST=self.socket_dir, PGUSER="postgres")
        return env

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), SIGKILL to the group after
        STOP_TIMEOUT."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class _Template:
    """One cluster with DAViCal's empty database, built once per process and
    copied for every server. Removed when the process exits."""

    _lock = threading.Lock()
    _folder: Optional[Path] = None
    _error: Optional[str] = None
    seconds: float = 0.0

    @classmethod
    def data(cls) -> Path:
        with cls._lock:
            if cls._error:
                raise ServerError(cls._error)
            if cls._folder is None:
                try:
                    cls._folder = cls._build()
                except Exception as e:   # noqa: BLE001 - remembered for the next servers
                    cls._error = f"building the DAViCal template cluster failed: {e}"
                    raise
            return cls._folder / "data"

    @classmethod
    def _build(cls) -> Path:
        t0 = time.monotonic()
        folder = _private_dir("davtest-davical-template-")
        atexit.register(shutil.rmtree, folder, True)
        log_path = folder.parent / (folder.name + ".log")
        atexit.register(lambda: log_path.unlink(missing_ok=True))
        cluster = PgCluster(folder, log_path)
        try:
            cluster.initdb()
            cluster.start(timeout=TEMPLATE_TIMEOUT)
            with open(log_path, "ab") as log:
                # DAViCal's own script: roles davical_dba and davical_app, the
                # schema, the base data and an admin with a random password.
                _run(["/bin/sh", str(CREATE_DATABASE), DB_NAME, secrets.token_hex(12)],
                     log=log, as_pg=False, env=cluster.env(), cwd=folder)
        except ServerError as e:
            raise ServerError(f"{e}\n{_tail(log_path)}") from None
        finally:
            cluster.stop()
        cls.seconds = time.monotonic() - t0
        return folder


_ROUTER = r"""<?php
// davtest: DAViCal under PHP's built-in server, laid out like Debian's
// Apache site (/etc/apache2/sites-available/davical.conf).
$script = '%(script)s';
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($path === null || $path === false || $path === '') $path = '/';
if ($path === $script || strncmp($path, $script . '/', strlen($script) + 1) === 0) {
  $info = substr($path, strlen($script));
} else {
  // The rewrites: /.well-known/* and (optionally there) everything else.
  $info = $path;
}
if ($info === '' || $info === false) $info = '/';
$_SERVER['SCRIPT_NAME'] = $script;
$_SERVER['PHP_SELF'] = $script . $info;
$_SERVER['PATH_INFO'] = rawurldecode($info);
$_SERVER['SCRIPT_FILENAME'] = '%(htdocs)s/caldav.php';
$_SERVER['DOCUMENT_ROOT'] = '%(htdocs)s';
// DAViCal includes /etc/davical/<SERVER_NAME>-conf.php: point it at ours.
$_SERVER['SERVER_NAME'] = '../..%(conf_stem)s';
// One access line per request (php -q logs none).
$davtest_request = $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['REQUEST_URI'];
register_shutdown_function(function () use ($davtest_request) {
  error_log('davtest: ' . $davtest_request . ' -> ' . http_response_code());
});
chdir('%(htdocs)s');
require '%(htdocs)s/caldav.php';
"""

_CONF = r"""<?php
// davtest: this server's DAViCal configuration (see davtest/davical.py).
$_SERVER['SERVER_NAME'] = '127.0.0.1';
$c->domain_name = '127.0.0.1';
$c->pg_connect = array(array('dsn' => 'pgsql:dbname=%(db)s;host=%(socket)s', 'dbuser' => '%(dbuser)s'));
$c->system_name = 'davtest DAViCal';
$c->admin_email = 'admin@example.invalid';
%(debug)s"""

_MKUSER = r"""<?php
// davtest: creates a user the way DAViCal's admin pages do.
// php mkuser.php CONF_STEM USERNAME FULLNAME HOME(0|1); password on stdin.
$_SERVER['SERVER_NAME'] = '../..' . $argv[1];
$_SERVER['SERVER_PORT'] = 80;
$_SERVER['SCRIPT_NAME'] = '%(script)s';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['REQUEST_URI'] = '%(script)s/';
$_SERVER['DOCUMENT_ROOT'] = '%(htdocs)s';
chdir('%(htdocs)s');
require './always.php';
require_once 'Principal.php';
require_once 'auth-functions.php';
$password = rtrim(stream_get_contents(STDIN), "\n");
$p = new Principal('username', $argv[2]);
if ($p->Exists()) { fwrite(STDERR, "user exists\n"); exit(1); }
$p->Create(array('username' => $argv[2], 'password' => session_salted_sha1($password),
                 'fullname' => $argv[3], 'displayname' => $argv[3],
                 'email' => $argv[2] . '@example.invalid'));
$p = new Principal('username', $argv[2], false);
if (!$p->Exists()) { fwrite(STDERR, "user not created\n"); exit(1); }
if ($argv[4] === '1' && !CreateHomeCollections($argv[2])) { fwrite(STDERR, "no home collections\n"); exit(1); }
CreateDefaultRelationships($argv[2]);
echo "created ", $argv[2], " (principal ", $p->principal_id(), ")\n";
"""


class DAViCal(DavServer):
    """DAViCal 1.1.12 on a private PostgreSQL cluster; see the module
    docstring for how it runs and for its quirks."""

    name = "davical"
    requires_auth = True
    restricts_components = True
    supports_description = True

    def __init__(self, workdir=None, *, user: str = "alice", password: Optional[str] = None,
                 home_collections: bool = False, debug: Optional[bool] = None):
        super().__init__(workdir, user=user, password=password)
        self.home_collections = home_collections
        # Every request and response in the log (DAViCal's own debug output).
        self.debug = bool(os.environ.get("DAVTEST_DAVICAL_DEBUG")) if debug is None else debug
        self.cluster: Optional[PgCluster] = None
        self.pg_dir: Optional[Path] = None
        self.start_seconds: Optional[float] = None
        self.router_path = self.workdir / "router.php"
        self.conf_stem = self.workdir / "davical"      # DAViCal adds "-conf.php"
        self.conf_path = self.workdir / "davical-conf.php"

    # ---------- process handling ----------

    def start(self) -> "DAViCal":
        missing = missing_programs()
        if missing:
            raise ServerError("DAViCal is not installed (run scripts/setup): missing "
                              + ", ".join(missing))
        t0 = time.monotonic()
        template = _Template.data()
        try:
            self._start_database(template)
            super().start()
            self._check_login()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start_database(self, template: Path) -> None:
        self.pg_dir = _private_dir("davtest-davical-pg-")
        # cp -a keeps the owner (the PostgreSQL user) and modes.
        subprocess.run(["cp", "-a", str(template), str(self.pg_dir / "data")], check=True)
        self.cluster = PgCluster(self.pg_dir, self.workdir / "postgres.log")
        self.cluster.start()
        self._write_files()
        self._make_user()

    def _write_files(self) -> None:
        debug = ("$c->dbg['request'] = 1;\n$c->dbg['response'] = 1;\n"
                 if self.debug else "")
        self.conf_path.write_text(_CONF % {"db": DB_NAME, "socket": self.cluster.socket_dir,
                                           "dbuser": DB_APP_USER, "debug": debug})
        self.router_path.write_text(_ROUTER % {"script": SCRIPT_NAME, "htdocs": HTDOCS,
                                               "conf_stem": self.conf_stem})
        (self.workdir / "mkuser.php").write_text(_MKUSER % {"script": SCRIPT_NAME,
                                                            "htdocs": HTDOCS})

    def _make_user(self) -> None:
        cmd = [PHP, "-d", "display_errors=stderr", str(self.workdir / "mkuser.php"),
               str(self.conf_stem), self.user, self.user.capitalize(),
               "1" if self.home_collections else "0"]
        with open(self.log_path, "ab") as log:
            log.write(f"=== davtest: creating DAViCal user {self.user}\n".encode())
            log.flush()
            res = subprocess.run(cmd, input=(self.password + "\n").encode(), stdout=log,
                                 stderr=subprocess.STDOUT, env=self._env(), cwd=str(HTDOCS),
                                 timeout=START_TIMEOUT)
        if res.returncode != 0:
            raise ServerError(f"davical: creating user {self.user} failed (status "
                              f"{res.returncode}); log {self.log_path}:\n{self.log_tail()}")

    def _command(self, port: int) -> list[str]:
        # -q: no "Accepted"/"Closing" lines; PHP's errors, DAViCal's debug
        # output and the router's access lines go to the log file instead.
        return [PHP, "-q", "-S", f"127.0.0.1:{port}", "-t", str(HTDOCS),
                "-d", "display_errors=0", "-d", "log_errors=1",
                "-d", f"error_log={self.log_path}",
                "-d", "memory_limit=512M", "-d", "max_execution_time=0",
                str(self.router_path)]

    def _env(self) -> dict:
        env = super()._env()
        for k in list(env):
            if k.startswith("PG") or k.startswith("PHP"):
                del env[k]
        env["LC_ALL"] = "C.UTF-8"
        return env

    def _check_login(self) -> None:
        """DAViCal answers for alice with her principal (PHP, the database
        and the user all work): a condition, checked once."""
        r = self.request("PROPFIND", self.principal_url, depth=0, body=(
            '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
            '<D:resourcetype/></D:prop></D:propfind>'))
        if r.status_code != 207 or "principal" not in r.text:
            raise ServerError(f"davical: PROPFIND {self.principal_url} -> {r.status_code}\n"
                              f"{r.text[:2000]}\nlog {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            self.pg_dir = None

    def is_running(self) -> bool:
        return super().is_running() and self.cluster is not None \
            and self.cluster.proc is not None and self.cluster.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = super().log_tail(lines)
        pg = self.workdir / "postgres.log"
        if pg.exists() and pg.stat().st_size:
            text += f"\n--- {pg} ---\n" + _tail(pg, 10)
        return text

    # ---------- layout ----------

    @property
    def principal_url(self) -> str:
        return self.url(f"{SCRIPT_NAME}/{self.user}/")

    home_url = principal_url
    calendar_home_url = principal_url
    addressbook_home_url = principal_url

    @property
    def default_collections(self) -> list[str]:
        """The home calendar and address book (only with home_collections=True)."""
        if not self.home_collections:
            return []
        return [f"{SCRIPT_NAME}/{self.user}/calendar/", f"{SCRIPT_NAME}/{self.user}/addresses/"]

    # ---------- database access for tests ----------

    def sql(self, query: str) -> str:
        """Runs SQL in DAViCal's database as the superuser; returns psql's
        unaligned output (for tests that need a server-side state HTTP
        cannot produce, e.g. expiring sync tokens)."""
        if self.cluster is None:
            raise ServerError("davical: not started")
        res = subprocess.run(["psql", "-qXAt", "-v", "ON_ERROR_STOP=1", "-c", query, DB_NAME],
                             env=self.cluster.env(), capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise ServerError(f"davical: psql: {res.stderr.strip()}")
        return res.stdout


def template_seconds() -> float:
    """Seconds the template cluster took to build (0 before it was built)."""
    return _Template.seconds
