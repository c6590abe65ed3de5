"""A TLS front for a plain-HTTP test server, with a self-signed certificate
made by `openssl req -x509`: what a server with a certificate no CA signed
looks like to davsyncd. Each connection is decrypted and piped to the
backend byte for byte."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) in PEM, valid for `host` (an IP address)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsProxy:
    """https://127.0.0.1:port/ in front of http://127.0.0.1:backend_port/."""

    def __init__(self, backend_port: int, workdir: Path):
        self.backend_port = backend_port
        self.cert, self.key = self_signed_certificate(workdir)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(self.cert, self.key)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.handshakes_failed = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tlsproxy")

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def start(self) -> "TlsProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "TlsProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            tls = self._ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            # The client refused our certificate (or spoke no TLS).
            self.handshakes_failed += 1
            conn.close()
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        except OSError:
            tls.close()
            return
        done = threading.Event()

        def pipe(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
        threading.Thread(target=pipe, args=(backend, tls), daemon=True).start()
        pipe(tls, backend)
        done.wait(30)
        for s in (tls, backend):
            try:
                s.close()
            except OSError:
                pass
