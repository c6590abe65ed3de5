"""The demo behind scripts/demo.

    /usr/bin/python3 -m davtest.demo --davsyncd build/daemon/davsyncd --workdir DIR

Starts a Radicale server on a free loopback port with a "Personal" calendar,
a "Tasks" list and a "Contacts" address book, writes a davsyncd config for
it, runs `davsyncd --discover` and, when the binary supports it, `--once`
followed by a listing of the vdir folders it wrote. The server is stopped on
every way out (normal end, error, Ctrl-C, SIGTERM). Exit status: 0 when every
davsyncd run succeeded.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from davtest.daemon import DaemonEnv, account_for
from davtest.sampledata import seed_demo
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

        heading("Writing the davsyncd configuration")
        secret = work / "password"
        secret.write_text(srv.password + "\n")
        os.chmod(secret, 0o600)
        cfg = env.write_config([account_for(srv, "demo", url=srv.base_url,
                                            password_command=f"cat {secret}")],
                               path=work / "config.json")
        print(f"{cfg}:")
        print(cfg.read_text().rstrip())
        print(f"(XDG_STATE_HOME={env.state_home}, XDG_DATA_HOME={env.data_home})")

        heading("Discovering the account's calendars and address books")
        status = run_shown(env, "--config", cfg, "--discover")

        help_text = subprocess.run([str(env.binary), "--help"], capture_output=True, text=True,
                                   env=env.env(), stdin=subprocess.DEVNULL).stdout
        if "--once" in help_text:
            heading("Syncing once into local vdir folders")
            status = run_shown(env, "--config", cfg, "--once") or status
            heading(f"vdir folders under {env.data_dir}")
            list_vdirs(env.data_dir)
        else:
            heading("Skipping the sync: this davsyncd build has no --once yet")

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
