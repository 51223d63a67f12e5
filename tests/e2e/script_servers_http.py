"""Lookalike servers for the HTTP / unrecognised-service script test (a child process).

``python -m tests.e2e.script_servers_http '{"case": port, ...}'`` serves every
case on its 127.0.0.1 port, prints ``ready`` and serves until stdin closes.
No response carries a date or anything else that changes between runs.

* ``hnap``: an HTTP server (``Server: lighttpd/1.4.28``, so Nmap's probes name
  it) whose ``GET /HNAP1`` answers a D-Link style HNAP ``DeviceSettings``
  document (published HNAP 1.0 element names); every other path 404.
* ``trane``: ``/evox/about`` and ``/evox/equipment/installedSummary`` as a
  Trane Tracer SC writes them (``<obj .../>`` with ``name="..." val="..."``,
  two equipment entries); every other path 404.
* ``trane-broken`` (hostile): ``/evox/about`` without ``hardwareSerialNumber``:
  NSE's script dies on it (``ERROR: Script execution failed``).
* ``hnap-hostile`` (hostile): ``/HNAP1`` answers 200 with a Content-Length far
  beyond what it sends, then closes: nothing is set.
* ``unknown``: a binary service no probe matches: greets with bytes mixing
  short and long printable runs, backslashes and quotes, then echoes a slice
  of each request between binary bytes (fingerprint-strings).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable

HNAP_BODY = b"""<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
<soap:Body>
<DeviceSettings xmlns="http://purenetworks.com/HNAP1/">
  <Type>GatewayWithWiFi</Type>
  <DeviceName>DIR-865L</DeviceName>
  <VendorName>D-Link</VendorName>
  <ModelDescription>Wireless AC1750 Dual Band Cloud Router</ModelDescription>
  <ModelName>DIR-865L</ModelName>
  <FirmwareVersion>1.07, 2015/04/14</FirmwareVersion>
  <PresentationURL>http://dlinkrouter.local/</PresentationURL>
  <SOAPActions>
    <string>http://purenetworks.com/HNAP1/GetDeviceSettings</string>
    <string>http://purenetworks.com/HNAP1/SetDeviceSettings</string>
    <string>http://purenetworks.com/HNAP1/GetWLanRadios</string>
  </SOAPActions>
  <SubDeviceURLs></SubDeviceURLs>
  <Tasks/>
</DeviceSettings>
</soap:Body>
</soap:Envelope>
"""

ABOUT = b"""<?xml version="1.0" encoding="UTF-8"?>
<obj is="obix:About" href="/evox/about/">
  <str name="obixVersion" val="1.0"/>
  <str name="serverName" val="TRANE-SC-01"/>
  <abstime name="serverTime" val="2014-09-08T11:25:03-05:00"/>
  <abstime name="serverBootTime" val="2014-09-03T08:11:44-05:00"/>
  <str name="vendorName" val="Trane"/>
  <uri name="vendorUrl" val="http://www.trane.com"/>
  <str name="productName" val="Tracer SC"/>
  <str name="productVersion" val="v4.20.1127 (release)"/>
  <uri name="productUrl" val="http://www.trane.com/TracerSC"/>
  <str name="modelName" val="TracerSC"/>
  <str name="kernelVersion" val="Linux 2.6.30_HwVer12AB-hydra"/>
  <str name="hardwareType" val="HwVer12AB"/>
  <str name="hardwareSerialNumber" val="E13D01234"/>
</obj>
"""

SUMMARY = b"""<?xml version="1.0" encoding="UTF-8"?>
<obj href="/evox/equipment/installedSummary">
<list name="equipment" of="obix:obj">
<obj>
  <uri name="equipmentUri" val="/evox/equipment/ahu/1"/>
  <str name="displayName" val="AHU-1"/>
  <str name="deviceName" val="Air Handler 1"/>
  <str name="equipmentFamily" val="AirHandler"/>
  <uri name="roleDocument" val="/evox/roles/ahu"/>
  <bool name="isOffline" val="false"/>
</obj>
<obj>
  <uri name="equipmentUri" val="/evox/equipment/chiller/2"/>
  <str name="displayName" val="Chiller 2"/>
  <str name="equipmentFamily" val="Chiller"/>
  <bool name="isOffline" val="true"/>
</obj>
</list>
</obj>
"""


def http_response(status: str, body: bytes, server: str, *, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nServer: {server}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


Pages = dict[str, tuple[str, bytes]]


def http_handler(
    pages: Pages, server: str, *, lie: set[str] | None = None
) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        parts = data.split(b"\r\n", 1)[0].split(b" ")
        path = parts[1].decode("latin-1") if len(parts) > 1 else ""
        status, body = pages.get(path, ("404 Not Found", b"<html>not found</html>\n"))
        length = 1 << 30 if lie and path in lie else None
        conn.sendall(http_response(status, body, server, length=length))

    return handle


GREETING = b'\x01\x02vsd ab cd\tef  gh\x00hello  world\xff\xfexyz\\x41 q\\"uote\\n end\r\n'


def unknown_handler(conn: socket.socket) -> None:
    conn.sendall(GREETING)
    try:
        data = conn.recv(4096)
    except TimeoutError:
        return
    if data:
        conn.sendall(b"\x00\x00ECHO " + data[:40] + b"\x80\x81 \t tail\\ ab\x00abcd")


HANDLERS: dict[str, Callable[[socket.socket], None]] = {
    "hnap": http_handler({"/HNAP1": ("200 OK", HNAP_BODY)}, "lighttpd/1.4.28"),
    "hnap-hostile": http_handler(
        {"/HNAP1": ("200 OK", HNAP_BODY[:200])}, "lighttpd/1.4.28", lie={"/HNAP1"}
    ),
    "trane": http_handler(
        {"/evox/about": ("200 OK", ABOUT), "/evox/equipment/installedSummary": ("200 OK", SUMMARY)},
        "lighttpd/1.4.28",
    ),
    "trane-broken": http_handler(
        {"/evox/about": ("200 OK", ABOUT.replace(b"hardwareSerialNumber", b"serial"))},
        "lighttpd/1.4.28",
    ),
    "unknown": unknown_handler,
}


def serve(port: int, handler: Callable[[socket.socket], None]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                handler(conn)

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def main() -> None:
    ports: dict[str, int] = json.loads(sys.argv[1])
    for case, port in ports.items():
        serve(port, HANDLERS[case])
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
