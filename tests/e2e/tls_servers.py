"""TLS target services for the end-to-end tests (127.0.0.1 only).

Certificates are made at test time (``make_certificate``).  The real servers are
Debian's: ``openssl s_server``, ``stunnel4`` wrapping a plain service, nginx with
``listen ... ssl``.  The hostile ones are plain Python sockets speaking just enough
TLS record framing to misbehave: they answer any plain-text probe with a TLS
alert (so both scanners hard-match ``ssl`` and restart through TLS), and answer a
real ClientHello by never finishing the handshake, by a ~1 MiB certificate
chain, or by plain text.
"""

from __future__ import annotations

import datetime
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.daemons import (
    LOOPBACK,
    Daemon,
    DaemonFailed,
    _find,
    _launch,
    launch_nginx,
)
from tests.e2e.servers import Handler, _drain, listed_ports
from tests.loopback import free_port

#: what a TLS server sends back to plain text on a TLS port: alert(fatal, handshake_failure)
TLS_ALERT = b"\x15\x03\x01\x00\x02\x02\x28"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    der: bytes


def make_certificate(
    directory: Path,
    common_name: str = "vscand-test.local",
    sans: tuple[str, ...] = ("vscand-test.local", "127.0.0.1"),
    days: int = 30,
) -> Certificate:
    """A self-signed P-256 certificate (and its key) written as PEM into ``directory``."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    alt: list[x509.GeneralName] = []
    for san in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt.append(x509.DNSName(san))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return Certificate(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


# -- real TLS servers ---------------------------------------------------------------


def unlisted_port() -> int:
    """A free port that ``nmap-services`` names no TCP service for. A table answer is then
    the same on every instance of a target (``unknown``), as it must be when each scanner
    scans an instance of its own (twins): nmap-services names some ports of the range and
    not their neighbours."""
    listed = listed_ports("tcp")
    while (port := free_port()) in listed:
        pass
    return port


def start_s_server(
    workdir: Path,
    cert: Certificate,
    *,
    www: bool,
    port: int | None = None,
    max_seconds: float | None = None,
) -> Daemon:
    """``openssl s_server [-www]`` on *port* (default: a free unlisted one; without -www: a
    TLS peer that never talks). It serves one connection at a time. *max_seconds* bounds
    its life (``timeout``), for callers that may not live to stop it."""
    exe = _find("openssl", "openssl", "/usr/bin")
    port = unlisted_port() if port is None else port
    cmd = [exe, "s_server", "-accept", f"{LOOPBACK}:{port}", "-cert", str(cert.cert)]
    cmd += ["-key", str(cert.key), "-quiet", "-naccept", "1000000"]
    if www:
        # TLS 1.2 at most: its page then says "Secure Renegotiation IS supported", which
        # Nmap's s_server line matches; under TLS 1.3, OpenSSL 3.5 (Debian 13) writes "This
        # TLS version forbids renegotiation." there, which no line matches (3.0 writes no such
        # line), and the case would lose its point: http inside TLS
        cmd += ["-www", "-no_tls1_3"]
    if max_seconds is not None:
        cmd = ["timeout", str(int(max_seconds)), *cmd]
    # s_server without -www reads stdin: _launch gives it /dev/null, so it just idles
    return _launch("s_server-www" if www else "s_server", "openssl", cmd, port, workdir)


def start_stunnel(workdir: Path, cert: Certificate, backend_port: int, name: str) -> Daemon:
    """stunnel4 in server mode: TLS on a free port, plain TCP to ``backend_port``."""
    exe = _find("stunnel4", "stunnel4", "/usr/bin")
    port = unlisted_port()
    home = workdir / f"stunnel-{name}"
    home.mkdir()
    config = home / "stunnel.conf"
    config.write_text(
        "foreground = yes\n"
        "pid =\n"
        "debug = 3\n"
        f"output = {home / 'stunnel.log'}\n"
        f"[{name}]\n"
        f"accept = {LOOPBACK}:{port}\n"
        f"connect = {LOOPBACK}:{backend_port}\n"
        f"cert = {cert.cert}\n"
        f"key = {cert.key}\n"
    )
    return _launch(f"stunnel-{name}", "stunnel4", [exe, str(config)], port, workdir)


def start_nginx_ssl(workdir: Path, cert: Certificate) -> Daemon:
    """nginx serving HTTPS (``listen ... ssl``) with the test certificate."""
    return launch_nginx(
        workdir,
        "nginx-ssl",
        "ssl",
        (f"ssl_certificate {cert.cert};", f"ssl_certificate_key {cert.key};"),
    )


def wait_tls_ready(port: int, timeout: float = 10.0) -> None:
    """Wait until a TLS handshake on ``port`` completes (the server is really up)."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection((LOOPBACK, port), timeout=2) as sock,
                context.wrap_socket(sock),
            ):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise DaemonFailed(f"no TLS handshake on {LOOPBACK}:{port}: {exc}") from None
            time.sleep(0.1)


# -- hostile TLS-looking servers -------------------------------------------------------


def _read_record_or_text(conn: socket.socket) -> bytes:
    """The first bytes a client sends (up to one recv); b'' when it closed."""
    conn.settimeout(600)
    return conn.recv(65536)


def _is_client_hello(data: bytes) -> bool:
    return len(data) >= 6 and data[0] == 0x16 and data[1] == 0x03 and data[5] == 0x01


def _tls_or_alert(on_client_hello: Handler) -> Handler:
    """Plain text gets a TLS alert and a close; a ClientHello gets ``on_client_hello``."""

    def handle(conn: socket.socket) -> None:
        data = _read_record_or_text(conn)
        if not data:
            return
        if _is_client_hello(data):
            on_client_hello(conn)
            return
        conn.sendall(TLS_ALERT)

    return handle


def _never_finish(conn: socket.socket) -> None:
    _drain(conn)


def _plaintext_reply(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nplain text\r\n")


def record(content_type: int, body: bytes) -> bytes:
    return struct.pack("!BHH", content_type, 0x0303, len(body)) + body


def _handshake(msg_type: int, body: bytes) -> bytes:
    return struct.pack("!B", msg_type) + len(body).to_bytes(3, "big") + body


def server_hello() -> bytes:
    body = (
        b"\x03\x03"
        + bytes(range(32))  # server random (no downgrade sentinel)
        + b"\x00"  # empty session id
        + b"\xc0\x2b"  # ECDHE-ECDSA-AES128-GCM-SHA256
        + b"\x00"  # no compression
        + struct.pack("!H", 5)
        + b"\xff\x01\x00\x01\x00"  # renegotiation_info (empty)
    )
    return _handshake(2, body)


def huge_certificate_chain(cert_der: bytes, total: int = 1 << 20) -> bytes:
    """A Certificate handshake message of about ``total`` bytes (the one cert, repeated)."""
    entry = len(cert_der).to_bytes(3, "big") + cert_der
    entries = entry * max(1, total // len(entry))
    return _handshake(11, len(entries).to_bytes(3, "big") + entries)


def _huge_chain(cert_der: bytes) -> Handler:
    message = server_hello() + huge_certificate_chain(cert_der)

    def handle(conn: socket.socket) -> None:
        for start in range(0, len(message), 16384):
            conn.sendall(record(0x16, message[start : start + 16384]))
        _drain(conn, 30)

    return handle


def never_finishes_handshake() -> Handler:
    """TLS port that reads the ClientHello and then says nothing."""
    return _tls_or_alert(_never_finish)


def plaintext_to_client_hello() -> Handler:
    """TLS port (plain text gets an alert) that answers a ClientHello with plain HTTP text."""
    return _tls_or_alert(_plaintext_reply)


def huge_chain_server(cert_der: bytes) -> Handler:
    """TLS port whose ServerHello is followed by a ~1 MiB Certificate message."""
    return _tls_or_alert(_huge_chain(cert_der))
