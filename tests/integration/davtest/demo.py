"""The demo behind scripts/demo.

    /usr/bin/python3 -m davtest.demo --davsyncd build/daemon/davsyncd --workdir DIR

Starts a Radicale server on a free loopback port with a "Personal" calendar,
a "Tasks" list and a "Contacts" address book, puts the test WebDAV-Push front
before it, starts a private session bus with the test UnifiedPush
distributor, and runs the davsyncd daemon against all of it: discovery, the
first sync, `davsyncctl status`, and then an event added on the server by
another client arriving in the local folder by push, with the time it took.
Everything is stopped on every way out (normal end, error, Ctrl-C, SIGTERM).
Exit status: 0 when every step succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import time

from davtest.daemon import DaemonEnv, account_for, wait_until
from davtest.dbus import PrivateBus
from davtest.distributor import Distributor
from davtest.pushfront import PushFront
from davtest.sampledata import make_event, seed_demo
from davtest.servers import Radicale


def heading(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run_shown(env: DaemonEnv, *args) -> int:
    cmd = [str(env.binary)] + [str(a) for a in args]
    print("$ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, env=env.env(), cwd=env.root, stdin=subprocess.DEVNULL,
                         timeout=300)
    if res.returncode != 0:
        print(f"(davsyncd exited with status {res.returncode})", flush=True)
    return res.returncode


def list_vdirs(root: Path) -> None:
    if not root.exists():
        print(f"(nothing under {root})")
        return
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.is_file())
        items = [f for f in files if f.suffix in (".ics", ".vcf")]
        meta = {f.name: f.read_text(errors="replace").strip() for f in files
                if not f.suffix and f.name in ("displayname", "color", "description")}
        if not items and not meta:
            continue  # the account's folder, which holds the collections
        rel = d.relative_to(root)
        extra = ", ".join(f"{k}={v!r}" for k, v in sorted(meta.items()))
        print(f"  {rel}/  {len(items)} item(s){'  ' + extra if extra else ''}")
    print()
    subprocess.run(["find", str(root), "-type", "f"], check=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="davtest.demo")
    ap.add_argument("--davsyncd", required=True, help="path of the davsyncd binary")
    ap.add_argument("--workdir", required=True, help="empty folder for the server and daemon")
    args = ap.parse_args(argv)

    # SIGTERM/SIGHUP unwind like Ctrl-C, so that the server is stopped.
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)

    work = Path(args.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = DaemonEnv(work / "daemon", binary=args.davsyncd)

    heading("Starting a Radicale server (CalDAV/CardDAV) on a free local port")
    with Radicale(work / "radicale") as srv:
        (work / "radicale.pid").write_text(f"{srv.pid}\n")
        print(f"Radicale {srv.base_url}  user {srv.user}  (storage {srv.storage_dir}, "
              f"log {srv.log_path})")

        heading("Creating sample data on the server")
        paths = seed_demo(srv)
        for key, path in paths.items():
            info = srv.collection_info(path)
            n = len(srv.list_hrefs(path))
            color = f", color {info['color']}" if info["color"] else ""
            print(f"  {srv.url(path)}  {info['displayname']!r}: {info['kind']}, "
                  f"{'/'.join(info['components']) or 'vCard'}{color}, {n} item(s)")

        heading("Putting a WebDAV-Push front before it, starting a session bus and a UnifiedPush distributor")
        with PushFront(srv.base_url) as front, PrivateBus(work / "bus") as bus, \
                Distributor(bus.address, work / "distributor") as dist:
            other_client = front.server_view(srv)
            print(f"push front {front.base_url}, bus {bus.address}, distributor {dist.name}")

            heading("Writing the davsyncd configuration")
            secret = work / "password"
            secret.write_text(srv.password + "\n")
            os.chmod(secret, 0o600)
            cfg = env.write_config([account_for(srv, "demo", url=front.base_url, password_command=f"cat {secret}",
                                                sync_interval=3600)],
                                   path=work / "config.json")
            print(f"{cfg}:")
            print(cfg.read_text().rstrip())

            heading("Discovering the account's calendars and address books")
            status = run_shown(env, "--config", cfg, "--discover")

            heading("Starting the daemon on the private bus (poll interval: one hour)")
            bus_env = {"DBUS_SESSION_BUS_ADDRESS": bus.address}
            daemon = env.start("--config", cfg, extra_env=bus_env)
            ctl = [str(Path(env.binary).with_name("davsyncctl"))]

            def ctl_json():
                res = subprocess.run(ctl + ["--json", "status"], env=env.env(bus_env), capture_output=True,
                                     text=True, timeout=30)
                return json.loads(res.stdout) if res.returncode == 0 else None

            def account():
                st = ctl_json()
                return st["accounts"][0] if st and st["accounts"] else None

            try:
                wait_until(lambda: (a := account()) and a["LastResult"] == "ok" and a["PushState"] == "active",
                           timeout=60, what="the first sync and an active push subscription")
                print("$ davsyncctl status", flush=True)
                subprocess.run(ctl + ["status"], env=env.env(bus_env), timeout=30)

                heading("Another client adds an event on the server")
                folder = env.data_dir / "demo" / "personal"
                before = set(folder.glob("*.ics"))
                started = time.monotonic()
                other_client.put_item(paths["personal"], "pushed-by-demo.ics", make_event(100, 7, summary="Added elsewhere"))
                arrived = wait_until(lambda: set(folder.glob("*.ics")) - before, timeout=30,
                                     what="the new event in the local folder")
                print(f"arrived by push after {time.monotonic() - started:.2f} s: {sorted(p.name for p in arrived)}")
                heading(f"vdir folders under {env.data_dir}")
                list_vdirs(env.data_dir)
            except TimeoutError as e:
                print(f"demo failed: {e}")
                print((env.root / "davsyncd.log").read_text(errors="replace")[-3000:])
                status = status or 1
            finally:
                env.stop(daemon)

        heading("Stopping the server")
    (work / "radicale.pid").unlink(missing_ok=True)
    print("Done." if status == 0 else f"Done, but davsyncd reported an error (status {status}).")
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"\nInterrupted ({e or 'Ctrl-C'}); server stopped.", file=sys.stderr)
        sys.exit(130)
