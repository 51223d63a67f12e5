"""Lookalike servers for the agents-and-small-services script e2e test (a child process).

``python -m tests.e2e.script_servers_agents`` (inside the test's network namespace)
starts the servers, prints one JSON line ``{"case": port, ...}`` (UDP cases end in
``-udp``) and serves until its stdin closes. Written from the protocols' published
facts:

* ``vmware-http`` (80) and ``vmware-https`` (443, TLS): an ESX/ESXi host's web server;
  ``POST /sdk`` answers a RetrieveServiceContentResponse (name, fullName, version,
  build, localeVersion/localeBuild, osType, productLineId: the 443 one without
  localeBuild and productLineId); 443's ``GET /`` is ESX 4.1's welcome page.
  ``vmware-lying`` (8080): ``/sdk`` announces more body than it sends (hostile).
* ``ovs`` (8899): Python's own BaseHTTPServer as Oracle's agent 3.0.1 ran it: 501 to
  GET, 403 ``Unauthorized access attempt from ('ip', port)!`` to an XML-RPC POST.
* ``mcafee`` (8081): answers an MSIE ``User-Agent`` with the agent's XML log
  (``<?xml …?><naLog>…``) and anything else with a plain page; ``mcafee-named``
  (8082): always the XML, with the agent's ``Agent-ListenServer-HttpSvr/1.0``
  Server header (Nmap's probes name it ePolicy Orchestrator).
* ``netbuster`` (12345): ``NetBus 1.70`` with no ``\\r``, then closes; ``netbus``
  (12346): ``NetBus 1.70\\r``, answers the password; ``netbus-silent`` (12347):
  ``NetBus 1.70\\r``, then silent (NSE's 5 s timeout: the honeypot).
* ``openlookup`` (5850): the hello netstring (NSON dict: method ``hello``,
  options http_port, sync_port, timestamp, version ``2.7``, your_address).
* ``time`` (37): 2000-01-01T00:00:00 as 32 bits, then closes; ``time64`` (2037):
  a 64-bit stamp (2019) Nmap's NULL probe names ``time``; ``time-udp`` (37/udp):
  the current time for any datagram (the script's output is masked).
* ``cccam`` (12000): 16 random-looking bytes per connection, then closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import itertools
import json
import re
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.script_servers_brokers_vpn import serve_tcp, serve_udp
from tests.e2e.tls_servers import make_certificate
from vscand.scripts.builtin.cccam_version import looks_random

Route = Callable[[str, str, dict[str, str], bytes], bytes]

SOAP = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n<soapenv:Body>\n'
    '<RetrieveServiceContentResponse xmlns="urn:internalvim25"><returnval>'
    '<rootFolder type="Folder">ha-folder-root</rootFolder>'
    "<about><name>{name}</name><fullName>{name} {version} build-{build}</fullName>"
    "<vendor>VMware, Inc.</vendor><version>{version}</version><build>{build}</build>"
    "{locale}<osType>{ostype}</osType>{productline}<apiType>HostAgent</apiType>"
    "<apiVersion>{version}</apiVersion></about></returnval>"
    "</RetrieveServiceContentResponse>\n</soapenv:Body>\n</soapenv:Envelope>"
)


def soap(name: str, version: str, build: str, ostype: str, *, full: bool) -> bytes:
    locale = "<localeVersion>INTL</localeVersion>" + ("<localeBuild>000</localeBuild>" * full)
    productline = "<productLineId>embeddedEsx</productLineId>" if full else ""
    return SOAP.format(
        name=name, version=version, build=build, ostype=ostype, locale=locale,
        productline=productline,
    ).encode()  # fmt: skip


def response(
    status: str, body: bytes, headers: tuple[str, ...] = (), length: int | None = None
) -> bytes:
    date = "Sat, 01 Jan 2000 00:00:00 GMT"  # fixed: fingerprints do not depend on the clock
    size = len(body) if length is None else length
    head = [f"HTTP/1.1 {status}", f"Date: {date}", *headers, f"Content-Length: {size}",
            "Connection: close"]  # fmt: skip
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_METHOD = re.compile(rb"[A-Z]{1,16}( |\Z)")


def read_request(conn: socket.socket) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request; None at once for what cannot be one (a web server's 400), and
    after 2 s of an unfinished one (nmap's probes then move on sooner)."""
    conn.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            return None
        if not chunk:
            return None
        data += chunk
        if not _METHOD.match(data[:17]) or b"\n" in data.split(b"\r\n", 1)[0] or len(data) > 65536:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    want = int(headers.get("content-length", "0") or 0)
    while len(body) < want:
        chunk = conn.recv(4096)
        if not chunk:
            break
        body += chunk
    return parts[0], parts[1], headers, body


BAD_REQUEST = response("400 Bad Request", b"<html><body>Bad request</body></html>")
PAGE = b"<html><head><title>Welcome</title></head><body>It works.</body></html>\n"


def http_handler(route: Route) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        request = read_request(conn)
        conn.sendall(BAD_REQUEST if request is None else route(*request))

    return handle


Handler = Callable[[socket.socket], None]


def tls_handler(context: ssl.SSLContext, inner: Handler) -> Handler:
    def handle(conn: socket.socket) -> None:
        try:
            wrapped = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            inner(wrapped)
        finally:
            wrapped.close()

    return handle


def vmware_http(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    if method == "POST" and path == "/sdk":
        xml = soap("VMware ESXi", "6.7.0", "8169922", "vmnix-x86", full=True)
        return response("200 OK", xml, ("Content-Type: text/xml; charset=utf-8",))
    return response("200 OK", PAGE, ("Content-Type: text/html",))


ESX_WELCOME = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN">\n<html>\n<head>\n'
    b"<title>Welcome to VMware ESX Server 4.1.0</title>\n\n</head>\n<body></body>\n</html>\n"
)


def vmware_https(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    if method == "POST" and path == "/sdk":
        xml = soap("VMware ESX", "4.1.0", "348481", "vmnix-x86", full=False)
        return response("200 OK", xml, ("Content-Type: text/xml; charset=utf-8",))
    return response("200 OK", ESX_WELCOME, ("Content-Type: text/html",))


def vmware_lying(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    if method == "POST" and path == "/sdk":
        xml = soap("VMware ESXi", "7.0.3", "1", "vmnix-x86", full=True)
        return response("200 OK", xml[:200], ("Content-Type: text/xml",), length=len(xml))
    return response("200 OK", PAGE, ("Content-Type: text/html",))


def agent_log(computer: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet type="text/xsl" '
        'href="FrameworkLog.xsl"?>\n<naLog><version>4.5.0.1852</version>'
        f"<ComputerName>{computer}</ComputerName><ePOServerName>EPOSERVER</ePOServerName>"
        "<AgentGUID>D2E157F4-B917-4D31-BEF0-32074BADF081</AgentGUID>"
        "<Log><Component>Agent</Component><Message>Agent started</Message></Log></naLog>\n"
    ).encode()


def mcafee(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    if "MSIE" in headers.get("user-agent", ""):
        return response("200 OK", agent_log("TESTSERVER"), ("Content-Type: text/xml",))
    return response("200 OK", PAGE, ("Content-Type: text/html",))


def mcafee_named(conn: socket.socket) -> None:
    if read_request(conn) is None:
        conn.sendall(BAD_REQUEST)
        return
    head = b"HTTP/1.0 200 OK\r\nServer: Agent-ListenServer-HttpSvr/1.0\r\n"
    body = agent_log("EPOAGENT").replace(b"<naLog><version>4.5.0.1852</version>", b"<naLog>")
    body = body.replace(b"</ComputerName>", b"</ComputerName><version>4.6.0.3122</version>")
    conn.sendall(head + b"Content-Type: text/xml\r\n\r\n" + body)


class OvsAgent(http.server.BaseHTTPRequestHandler):
    """Oracle VM Server agent 3.0.1: Python's SimpleXMLRPCServer behind an address check."""

    timeout = 2  # an unfinished request line is dropped (nmap's probes move on sooner)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        peer = self.client_address
        self.send_error(403, f"Unauthorized access attempt from ('{peer[0]}', {peer[1]})!")

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_ovs(port: int) -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), OvsAgent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


def netbuster(conn: socket.socket) -> None:
    # The banner, then the close once the client has spoken (or after 0.5 s of silence):
    # closing at once raced every probe (the probe written to a closed socket drew a reset
    # that could discard the banner), so which probes had a response — fingerprint-strings'
    # output — changed from run to run, for nmap and for us. The script's view is the same:
    # no "\r", then the close.
    conn.sendall(b"NetBus 1.70")
    conn.settimeout(0.5)
    with contextlib.suppress(OSError):
        conn.recv(4096)


def netbus(conn: socket.socket) -> None:
    conn.sendall(b"NetBus 1.70\r")
    if conn.recv(4096):
        conn.sendall(b"Access;1\r")
        conn.recv(4096)


def netbus_silent(conn: socket.socket) -> None:
    conn.sendall(b"NetBus 1.70\r")
    conn.recv(4096)
    conn.settimeout(15)
    conn.recv(4096)


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def nson_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"d" + b"".join(netstring(b"s" + k) + netstring(v) for k, v in items)


def openlookup(conn: socket.socket) -> None:
    host, port = conn.getpeername()[:2]
    address = b"a" + netstring(b"s" + host.encode()) + netstring(b"i%d" % port)
    options = nson_dict(
        [(b"http_port", b"i5851"), (b"sync_port", b"i5850"),
         (b"timestamp", b"f1306000000.25"), (b"version", b"s2.7"), (b"your_address", address)]
    )  # fmt: skip
    hello = nson_dict([(b"method", b"shello"), (b"options", options)])
    conn.sendall(netstring(hello))
    conn.recv(4096)


#: 2000-01-01T00:00:00 and 2019-02-02T11:39:44 (first byte 0xe0: Nmap's time match)
TIME_2000 = struct.pack(">I", 946684800 + 2208988800)
TIME_2019_64 = bytes.fromhex("e000000000000000")


def time_fixed(answer: bytes) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        conn.sendall(answer)

    return handle


def time_now(_datagram: bytes) -> bytes:
    return struct.pack(">I", (int(time.time()) + 2208988800) & 0xFFFFFFFF)


def random_greetings() -> Callable[[socket.socket], None]:
    """Each connection its own 16 bytes (a deterministic series, each passing looksRandom)."""
    series = (hashlib.sha256(b"cccam-%d" % i).digest()[:16] for i in itertools.count())
    pool = (data for data in series if looks_random(data))
    lock = threading.Lock()

    def handle(conn: socket.socket) -> None:
        with lock:
            data = next(pool)
        conn.sendall(data)
        time.sleep(0.2)

    return handle


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="vscand-agents-"))
    cert = make_certificate(workdir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    ports = {
        "vmware-http": serve_tcp(80, http_handler(vmware_http)),
        "vmware-https": serve_tcp(443, tls_handler(context, http_handler(vmware_https))),
        "vmware-lying": serve_tcp(8080, http_handler(vmware_lying)),
        "ovs": serve_ovs(8899),
        "mcafee": serve_tcp(8081, http_handler(mcafee)),
        "mcafee-named": serve_tcp(8082, mcafee_named),
        "netbuster": serve_tcp(12345, netbuster),
        "netbus": serve_tcp(12346, netbus),
        "netbus-silent": serve_tcp(12347, netbus_silent),
        "openlookup": serve_tcp(5850, openlookup),
        "time": serve_tcp(37, time_fixed(TIME_2000)),
        "time64": serve_tcp(2037, time_fixed(TIME_2019_64)),
        "cccam": serve_tcp(12000, random_greetings()),
        "time-udp": serve_udp(37, time_now),
    }
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
