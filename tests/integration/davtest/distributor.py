"""A loopback UnifiedPush distributor on a private D-Bus session bus.

The distributor runs as its own process (dbus-python + GLib main loop):

    python3 -m davtest.distributor --bus ADDRESS --name org.unifiedpush.Distributor.test \\
        --mode v2|v1|both --control-port N --ready-file F [--state FILE] ...

It owns the bus name, serves /org/unifiedpush/Distributor with
org.unifiedpush.Distributor2 (Register(a{sv}) -> a{sv}, Unregister(a{sv}))
and/or org.unifiedpush.Distributor1 (Register(sss) -> (ss), Unregister(s)) as
in the introspection files of the UnifiedPush D-Bus spec, and hands out push
endpoints http://127.0.0.1:<push port>/push/<random> that it serves itself:
a POST to an endpoint is forwarded unchanged to the connector with
Connector2.Message({token, message: ay, id}) (v1: Message(s, ay, s)) and
answered 201; unknown endpoints get 404, endpoints of unregistered or
replaced registrations 410.

After a successful Register the distributor answers first and then calls the
connector's NewEndpoint (asynchronously, the reply is not awaited) on the
`service` name the connector gave (as KDE's distributor does; target='sender'
uses the caller's unique name instead), at /org/unifiedpush/Connector.
Unregister is confirmed with Unregistered.

Tests drive it through the Distributor class below (which starts the process
and talks to its HTTP control port):

    with PrivateBus(tmp / "bus") as bus:
        dist = Distributor(bus.address, tmp / "dist", mode="v2").start()
        ...                                   # the daemon registers over D-Bus
        reg = dist.wait_registered()          # {'token', 'service', 'sender', 'endpoint', ...}
        dist.change_endpoint(reg["token"])    # NewEndpoint with a fresh URL
        dist.stop()
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from davtest import violations
from davtest.procs import stop_process_group

PYTHON = "/usr/bin/python3"
DEFAULT_NAME = "org.unifiedpush.Distributor.test"
DISTRIBUTOR_PATH = "/org/unifiedpush/Distributor"
CONNECTOR_PATH = "/org/unifiedpush/Connector"
IFACE_D1 = "org.unifiedpush.Distributor1"
IFACE_D2 = "org.unifiedpush.Distributor2"
IFACE_C1 = "org.unifiedpush.Connector1"
IFACE_C2 = "org.unifiedpush.Connector2"
SUCCEEDED = "REGISTRATION_SUCCEEDED"
FAILED = "REGISTRATION_FAILED"
REASONS = ("INTERNAL_ERROR", "NETWORK", "ACTION_REQUIRED", "VAPID_REQUIRED", "UNAUTHORIZED")
MAX_MESSAGE = 4096
START_TIMEOUT = 20.0
CONTROL_TIMEOUT = 15.0

# Settings that the control port may change (and their defaults).
DEFAULT_CONFIG = {
    "refuse_reason": None,        # REGISTRATION_FAILED with this reason
    "refuse_count": None,         # refuse only this many registrations (None = all)
    "vapid_required": False,      # VAPID_REQUIRED without a vapid key
    "target": "service",          # call the connector at 'service' or the 'sender'
    "endpoint_order": "after",    # NewEndpoint 'after' or 'before' the Register reply
    "new_endpoint_delay": 0.0,    # seconds between the reply and NewEndpoint
    "enforce_vapid": True,        # 403 for a push not signed with the registration's key
                                  # (RFC 8292 §4.2: a restricted subscription needs it)
    "accept_missing_service": False,  # Register v2 without 'service': refused, as the
                                  # distributor cannot reach the app; True records it only
    "require_ttl": False,         # 400 for a push without TTL (as some push services)
    "paused": False,              # accept pushes (201) but hold them until resumed
    "no_reply_flag": False,       # send NoReply-annotated calls with NO_REPLY_EXPECTED
    "confirm_unregister": True,   # call Unregistered after Unregister
    "new_endpoint_on_vapid_change": True,  # a changed vapid key gets a new endpoint
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# =================================================================== the process


class _Service:
    """State and behaviour of the distributor process. D-Bus work happens in
    the GLib main loop thread; HTTP threads hand it over with in_loop()."""

    def __init__(self, args):
        import dbus
        import dbus.bus
        import dbus.lowlevel
        import dbus.mainloop.glib
        import dbus.service
        from gi.repository import GLib
        self.dbus, self.GLib = dbus, GLib
        self.args = args
        self.lock = threading.RLock()
        self.config = dict(DEFAULT_CONFIG)
        self.registrations: dict[str, dict] = {}    # token -> registration
        self.endpoints: dict[str, str] = {}         # endpoint id -> token
        self.gone: set[str] = set()                 # endpoint ids answered with 410
        self.messages: list[dict] = []              # forwarded pushes
        self.calls: list[dict] = []                 # calls made to connectors
        self.received: list[dict] = []              # D-Bus calls received
        self.held: list[tuple] = []                 # pushes held while paused
        self.counters: dict[str, int] = {}
        self.violations: list[str] = []
        self.state_path = Path(args.state) if args.state else None
        if self.state_path and self.state_path.exists():
            self._load()
        for item in args.config or []:
            k, v = item.split("=", 1)
            self.set_config({k: json.loads(v)})
        if args.vapid_required:
            self.config["vapid_required"] = True

        dbus.mainloop.glib.threads_init()
        self.loop = GLib.MainLoop()
        self.bus = dbus.bus.BusConnection(args.bus, mainloop=dbus.mainloop.glib.DBusGMainLoop())
        self.unique_name = self.bus.get_unique_name()
        self.bus.call_on_disconnection(lambda conn: self.quit("bus disconnected"))
        self.obj = _make_object_class(args.mode)(self, self.bus, DISTRIBUTOR_PATH)
        rc = self.bus.request_name(args.name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        if rc not in (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER,
                      dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER):
            raise SystemExit(f"distributor: could not own {args.name} (reply {rc})")

    # ------------------------------------------------------------ helpers

    def log(self, msg: str) -> None:
        sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] distributor: {msg}\n")
        sys.stderr.flush()

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def quit(self, why: str) -> None:
        self.log(f"quitting: {why}")
        self.GLib.idle_add(lambda: (self.loop.quit(), False)[1])

    def in_loop(self, fn: Callable[[], Any], timeout: float = CONTROL_TIMEOUT) -> Any:
        """Runs fn in the main loop thread and returns its result."""
        done = threading.Event()
        box: dict = {}

        def run():
            try:
                box["value"] = fn()
            except Exception as e:  # noqa: BLE001 - re-raised in the caller
                box["error"] = e
            done.set()
            return False
        self.GLib.idle_add(run)
        if not done.wait(timeout):
            raise TimeoutError("main loop did not run the request")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def set_config(self, changes: dict) -> dict:
        with self.lock:
            for k, v in changes.items():
                if k not in DEFAULT_CONFIG:
                    raise KeyError(f"unknown setting {k!r}")
                if k == "refuse_reason" and v is not None and v not in REASONS:
                    raise ValueError(f"unknown reason {v!r}")
                if k == "target" and v not in ("service", "sender"):
                    raise ValueError("target must be 'service' or 'sender'")
                if k == "endpoint_order" and v not in ("after", "before"):
                    raise ValueError("endpoint_order must be 'after' or 'before'")
                self.config[k] = v
            resume = "paused" in changes and not changes["paused"]
        if resume:
            self._flush_held()
        return dict(self.config)

    def _save(self) -> None:
        if not self.state_path:
            return
        with self.lock:
            doc = {"registrations": self.registrations, "endpoints": self.endpoints,
                   "gone": sorted(self.gone)}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.state_path)

    def _load(self) -> None:
        doc = json.loads(self.state_path.read_text())
        self.registrations = doc.get("registrations", {})
        self.endpoints = doc.get("endpoints", {})
        self.gone = set(doc.get("gone", []))

    def endpoint_url(self, eid: str) -> str:
        return f"http://127.0.0.1:{self.push_port}/push/{eid}"

    def _new_endpoint_id(self) -> str:
        return secrets.token_urlsafe(20)

    def _target(self, reg: dict) -> str:
        if self.config["target"] == "sender" or not reg.get("service"):
            return reg["sender"]
        return reg["service"]

    # ------------------------------------------------------------ calls to connectors

    def call_connector(self, reg: dict, method: str, args: tuple, *, no_reply_ok: bool = True,
                       extra: Optional[dict] = None) -> dict:
        """Asynchronous call (never waits); the outcome lands in self.calls."""
        dbus = self.dbus
        version = reg["version"]
        iface = IFACE_C2 if version == 2 else IFACE_C1
        target = self._target(reg)
        if version == 2:
            sig = "a{sv}"
            payload = dbus.Dictionary(args[0], signature="sv")
            call_args = [payload]
        else:
            sig = {"Message": "says", "NewEndpoint": "ss", "Unregistered": "s"}[method]
            call_args = list(args)
        rec = {"time": time.time(), "method": method, "interface": iface, "target": target,
               "token": reg["token"], "result": "pending", "error": None}
        if extra:
            rec.update(extra)
        with self.lock:
            self.calls.append(rec)
        no_reply = self.config["no_reply_flag"] and (method != "Message" or version == 1)

        def ok(*reply):
            rec["result"] = "ok"
            if reply and method == "Message" and version == 2:
                try:
                    rec["reply"] = {str(k): str(v) for k, v in dict(reply[0]).items()}
                except (TypeError, ValueError):
                    rec["reply"] = repr(reply)

        def err(e):
            rec["result"] = "error"
            rec["error"] = f"{e.get_dbus_name() if hasattr(e, 'get_dbus_name') else ''}: {e}"
            self.log(f"{method} to {target} failed: {e}")

        if no_reply:
            msg = dbus.lowlevel.MethodCallMessage(target, CONNECTOR_PATH, iface, method)
            msg.append(signature=sig, *call_args)
            msg.set_no_reply(True)
            self.bus.send_message(msg)
            rec["result"] = "sent-no-reply"
        else:
            self.bus.call_async(target, CONNECTOR_PATH, iface, method, sig, call_args,
                                ok, err, timeout=30.0)
        return rec

    def send_new_endpoint(self, token: str) -> None:
        with self.lock:
            reg = self.registrations.get(token)
            if reg is None:
                return
            reg = dict(reg)
        if reg["version"] == 2:
            self.call_connector(reg, "NewEndpoint", ({"token": token,
                                                      "endpoint": reg["endpoint"]},),
                                extra={"endpoint": reg["endpoint"]})
        else:
            self.call_connector(reg, "NewEndpoint", (token, reg["endpoint"]),
                                extra={"endpoint": reg["endpoint"]})
        self.count("new_endpoint_calls")

    def send_unregistered(self, reg: dict) -> None:
        if reg["version"] == 2:
            self.call_connector(reg, "Unregistered", ({"token": reg["token"]},))
        else:
            self.call_connector(reg, "Unregistered", (reg["token"],))
        self.count("unregistered_calls")

    def send_message(self, reg: dict, body: bytes, mid: str, source: str) -> dict:
        dbus = self.dbus
        if reg["version"] == 2:
            args = ({"token": reg["token"], "message": dbus.ByteArray(body), "id": mid},)
        else:
            args = (reg["token"], dbus.ByteArray(body), mid)
        rec = self.call_connector(reg, "Message", args, extra={"id": mid, "size": len(body)})
        with self.lock:
            self.messages.append({"time": time.time(), "token": reg["token"], "id": mid,
                                  "size": len(body), "body_b64": _b64(body), "source": source,
                                  "call": rec})
            self.registrations[reg["token"]]["messages"] = \
                self.registrations[reg["token"]].get("messages", 0) + 1
        self.count("forwarded")
        return rec

    def _flush_held(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for token, body, mid, source in held:
            with self.lock:
                reg = self.registrations.get(token)
            if reg is not None:
                self.in_loop(lambda r=dict(reg), b=body, m=mid, s=source:
                             self.send_message(r, b, m, s))

    # ------------------------------------------------------------ D-Bus methods

    def register(self, version: int, sender: str, service: str, token: str,
                 description: str, vapid: Optional[str]) -> tuple[str, str]:
        self.received.append({"time": time.time(), "method": "Register", "version": version,
                              "sender": sender, "service": service, "token": token,
                              "description": description, "vapid": vapid})
        self.count("register_calls")
        if not token or len(token.encode()) > 100:
            self.violations.append(f"Register with bad token {token!r}")
            return FAILED, "INTERNAL_ERROR"
        if version == 2 and not service:
            self.violations.append("Register v2 without 'service'")
            if not self.config["accept_missing_service"]:
                return FAILED, "INTERNAL_ERROR"
        if vapid is not None:
            try:
                from davtest.pushfront import b64u_decode, public_key_from_bytes
                if len(vapid) != 87:
                    raise ValueError(f"{len(vapid)} characters, not 87")
                public_key_from_bytes(b64u_decode(vapid))
            except ValueError as e:
                self.violations.append(f"Register with bad vapid key {vapid!r}: {e}")
                return FAILED, "INTERNAL_ERROR"
        with self.lock:
            reason = self.config["refuse_reason"]
            if reason is not None:
                n = self.config["refuse_count"]
                if n is not None:
                    n -= 1
                    self.config["refuse_count"] = n if n > 0 else None
                    if n <= 0:
                        self.config["refuse_reason"] = None
                self.count("refused")
                return FAILED, reason
            if self.config["vapid_required"] and not vapid:
                self.count("refused")
                return FAILED, "VAPID_REQUIRED"
            reg = self.registrations.get(token)
            now = time.time()
            if reg is None:
                eid = self._new_endpoint_id()
                reg = {"token": token, "created": now, "messages": 0, "endpoint_id": eid,
                       "endpoint": self.endpoint_url(eid)}
                self.registrations[token] = reg
                self.endpoints[eid] = token
                self.count("registrations")
            else:
                if (vapid != reg.get("vapid") and self.config["new_endpoint_on_vapid_change"]):
                    self._replace_endpoint(reg)
                self.count("re_registrations")
            reg.update({"service": service, "sender": sender, "description": description,
                        "vapid": vapid, "version": version, "updated": now})
        self._save()
        if self.config["endpoint_order"] == "before":
            self.send_new_endpoint(token)
        else:
            delay = float(self.config["new_endpoint_delay"] or 0)
            cb = lambda: (self.send_new_endpoint(token), False)[1]  # noqa: E731
            if delay > 0:
                self.GLib.timeout_add(int(delay * 1000), cb)
            else:
                self.GLib.idle_add(cb)
        return SUCCEEDED, ""

    def _replace_endpoint(self, reg: dict) -> str:
        old = reg.get("endpoint_id")
        if old:
            self.endpoints.pop(old, None)
            self.gone.add(old)
        eid = self._new_endpoint_id()
        reg["endpoint_id"] = eid
        reg["endpoint"] = self.endpoint_url(eid)
        self.endpoints[eid] = reg["token"]
        return reg["endpoint"]

    def unregister(self, version: int, sender: str, token: str) -> None:
        self.received.append({"time": time.time(), "method": "Unregister", "version": version,
                              "sender": sender, "token": token})
        self.count("unregister_calls")
        with self.lock:
            reg = self.registrations.pop(token, None)
            if reg is None:
                self.violations.append(f"Unregister of unknown token {token!r}")
                return
            self.endpoints.pop(reg["endpoint_id"], None)
            self.gone.add(reg["endpoint_id"])
        self._save()
        if self.config["confirm_unregister"]:
            self.GLib.idle_add(lambda: (self.send_unregistered(reg), False)[1])

    # ------------------------------------------------------------ HTTP push endpoints

    def handle_push(self, eid: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        self.count("push_requests")
        with self.lock:
            token = self.endpoints.get(eid)
            gone = eid in self.gone
            reg = dict(self.registrations[token]) if token in self.registrations else None
        if reg is None:
            return (410 if gone else 404), {}, b""
        if not body:
            return 400, {}, b"empty push message\n"
        if len(body) > MAX_MESSAGE:
            return 413, {}, b"push message larger than 4096 bytes\n"
        if self.config["require_ttl"] and headers.get("TTL") is None:
            return 400, {}, b"TTL header required\n"
        if self.config["enforce_vapid"] and reg.get("vapid"):
            from davtest.pushfront import verify_vapid
            auth = headers.get("Authorization")
            if not auth:
                return 401, {}, b"VAPID authorization required\n"
            try:
                verify_vapid(auth, expected_key=reg["vapid"],
                             expected_aud=f"http://127.0.0.1:{self.push_port}")
            except ValueError as e:
                self.count("vapid_rejected")
                status = 403 if "differs" in str(e) else 401
                return status, {}, f"VAPID: {e}\n".encode()
        mid = secrets.token_hex(8)
        with self.lock:
            paused = self.config["paused"]
            if paused:
                self.held.append((reg["token"], body, mid, "http"))
        if not paused:
            self.in_loop(lambda: self.send_message(reg, body, mid, "http"))
        return 201, {"Location": f"/message/{mid}"}, b""

    # ------------------------------------------------------------ control

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "name": self.args.name, "unique_name": self.unique_name, "pid": os.getpid(),
                "mode": self.args.mode, "push_port": self.push_port,
                "control_port": self.control_port,
                "registrations": [dict(r) for r in self.registrations.values()],
                "counters": dict(self.counters), "config": dict(self.config),
                "gone": sorted(self.gone), "held": len(self.held),
                "violations": list(self.violations),
            }

    def control(self, method: str, path: str, doc: dict) -> tuple[int, Any]:
        if method == "GET":
            if path == "/state":
                return 200, self.snapshot()
            if path == "/messages":
                with self.lock:
                    return 200, [dict(m, call=dict(m["call"])) for m in self.messages]
            if path == "/calls":
                with self.lock:
                    return 200, [dict(c) for c in self.calls]
            if path == "/received":
                with self.lock:
                    return 200, list(self.received)
            return 404, {"error": "unknown"}
        if path == "/config":
            return 200, self.set_config(doc)
        if path == "/take-violations":
            with self.lock:
                out = list(self.violations)
                self.violations.clear()
            return 200, out
        if path == "/clear":
            with self.lock:
                self.messages.clear()
                self.calls.clear()
                self.received.clear()
                self.counters.clear()
                self.violations.clear()
            return 200, {}
        token = doc.get("token")
        with self.lock:
            reg = self.registrations.get(token)
        if reg is None:
            return 404, {"error": f"unknown token {token!r}"}
        if path == "/change-endpoint":
            with self.lock:
                url = self._replace_endpoint(reg)
            self._save()
            self.in_loop(lambda: self.send_new_endpoint(token))
            return 200, {"endpoint": url}
        if path == "/new-endpoint":
            self.in_loop(lambda: self.send_new_endpoint(token))
            return 200, {"endpoint": reg["endpoint"]}
        if path == "/unregistered":
            with self.lock:
                self.registrations.pop(token, None)
                self.endpoints.pop(reg["endpoint_id"], None)
                self.gone.add(reg["endpoint_id"])
            self._save()
            self.in_loop(lambda: self.send_unregistered(dict(reg)))
            return 200, {}
        if path == "/forget":
            with self.lock:
                self.registrations.pop(token, None)
                self.endpoints.pop(reg["endpoint_id"], None)
            self._save()
            return 200, {}
        if path == "/inject":
            body = base64.b64decode(doc["body_b64"])
            mid = doc.get("id") or secrets.token_hex(8)
            rec = self.in_loop(lambda: self.send_message(dict(reg), body, mid, "inject"))
            return 200, {"id": mid, "call": dict(rec)}
        return 404, {"error": "unknown"}

    # ------------------------------------------------------------ run

    def run(self) -> int:
        svc = self

        class PushHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *a):
                svc.log("push http: " + fmt % a)

            def _reply(self, status, headers, body):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = urllib.parse.urlsplit(self.path).path
                if not path.startswith("/push/"):
                    return self._reply(404, {}, b"")
                try:
                    status, hdrs, out = svc.handle_push(path[len("/push/"):], self.headers, body)
                except Exception as e:  # noqa: BLE001
                    svc.log(f"push failed: {e!r}")
                    status, hdrs, out = 500, {}, repr(e).encode()
                self._reply(status, hdrs, out)

            def do_GET(self):
                self._reply(405, {"Allow": "POST"}, b"")

        class ControlHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *a):
                pass

            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    doc = json.loads(raw) if raw else {}
                    status, out = svc.control(self.command, urllib.parse.urlsplit(
                        self.path).path, doc)
                except Exception as e:  # noqa: BLE001
                    status, out = 400, {"error": f"{type(e).__name__}: {e}"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _do

        def server(port: int, fd: Optional[int], handler) -> ThreadingHTTPServer:
            if fd is None:
                ThreadingHTTPServer.allow_reuse_address = True
                return ThreadingHTTPServer(("127.0.0.1", port), handler)
            # A listening socket the controller holds across restarts, so
            # that no other process can take the port in between.
            srv = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
            srv.socket.close()
            srv.socket = socket.socket(fileno=fd)
            srv.server_address = srv.socket.getsockname()
            return srv
        push = server(self.args.push_port, self.args.push_fd, PushHandler)
        control = server(self.args.control_port, self.args.control_fd, ControlHandler)
        push.daemon_threads = control.daemon_threads = True
        self.push_port = push.server_address[1]
        self.control_port = control.server_address[1]
        # Endpoints of a restored state keep their ids; their URLs follow the port.
        with self.lock:
            for reg in self.registrations.values():
                reg["endpoint"] = self.endpoint_url(reg["endpoint_id"])
        for srv in (push, control):
            threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()

        GLib = self.GLib
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM,
                             lambda: (self.loop.quit(), False)[1])
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT,
                             lambda: (self.loop.quit(), False)[1])
        parent = os.getppid()

        def watch_parent():
            if os.getppid() != parent:
                self.quit("parent exited")
                return False
            return True
        GLib.timeout_add(500, watch_parent)

        if self.args.ready_file:
            info = {"pid": os.getpid(), "name": self.args.name, "unique_name": self.unique_name,
                    "push_port": self.push_port, "control_port": self.control_port,
                    "mode": self.args.mode}
            tmp = self.args.ready_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.replace(tmp, self.args.ready_file)
        self.log(f"ready: {self.args.name} ({self.unique_name}) mode {self.args.mode}, "
                 f"push port {self.push_port}, control port {self.control_port}")
        try:
            self.loop.run()
        finally:
            self._save()
            push.shutdown()
            control.shutdown()
            push.server_close()
            control.server_close()
        return 0


def _make_object_class(mode: str):
    import dbus
    import dbus.service

    class Base(dbus.service.Object):
        def __init__(self, svc, conn, path):
            self.svc = svc
            super().__init__(conn, path)

    class V2:
        @dbus.service.method(IFACE_D2, in_signature="a{sv}", out_signature="a{sv}",
                             sender_keyword="sender")
        def Register(self, args, sender=None):
            def s(key):
                v = args.get(key)
                return None if v is None else str(v)
            ok, reason = self.svc.register(2, str(sender), s("service") or "", s("token") or "",
                                           s("description") or "", s("vapid"))
            out = {"success": ok}
            if ok == FAILED:
                out["reason"] = reason
            return dbus.Dictionary(out, signature="sv")

        @dbus.service.method(IFACE_D2, in_signature="a{sv}", out_signature="",
                             sender_keyword="sender")
        def Unregister(self, args, sender=None):
            self.svc.unregister(2, str(sender), str(args.get("token", "")))

    class V1:
        @dbus.service.method(IFACE_D1, in_signature="sss", out_signature="ss",
                             sender_keyword="sender")
        def Register(self, service, token, description, sender=None):
            return self.svc.register(1, str(sender), str(service), str(token),
                                     str(description), None)

        @dbus.service.method(IFACE_D1, in_signature="s", out_signature="",
                             sender_keyword="sender")
        def Unregister(self, token, sender=None):
            self.svc.unregister(1, str(sender), str(token))

    def members(cls):
        return {k: v for k, v in cls.__dict__.items() if not k.startswith("__")}

    # dbus-python finds a method by walking the MRO and skipping same-named
    # methods of other interfaces, so 'both' stacks V2 on top of V1.
    if mode == "v2":
        return type("DistributorV2", (Base,), members(V2))
    v1 = type("DistributorV1", (Base,), members(V1))
    if mode == "v1":
        return v1
    if mode == "both":
        return type("DistributorBoth", (v1,), members(V2))
    raise ValueError(f"unknown mode {mode!r}")


def main(argv: Optional[list[str]] = None) -> int:
    # `python3 davtest/distributor.py` would put davtest/ first on sys.path,
    # where davtest/dbus.py would shadow dbus-python.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    parent = os.path.dirname(here)
    if parent not in sys.path:
        sys.path.append(parent)
    ap = argparse.ArgumentParser(prog="davtest.distributor")
    ap.add_argument("--bus", required=True, help="D-Bus address of the session bus")
    ap.add_argument("--name", default=DEFAULT_NAME)
    ap.add_argument("--mode", choices=("v1", "v2", "both"), default="v2")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--push-port", type=int, default=0)
    ap.add_argument("--push-fd", type=int, help="an inherited listening socket for pushes")
    ap.add_argument("--control-fd", type=int, help="an inherited listening socket for control")
    ap.add_argument("--ready-file")
    ap.add_argument("--state", help="JSON file keeping registrations across restarts")
    ap.add_argument("--vapid-required", action="store_true")
    ap.add_argument("--config", action="append", help="KEY=JSON initial setting")
    args = ap.parse_args(argv)
    if not args.name.startswith("org.unifiedpush.Distributor."):
        ap.error("the name must start with org.unifiedpush.Distributor.")
    return _Service(args).run()


# =================================================================== test-side helper


class DistributorError(RuntimeError):
    pass


class Distributor:
    """Starts and controls a distributor process (see the module docstring).

    Distributor(bus_address, workdir, name=..., mode='v2'|'v1'|'both',
                vapid_required=False, push_port=0, control_port=0, **config)
    `config` are initial settings (DEFAULT_CONFIG keys: target, endpoint_order,
    enforce_vapid, ...). Registrations survive restart() (fresh=False) in
    workdir/state.json; push and control ports are kept across restarts.
    """

    def __init__(self, bus_address: str, workdir: os.PathLike | str, *,
                 name: str = DEFAULT_NAME, mode: str = "v2", vapid_required: bool = False,
                 push_port: int = 0, control_port: int = 0, python: str = PYTHON, **config):
        unknown = set(config) - set(DEFAULT_CONFIG)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        self.bus_address = bus_address
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.mode = mode
        self.vapid_required = vapid_required
        self.push_port = push_port
        self.control_port = control_port
        self.python = python
        self.initial_config = config
        self.state_path = self.workdir / "state.json"
        self.ready_path = self.workdir / "ready.json"
        self.log_path = self.workdir / "distributor.log"
        self.proc: Optional[subprocess.Popen] = None
        self.info: dict = {}
        # The listening sockets are made here and handed to each process we
        # start: the ports stay ours across restart(), where a process that
        # bound them itself would free them for anyone in between.
        self._sockets = [socket.create_server(("127.0.0.1", port), backlog=64)
                         for port in (push_port, control_port)]
        self.push_port, self.control_port = (s.getsockname()[1] for s in self._sockets)
        # Violations of processes already stopped (restart() or stop()),
        # kept for take_violations() and the finaliser.
        self._saved_violations: list[str] = []
        import requests
        self._http = requests.Session()
        violations.track(self)

    # ------------------------------------------------------------ process

    def start(self) -> "Distributor":
        if self.proc is not None and self.proc.poll() is None:
            raise DistributorError("already running")
        try:
            self.ready_path.unlink()
        except FileNotFoundError:
            pass
        cmd = [self.python, "-m", "davtest.distributor", "--bus", self.bus_address,
               "--name", self.name, "--mode", self.mode,
               "--push-fd", str(self._sockets[0].fileno()),
               "--control-fd", str(self._sockets[1].fileno()), "--ready-file", str(self.ready_path),
               "--state", str(self.state_path)]
        if self.vapid_required:
            cmd.append("--vapid-required")
        for k, v in self.initial_config.items():
            cmd += ["--config", f"{k}={json.dumps(v)}"]
        env = dict(os.environ)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, cwd=pkg_parent, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         pass_fds=[s.fileno() for s in self._sockets])
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.02
        while True:
            if self.proc.poll() is not None:
                raise DistributorError(f"distributor exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
            try:
                info = json.loads(self.ready_path.read_text())
                if info.get("pid") == self.proc.pid:
                    self.info = info
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise DistributorError(f"distributor not ready after {START_TIMEOUT:g} s:\n"
                                       f"{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        assert (self.info["push_port"], self.info["control_port"]) == \
            (self.push_port, self.control_port), self.info
        return self

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM (then SIGKILL); the bus name is released with the process."""
        if self.proc is None:
            return None
        self._save_violations()
        return stop_process_group(self.proc, timeout)

    def _save_violations(self) -> None:
        if self.is_running():
            try:
                self._saved_violations += self._control("POST", "/take-violations", {})
            except Exception as e:  # noqa: BLE001 - a hung process
                self._saved_violations.append(f"violations unreadable at stop: {e}")

    def kill(self) -> None:
        """SIGKILL: the distributor vanishes without saving anything more."""
        if self.proc is not None and self.proc.poll() is None:
            self._save_violations()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, fresh: bool = False) -> "Distributor":
        """stop() and start() again: with fresh=True all registrations are
        forgotten (their endpoints answer 404), else they are kept."""
        self.stop()
        if fresh:
            try:
                self.state_path.unlink()
            except FileNotFoundError:
                pass
        return self.start()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Distributor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        """Frees the ports (after stop(); the object cannot start again)."""
        for s in self._sockets:
            s.close()
        self._http.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    @property
    def unique_name(self) -> str:
        return self.info["unique_name"]

    @property
    def push_base(self) -> str:
        return f"http://127.0.0.1:{self.push_port}/push/"

    # ------------------------------------------------------------ control

    def _control(self, method: str, path: str, doc: Optional[dict] = None) -> Any:
        url = f"http://127.0.0.1:{self.control_port}{path}"
        r = self._http.request(method, url, json=doc if method == "POST" else None,
                               timeout=CONTROL_TIMEOUT + 5)
        if r.status_code != 200:
            raise DistributorError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def state(self) -> dict:
        """name, unique_name, pid, registrations, counters, config, gone, violations."""
        return self._control("GET", "/state")

    def registrations(self) -> list[dict]:
        """[{token, service, sender, description, vapid, version, endpoint,
        endpoint_id, messages, created, updated}]"""
        return self.state()["registrations"]

    def registration(self, token: str) -> Optional[dict]:
        for r in self.registrations():
            if r["token"] == token:
                return r
        return None

    def endpoint_for(self, token: str) -> str:
        reg = self.registration(token)
        if reg is None:
            raise KeyError(token)
        return reg["endpoint"]

    def counters(self) -> dict:
        return self.state()["counters"]

    def violations(self) -> list[str]:
        """Read only: whatever no test takes fails the test (davtest.violations)."""
        live = self.state()["violations"] if self.is_running() else []
        return self._saved_violations + live

    def take_violations(self) -> list[str]:
        """The violations so far, cleared (also after stop())."""
        out, self._saved_violations = self._saved_violations, []
        if self.is_running():
            out += self._control("POST", "/take-violations", {})
        return out

    def messages(self, token: Optional[str] = None) -> list[dict]:
        """Pushes forwarded to connectors: {time, token, id, size, body_b64,
        source ('http'/'inject'), call: {result, error, reply, ...}}."""
        msgs = self._control("GET", "/messages")
        return [m for m in msgs if token is None or m["token"] == token]

    def message_bodies(self, token: Optional[str] = None) -> list[bytes]:
        return [base64.b64decode(m["body_b64"]) for m in self.messages(token)]

    def forwarded_count(self, token: Optional[str] = None) -> int:
        return len(self.messages(token))

    def calls(self, method: Optional[str] = None) -> list[dict]:
        """Calls made to connectors: {time, method, interface, target, token,
        result ('pending'/'ok'/'error'/'sent-no-reply'), error, endpoint?}."""
        return [c for c in self._control("GET", "/calls")
                if method is None or c["method"] == method]

    def received(self) -> list[dict]:
        """D-Bus calls received (Register/Unregister with their arguments)."""
        return self._control("GET", "/received")

    def configure(self, **settings) -> dict:
        """Changes settings (DEFAULT_CONFIG keys); returns the whole config."""
        return self._control("POST", "/config", settings)

    def refuse(self, reason: str = "ACTION_REQUIRED", count: Optional[int] = None) -> None:
        """Registrations fail with `reason` (count times, or until accept())."""
        self.configure(refuse_reason=reason, refuse_count=count)

    def accept(self) -> None:
        self.configure(refuse_reason=None, refuse_count=None)

    def set_vapid_required(self, required: bool = True) -> None:
        self.configure(vapid_required=required)

    def pause(self) -> None:
        """Pushes are accepted (201) but held."""
        self.configure(paused=True)

    def resume(self) -> None:
        """Held pushes are forwarded in order."""
        self.configure(paused=False)

    def change_endpoint(self, token: str) -> str:
        """New endpoint for `token` (the old one answers 410); NewEndpoint is sent."""
        return self._control("POST", "/change-endpoint", {"token": token})["endpoint"]

    def resend_endpoint(self, token: str) -> str:
        """NewEndpoint again with the current endpoint."""
        return self._control("POST", "/new-endpoint", {"token": token})["endpoint"]

    def send_unregistered(self, token: str) -> None:
        """Drops the registration and tells the connector with Unregistered."""
        self._control("POST", "/unregistered", {"token": token})

    def forget(self, token: str) -> None:
        """Drops the registration silently (its endpoint answers 404)."""
        self._control("POST", "/forget", {"token": token})

    def inject(self, token: str, body: bytes, msg_id: Optional[str] = None) -> dict:
        """Forwards `body` to the connector as if it had been POSTed to the endpoint."""
        doc = {"token": token, "body_b64": _b64(body)}
        if msg_id:
            doc["id"] = msg_id
        return self._control("POST", "/inject", doc)

    def clear_logs(self) -> None:
        self._control("POST", "/clear", {})

    def wait_registered(self, token: Optional[str] = None, timeout: float = 30.0,
                        pred: Optional[Callable[[dict], bool]] = None) -> dict:
        """The registration for `token` (or the only/first one), once present."""
        from davtest.daemon import wait_until

        def check():
            for r in self.registrations():
                if (token is None or r["token"] == token) and (pred is None or pred(r)):
                    return r
            return None
        return wait_until(check, timeout, f"registration {token or '(any)'} at the distributor")

    def wait_calls(self, method: str, n: int = 1, timeout: float = 30.0,
                   pred: Optional[Callable[[dict], bool]] = None) -> list[dict]:
        """Waits for n finished connector calls of `method` (result not 'pending')."""
        from davtest.daemon import wait_until

        def check():
            cs = [c for c in self.calls(method) if c["result"] != "pending"
                  and (pred is None or pred(c))]
            return cs if len(cs) >= n else None
        return wait_until(check, timeout, f"{n} {method} call(s) to the connector")


if __name__ == "__main__":
    sys.exit(main())
