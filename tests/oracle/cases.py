# ruff: noqa: E501  (response bytes and descriptions read best on one line)
"""Oracle cases: one response each, replayed to ``nmap -sV`` and to ``vscan match``.

Every response here was written for this test-suite (realistic banners of common
software, or inputs for the custom probe files in ``probes/``).  A case names the
probe file (``"shipped"`` = Nmap's installed nmap-service-probes, otherwise a file
in ``probes/``), the probe whose answer the response is, and the bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBES_DIR = HERE / "probes"
SHIPPED = "shipped"


@dataclass(frozen=True)
class Case:
    id: str
    probes: str  # "shipped" or a file name under probes/
    probe: str  # probe name (TCP)
    response: bytes
    desc: str
    category: str
    #: part of the live subset (custom probe files only: short waits)
    live: bool = False

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.response).hexdigest()[:16]


def probe_file_path(probes: str) -> Path | None:
    """The custom file's path, or None for the shipped file."""
    return None if probes == SHIPPED else PROBES_DIR / probes


# -- builders for binary responses ------------------------------------------


def mysql_packet(payload: bytes, seq: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def mysql_greeting(version: bytes, plugin: bytes = b"mysql_native_password") -> bytes:
    payload = (
        b"\x0a"
        + version
        + b"\0"
        + struct.pack("<I", 0x2A)
        + b"Zq3#k9!a"
        + b"\0"
        + struct.pack("<H", 0xF7FF)
        + b"\x21"
        + struct.pack("<H", 0x0002)
        + struct.pack("<H", 0x81FF)
        + b"\x15"
        + b"\0" * 10
        + b"W7&pL2@xR5$m"
        + b"\0"
        + plugin
        + b"\0"
    )
    return mysql_packet(payload)


def mysql_error(code: int, message: bytes) -> bytes:
    return mysql_packet(b"\xff" + struct.pack("<H", code) + message)


def dns_version_bind_tcp(txt: bytes, qname_case: bytes = b"\x07version\x04bind") -> bytes:
    msg = (
        b"\x00\x06\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00"
        + qname_case
        + b"\x00\x00\x10\x00\x03"
        + b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00"
        + struct.pack(">H", len(txt) + 1)
        + bytes([len(txt)])
        + txt
    )
    return struct.pack(">H", len(msg)) + msg


def http(status: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


DATE = b"Date: Tue, 09 Jan 2024 10:11:12 GMT"


def _c(
    cid: str, probes: str, probe: str, response: bytes, desc: str, category: str, live: bool = False
) -> Case:
    return Case(cid, probes, probe, response, desc, category, live)


S = SHIPPED
CASES: list[Case] = []
add = CASES.append

# == shipped file: NULL-probe banners ========================================
for cid, banner, desc in [
    (
        "ssh-openssh-ubuntu",
        b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.4\r\n",
        "OpenSSH on Ubuntu (two o-CPEs, last wins)",
    ),
    ("ssh-openssh-debian", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\n", "OpenSSH on Debian"),
    ("ssh-openssh-freebsd", b"SSH-2.0-OpenSSH_7.8 FreeBSD-20180909\r\n", "OpenSSH on FreeBSD"),
    ("ssh-openssh-plain", b"SSH-2.0-OpenSSH_6.6.1\r\n", "OpenSSH without distribution"),
    ("ssh-openssh-rhel", b"SSH-2.0-OpenSSH_7.4\r\n", "OpenSSH 7.4"),
    ("ssh-openssh-proto199", b"SSH-1.99-OpenSSH_3.9p1\r\n", "OpenSSH protocol 1.99"),
    ("ssh-dropbear", b"SSH-2.0-dropbear_2020.81\r\n", "Dropbear"),
    ("ssh-cisco", b"SSH-1.99-Cisco-1.25\r\n", "Cisco SSH"),
    ("ssh-libssh", b"SSH-2.0-libssh_0.9.6\r\n", "libssh server"),
    (
        "ssh-unknown-soft",
        b"SSH-2.0-ZzqqServer_1.0\r\n",
        "unknown SSH server: softmatch with template",
    ),
    ("ssh-paramiko", b"SSH-2.0-paramiko_2.11.0\r\n", "Paramiko"),
    ("ftp-proftpd", b"220 ProFTPD 1.3.5e Server (Debian) [::ffff:127.0.0.1]\r\n", "ProFTPD"),
    (
        "ftp-proftpd-noversion",
        b"220 ProFTPD Server (ProFTPD Default Installation) [127.0.0.1]\r\n",
        "ProFTPD without version",
    ),
    ("ftp-vsftpd", b"220 (vsFTPd 3.0.3)\r\n", "vsftpd"),
    (
        "ftp-pureftpd",
        b"220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------\r\n220-You are user number 1 of 50 allowed.\r\n220-Local time is now 10:11. Server port: 21.\r\n220-This is a private system - No anonymous login\r\n220 You will be disconnected after 15 minutes of inactivity.\r\n",
        "Pure-FTPd",
    ),
    (
        "ftp-filezilla",
        b"220-FileZilla Server 0.9.60 beta\r\n220-written by Tim Kosse (tim.kosse@filezilla-project.org)\r\n220 Please visit https://filezilla-project.org/\r\n",
        "FileZilla Server",
    ),
    ("ftp-msftpd", b"220 Microsoft FTP Service\r\n", "Microsoft ftpd"),
    (
        "ftp-generic-soft",
        b"220 Welcome to the qqzz archive FTP service.\r\n",
        "generic FTP greeting (softmatch expected)",
    ),
    ("smtp-postfix", b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n", "Postfix on Ubuntu"),
    ("smtp-postfix-plain", b"220 mx1.example.net ESMTP Postfix\r\n", "Postfix"),
    (
        "smtp-exim",
        b"220 mx.example.net ESMTP Exim 4.96 Tue, 09 Jan 2024 10:11:12 +0000\r\n",
        "Exim",
    ),
    (
        "smtp-exim-ubuntu",
        b"220 host.example.com ESMTP Exim 4.95 Ubuntu Tue, 09 Jan 2024 10:11:12 +0000\r\n",
        "Exim on Ubuntu",
    ),
    (
        "smtp-sendmail",
        b"220 host.example.com ESMTP Sendmail 8.15.2/8.15.2; Tue, 9 Jan 2024 10:11:12 GMT\r\n",
        "Sendmail",
    ),
    (
        "smtp-exchange",
        b"220 EXCH01.corp.example.com Microsoft ESMTP MAIL Service ready at Tue, 9 Jan 2024 10:11:12 +0000\r\n",
        "Microsoft Exchange smtpd",
    ),
    ("smtp-opensmtpd", b"220 mail.example.com ESMTP OpenSMTPD\r\n", "OpenSMTPD"),
    ("smtp-generic", b"220 relay.example.com ESMTP ready\r\n", "generic ESMTP greeting"),
    ("pop3-dovecot", b"+OK Dovecot (Ubuntu) ready.\r\n", "Dovecot pop3d"),
    ("pop3-dovecot-plain", b"+OK Dovecot ready.\r\n", "Dovecot pop3d, no distribution"),
    (
        "pop3-generic",
        b"+OK POP3 server ready <1896.697170952@mail.example.com>\r\n",
        "generic POP3 greeting",
    ),
    (
        "imap-dovecot",
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
        "Dovecot imapd",
    ),
    (
        "imap-courier",
        b"* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE ACL ACL2=UNION STARTTLS] Courier-IMAP ready. Copyright 1998-2018 Double Precision, Inc.  See COPYING for distribution information.\r\n",
        "Courier IMAP",
    ),
    (
        "imap-cyrus",
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE STARTTLS AUTH=PLAIN SASL-IR] mail.example.com Cyrus IMAP v2.4.17-Debian-2.4.17+caldav~beta9-3 server ready\r\n",
        "Cyrus imapd",
    ),
    ("imap-generic", b"* OK IMAP4rev1 Service Ready\r\n", "generic IMAP greeting"),
    ("vnc-rfb38", b"RFB 003.008\n", "VNC RFB 3.8"),
    ("vnc-rfb33", b"RFB 003.003\n", "VNC RFB 3.3"),
    (
        "vmware-auth-ssl",
        b"220 VMware Authentication Daemon Version 1.10: SSL Required, ServerDaemonProtocol:SOAP, MKSDisplayProtocol:VNC , , NFCSSL supported/t\r\n",
        "ssl/vmware-auth: tunnel ssl without restart",
    ),
    (
        "telnet-iac",
        b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27",
        "telnet option negotiation (binary)",
    ),
    (
        "nntp-inn",
        b"200 news.example.com InterNetNews server INN 2.6.4 ready (transit mode)\r\n",
        "INN nntpd",
    ),
    ("mysql-5-7", mysql_greeting(b"5.7.42-0ubuntu0.18.04.1"), "MySQL 5.7 handshake (binary)"),
    ("mysql-8", mysql_greeting(b"8.0.35", b"caching_sha2_password"), "MySQL 8 handshake"),
    (
        "mysql-mariadb",
        mysql_greeting(b"5.5.5-10.6.12-MariaDB-0ubuntu0.22.04.1"),
        "MariaDB handshake",
    ),
    (
        "mysql-denied",
        mysql_error(1130, b"Host '127.0.0.1' is not allowed to connect to this MySQL server"),
        "MySQL host not allowed",
    ),
    ("mysql-too-many", mysql_error(1040, b"Too many connections"), "MySQL too many connections"),
    ("mysql-4", mysql_greeting(b"4.1.22-community-nt"), "MySQL 4.1"),
    ("ftp-serv-u", b"220 Serv-U FTP Server v15.1 ready...\r\n", "Serv-U"),
    (
        "ssh-bitvise",
        b"SSH-2.0-7.23 FlowSsh: Bitvise SSH Server (WinSSHD) 7.23: free only for personal non-commercial use\r\n",
        "Bitvise WinSSHD",
    ),
    ("nomatch-null", b"QQZZ-UNKNOWN-GREETING 7\r\n", "no line matches: NOMATCH, table name"),
]:
    add(_c(cid, S, "NULL", banner, desc, "shipped-null"))

# == shipped file: other probes ===============================================
APACHE_HDRS = [
    DATE,
    b"Server: Apache/2.4.57 (Debian)",
    b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT",
    b"Content-Type: text/html",
]
for cid, probe, resp, desc, cat in [
    (
        "http-apache-debian",
        "GetRequest",
        http(b"200 OK", APACHE_HDRS, b"<html><body>It works!</body></html>\n"),
        "Apache on Debian",
        "shipped-http",
    ),
    (
        "http-apache-ubuntu",
        "GetRequest",
        http(
            b"200 OK",
            [DATE, b"Server: Apache/2.4.52 (Ubuntu)", b"Content-Type: text/html"],
            b"<html></html>",
        ),
        "Apache on Ubuntu",
        "shipped-http",
    ),
    (
        "http-apache-centos",
        "GetRequest",
        http(
            b"403 Forbidden",
            [
                DATE,
                b"Server: Apache/2.4.6 (CentOS) OpenSSL/1.0.2k-fips PHP/7.4.33",
                b"Content-Type: text/html; charset=iso-8859-1",
            ],
            b"<html>forbidden</html>",
        ),
        "Apache with modules",
        "shipped-http",
    ),
    (
        "http-apache-bare",
        "GetRequest",
        http(b"200 OK", [DATE, b"Server: Apache", b"Content-Type: text/html"], b"x"),
        "Apache without version",
        "shipped-http",
    ),
    (
        "http-nginx",
        "GetRequest",
        http(
            b"200 OK",
            [b"Server: nginx/1.24.0", DATE, b"Content-Type: text/html"],
            b"<h1>Welcome to nginx!</h1>",
        ),
        "nginx",
        "shipped-http",
    ),
    (
        "http-nginx-ubuntu",
        "GetRequest",
        http(
            b"301 Moved Permanently",
            [b"Server: nginx/1.18.0 (Ubuntu)", DATE, b"Location: https://example.com/"],
            b"",
        ),
        "nginx on Ubuntu",
        "shipped-http",
    ),
    (
        "http-iis10",
        "GetRequest",
        http(
            b"200 OK",
            [
                b"Content-Type: text/html",
                b"Server: Microsoft-IIS/10.0",
                b"X-Powered-By: ASP.NET",
                DATE,
            ],
            b"<html>IIS</html>",
        ),
        "IIS 10",
        "shipped-http",
    ),
    (
        "http-iis75",
        "GetRequest",
        http(
            b"404 Not Found",
            [b"Content-Type: text/html", b"Server: Microsoft-IIS/7.5", DATE],
            b"nf",
        ),
        "IIS 7.5",
        "shipped-http",
    ),
    (
        "http-lighttpd",
        "GetRequest",
        http(b"200 OK", [b"Content-Type: text/html", b"Server: lighttpd/1.4.59", DATE], b"hi"),
        "lighttpd",
        "shipped-http",
    ),
    (
        "http-jetty",
        "GetRequest",
        http(
            b"200 OK",
            [DATE, b"Content-Type: text/html;charset=utf-8", b"Server: Jetty(9.4.51.v20230217)"],
            b"ok",
        ),
        "Jetty",
        "shipped-http",
    ),
    (
        "http-tomcat-coyote",
        "GetRequest",
        http(
            b"200 ",
            [b"Content-Type: text/html;charset=UTF-8", DATE, b"Server: Apache-Coyote/1.1"],
            b"ok",
        ),
        "Apache Coyote",
        "shipped-http",
    ),
    (
        "http-python",
        "GetRequest",
        b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n"
        + DATE
        + b"\r\nContent-type: text/html\r\n\r\n<html></html>",
        "Python SimpleHTTPServer",
        "shipped-http",
    ),
    (
        "http-caddy",
        "GetRequest",
        http(b"200 OK", [b"Server: Caddy", DATE, b"Content-Type: text/plain"], b"hello"),
        "Caddy",
        "shipped-http",
    ),
    (
        "http-generic",
        "GetRequest",
        http(b"200 OK", [DATE, b"Content-Type: text/html"], b"<html>hello</html>"),
        "HTTP without Server header (soft?)",
        "shipped-http",
    ),
    (
        "http-options-fallback",
        "HTTPOptions",
        http(
            b"200 OK",
            [
                DATE,
                b"Server: Apache/2.4.41 (Ubuntu)",
                b"Allow: GET,POST,OPTIONS,HEAD",
                b"Content-Type: text/html",
            ],
        ),
        "HTTPOptions answered, GetRequest lines via fallback",
        "shipped-chain",
    ),
    (
        "http-options-nginx",
        "HTTPOptions",
        http(
            b"405 Not Allowed",
            [b"Server: nginx/1.22.1", DATE, b"Content-Type: text/html"],
            b"<html>405</html>",
        ),
        "HTTPOptions -> nginx",
        "shipped-chain",
    ),
    (
        "http-404-fallback",
        "FourOhFourRequest",
        http(
            b"404 Not Found",
            [
                DATE,
                b"Server: Apache/2.4.38 (Debian)",
                b"Content-Type: text/html; charset=iso-8859-1",
            ],
            b"<title>404 Not Found</title>",
        ),
        "FourOhFourRequest -> GetRequest fallback",
        "shipped-chain",
    ),
    (
        "rtsp-fallback-http",
        "RTSPRequest",
        http(
            b"400 Bad Request", [b"Server: nginx/1.25.3", DATE, b"Content-Type: text/html"], b"bad"
        ),
        "RTSPRequest answered with HTTP -> GetRequest",
        "shipped-chain",
    ),
    (
        "rtsp-server",
        "RTSPRequest",
        b"RTSP/1.0 200 OK\r\nCSeq: 0\r\nPublic: OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY, PAUSE\r\nServer: GStreamer RTSP server\r\n\r\n",
        "GStreamer RTSP",
        "shipped-probe",
    ),
    (
        "sip-asterisk",
        "SIPOptions",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP nm;branch=foo\r\nFrom: <sip:nm@nm>;tag=root\r\nTo: <sip:nm2@nm2>;tag=as1\r\nCall-ID: 50000\r\nCSeq: 42 OPTIONS\r\nServer: Asterisk PBX 18.12.1\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\nContent-Length: 0\r\n\r\n",
        "Asterisk SIP over TCP",
        "shipped-probe",
    ),
    (
        "sip-fallback-http",
        "SIPOptions",
        http(b"400 Bad Request", [b"Server: Microsoft-IIS/8.5", DATE], b""),
        "SIPOptions answered with HTTP -> GetRequest",
        "shipped-chain",
    ),
    (
        "redis-get",
        "GetRequest",
        b"-ERR wrong number of arguments for 'get' command\r\n",
        "Redis answering GET",
        "shipped-probe",
    ),
    (
        "redis-info",
        "redis-server",
        b"$3000\r\n# Server\r\nredis_version:7.0.12\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n",
        "Redis INFO",
        "shipped-probe",
    ),
    (
        "redis-denied",
        "redis-server",
        b"-ERR operation not permitted\r\n",
        "Redis protected",
        "shipped-probe",
    ),
    (
        "memcached-stats",
        "Memcache",
        b"STAT pid 1234\r\nSTAT uptime 5000\r\nSTAT time 1704795072\r\nSTAT version 1.6.21\r\nSTAT libevent 2.1.12-stable\r\nEND\r\n",
        "memcached stats",
        "shipped-probe",
    ),
    (
        "memcached-ubuntu",
        "Memcache",
        b"STAT pid 99\r\nSTAT uptime 12\r\nSTAT time 1704795072\r\nSTAT version 1.5.22 (Ubuntu)\r\nEND\r\n",
        "memcached on Ubuntu",
        "shipped-probe",
    ),
    (
        "memcached-generic",
        "GenericLines",
        b"ERROR\r\nERROR\r\n",
        "memcached on GenericLines",
        "shipped-probe",
    ),
    (
        "dns-bind-ubuntu",
        "DNSVersionBindReqTCP",
        dns_version_bind_tcp(b"9.18.18-0ubuntu0.22.04.1-Ubuntu"),
        "BIND over TCP: UDP lines via cross-protocol fallback",
        "shipped-chain",
    ),
    (
        "dns-bind-debian",
        "DNSVersionBindReqTCP",
        dns_version_bind_tcp(b"9.16.44-Debian"),
        "BIND on Debian, cross-protocol",
        "shipped-chain",
    ),
    (
        "dns-bind-plain",
        "DNSVersionBindReqTCP",
        dns_version_bind_tcp(b"9.11.4-P2-RedHat-9.11.4-26.P2.el7"),
        "BIND RedHat, cross-protocol",
        "shipped-chain",
    ),
    (
        "dns-dnsmasq",
        "DNSVersionBindReqTCP",
        dns_version_bind_tcp(b"dnsmasq-2.86"),
        "dnsmasq",
        "shipped-chain",
    ),
    (
        "null-cheat-ssh-genericlines",
        "GenericLines",
        b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u1\r\n",
        "late SSH banner recognised via NULL lines (NULL cheat)",
        "shipped-cheat",
    ),
    (
        "null-cheat-ftp-help",
        "Help",
        b"220 ProFTPD 1.3.6 Server (ProFTPD) [127.0.0.1]\r\n",
        "late FTP banner after HELP",
        "shipped-cheat",
    ),
    (
        "null-cheat-smtp-getrequest",
        "GetRequest",
        b"220 mail.example.org ESMTP Postfix\r\n",
        "SMTP greeting after GET",
        "shipped-cheat",
    ),
    (
        "help-ftp-reply",
        "Help",
        b"214-The following commands are recognized (* =>'s unimplemented):\r\n214-CWD     XCWD    CDUP    XCUP    SMNT*   QUIT    PORT    PASV\r\n214 Direct comments to root@example.com\r\n",
        "FTP HELP output",
        "shipped-probe",
    ),
    (
        "genericlines-smtp",
        "GenericLines",
        b"220 mail.example.com ESMTP Exim 4.94.2\r\n500 unrecognized command\r\n500 unrecognized command\r\n",
        "Exim with GenericLines replies",
        "shipped-probe",
    ),
    (
        "x11-denied",
        "X11Probe",
        b"\x00\x16\x0b\x00\x00\x00\x06\x00No protocol specified\n\x00\x00",
        "X11 access denied (binary)",
        "shipped-probe",
    ),
    (
        "postgres-error",
        "SMBProgNeg",
        b"E\x00\x00\x00\x4bSFATAL\x00C0A000\x00Munsupported frontend protocol 65363.19778: server supports 1.0 to 3.0\x00Fpostmaster.c\x00L2065\x00RProcessStartupPacket\x00\x00",
        "PostgreSQL answering SMB negotiate",
        "shipped-probe",
    ),
    ("ajp13-pong", "ajp", b"AB\x00\x01\x09", "AJP13 CPong (binary)", "shipped-probe"),
    ("mongodb-soft", "mongodb", b"\x00\x00\x00\x00", "short mongodb-probe reply", "shipped-probe"),
    (
        "java-rmi",
        "JavaRMI",
        b"\x4e\x00\x0e127.0.0.1\x00\x00\xc4\x12",
        "Java RMI endpoint ack (binary)",
        "shipped-probe",
    ),
    (
        "ldap-generic",
        "LDAPBindReq",
        b"0\x0c\x02\x01\x01a\x07\x0a\x01\x00\x04\x00\x04\x00",
        "LDAP bind success (binary)",
        "shipped-probe",
    ),
    (
        "getrequest-nomatch",
        "GetRequest",
        b"QQZZ strange reply\r\n",
        "nothing matches a GET reply: NOMATCH",
        "shipped-probe",
    ),
    (
        "http-server-long",
        "GetRequest",
        http(b"200 OK", [b"Server: Apache/2.4.57 (Unix) " + b"mod_zz/1.0 " * 10, DATE], b""),
        "Apache with a long Server header",
        "shipped-http",
    ),
]:
    add(_c(cid, S, probe, resp, desc, cat))

# == custom: templates.probes ================================================
T = "templates.probes"


def _t(cid: str, probe: str, resp: bytes, desc: str, live: bool = False) -> None:
    add(_c(cid, T, probe, resp, desc, "templates", live))


_t(
    "tpl-digits",
    "NULL",
    b"DIGITS abcdefghij\r\n",
    "$1..$9 and $12/$10 = $1 followed by a digit",
    live=True,
)
_t("tpl-zero", "NULL", b"ZERO word\r\n", "$0 is not a group: field fails")
_t(
    "tpl-nul-capture",
    "NULL",
    b"NUL ab\x00cd\r\n",
    "NUL in a capture cuts $1; $P drops it",
    live=True,
)
_t(
    "tpl-nul-long",
    "NULL",
    b"NUL ab\x00" + b"c" * 90 + b"\r\n",
    "NUL early in a capture longer than the field",
)
_t(
    "tpl-nul-first",
    "NULL",
    b"NUL \x00zz\r\n",
    "capture starting with NUL: only the literals remain",
)
_t(
    "tpl-soft-banner",
    "NULL",
    b"SOFTBANNER zzhost\r\n",
    "softmatch with templates in the NULL probe",
)
_t(
    "tpl-strip-empty",
    "NULL",
    b"STRIP |   |\r\n",
    "trailing ', ' and blanks stripped; blank product absent",
)
_t("tpl-strip-tabs", "NULL", b"STRIP  x \t| 1.0 |\r\n", "strip after a capture ending in tab")
_t("tpl-repeat", "NULL", b"REPEAT\r\n", "repeated p/ keeps the last; empty v// is absent")
for n in (77, 78, 79, 80):
    _t(
        f"tpl-plen-{n}",
        "TplLen",
        b"PLEN " + b"a" * n + b"\r\n",
        f"p/$1/ with a {n}-byte capture",
        live=(n == 79),
    )
for n in (76, 77, 78):
    _t(f"tpl-pxlen-{n}", "TplLen", b"PXLEN " + b"b" * n + b"\r\n", f"p/x$1/ with {n} bytes")
for n in (77, 78, 79):
    _t(f"tpl-pylen-{n}", "TplLen", b"PYLEN " + b"c" * n + b"\r\n", f"p/$1y/ with {n} bytes")
for n in (76, 77, 78):
    _t(f"tpl-pzlen-{n}", "TplLen", b"PZLEN " + b"c" * n + b"\r\n", f"p/$1yz/ with {n} bytes")
for n in (253, 254, 255):
    _t(
        f"tpl-ilen-{n}",
        "TplLen",
        b"ILEN " + b"i" * n + b"\r\n",
        f"i/$1/ (256-byte buffer) with {n} bytes",
    )
for n in (29, 30, 31):
    _t(
        f"tpl-olen-{n}",
        "TplLen",
        b"OLEN " + b"o" * n + b"\r\n",
        f"o/$1/ d/$1/ (32-byte buffers) with {n} bytes",
    )
for n in (78, 79):
    _t(f"tpl-hlen-{n}", "TplLen", b"HLEN " + b"h" * n + b"\r\n", f"h/$1/ with {n} bytes")
for n in (71, 72, 73):
    _t(f"tpl-clen-{n}", "TplLen", b"CLEN " + b"k" * n + b"\r\n", f"cpe:/a:$1 with {n} bytes")
for n in (78, 79, 80):
    _t(f"tpl-lit{n}", "TplLen", b"LIT%d\r\n" % n, f"literal-only product of {n} bytes")
_t(
    "tpl-vlen2-ok",
    "TplLen",
    b"VLEN2 " + b"v" * 40 + b" " + b"w" * 38 + b"\r\n",
    "two substitutions totalling 78",
)
_t(
    "tpl-vlen2-over",
    "TplLen",
    b"VLEN2 " + b"v" * 40 + b" " + b"w" * 39 + b"\r\n",
    "two substitutions totalling 79",
)
_t("tpl-psub-78", "TplLen", b"PSUB " + b"p\x01" * 78 + b"\r\n", "$P keeping 78 printable bytes")
_t("tpl-psub-79", "TplLen", b"PSUB " + b"p\x01" * 79 + b"\r\n", "$P keeping 79 printable bytes")
_t("tpl-ssub-78", "TplLen", b"SSUB " + b"a" * 39 + b"\r\n", "$SUBST growing 39 -> 78 bytes")
_t("tpl-ssub-80", "TplLen", b"SSUB " + b"a" * 40 + b"\r\n", "$SUBST growing 40 -> 80 bytes")
_t("tpl-ssub-mixed", "TplLen", b"SSUB x" + b"a" * 38 + b"\r\n", "$SUBST growing to 77 bytes")
_t(
    "tpl-isub-254",
    "TplLen",
    b"ISUB " + b"a" * 126 + b"\r\n",
    "extrainfo [$SUBST] reaching 254 inside brackets",
)
_t(
    "tpl-p16",
    "TplHelp",
    b"P16 W\x00O\x00R\x00K\x00G\x00R\x00O\x00U\x00P\x00",
    "$P over UTF-16LE text",
)
_t("tpl-subst", "TplHelp", b"SUBST 2_4_57\r\n", '$SUBST(1,"_",".")')
_t("tpl-subst2", "TplHelp", b"SUBST2 ab-cab-d\r\n", "$SUBST with multi-byte find and escaped args")
_t("tpl-subst-nul", "TplHelp", b"SUBNUL axb\x00cx\r\n", "$SUBST result cut at NUL")
_t(
    "tpl-subst-nul-long",
    "TplHelp",
    b"SUBNUL axb\x00" + b"c" * 90 + b"\r\n",
    "$SUBST result with an early NUL, longer than the field",
)
_t("tpl-i-both", "TplHelp", b"IBE\x00\x00\x01\x02IEND", "$I big and little endian", live=True)
_t("tpl-i-high", "TplHelp", b"IBE\xff\xfe\xfd\xfcIEND", "$I with high bytes")
_t("tpl-i8", "TplHelp", b"I8\x01\x02\x03\x04\x05\x06\x07\x08", "$I over 8 bytes")
_t("tpl-i8-max", "TplHelp", b"I8\xff\xff\xff\xff\xff\xff\xff\xff", "$I of 2**64-1")
_t("tpl-i9", "TplHelp", b"I9\x01\x02\x03\x04\x05\x06\x07\x08\x09", "$I over 9 bytes fails")
_t("tpl-i0", "TplHelp", b"I0X", "$I of an empty capture is 0")
_t("tpl-ibad", "TplHelp", b"IBAD\x01\x02", "$I with a bad byte-order string fails")
_t("tpl-hexgroup", "TplHelp", b"HEXG banana\r\n", "group numbers 0x1 and 01 (strtol base 0)")
_t("tpl-unknown-cmd", "TplHelp", b"UNK word\r\n", "unknown $COMMAND fails the field only")
_t("tpl-group-a", "TplHelp", b"GRPa\r\n", "$2/$3 above the last participating group fail")
_t("tpl-group-abc", "TplHelp", b"GRPabc\r\n", "all groups participate")
_t("tpl-dollar-literal", "TplHelp", b"DLR word\r\n", "$ followed by $ / end / space")
_t("tpl-allfields", "TplHelp", b"ALL Abc\r\n", "every field and all three CPE parts")
_t(
    "cpe-escape",
    "TplCpe",
    b"CPEESC A:b/C?d#e,f&x v\tW\r\n",
    "CPE escaping of substituted text, literal keeps case",
    live=True,
)
_t("cpe-escape-all", "TplCpe", b"CPEESC []@!$'()*+;=%<>\"\r\n", "every escaped CPE character")
_t("cpe-multi", "TplCpe", b"CPEMULTI One Two\r\n", "two o-CPEs: the last wins")
_t("cpe-order", "TplCpe", b"CPEORDER\r\n", "reported order a, h, o")
_t("cpe-badpart", "TplCpe", b"CPEBADPART\r\n", "a CPE with part x is ignored")
_t("cpe-fail-slot", "TplCpe", b"CPEFAIL " + b"z" * 80 + b"\r\n", "failed a-CPE empties its slot")
_t("cpe-fail-short", "TplCpe", b"CPEFAIL Zz\r\n", "second a-CPE replaces the first")
_t("cpe-p", "TplCpe", b"CPEP V\x00e\x00N\x00d\x00", "$P inside a CPE")
_t("cpe-subst", "TplCpe", b"CPESUB 1.2.3\r\n", "$SUBST inside a CPE")
_t("cpe-i", "TplCpe", b"CPEI\x00\x00\x10\x00", "$I inside a CPE")
_t("cpe-flag", "TplCpe", b"CPEFLAG Name\r\n", "cpe:/.../a flag letter ignored")
_t("cpe-upper", "TplCpe", b"cpeup ABC\r\n", "i-flag line, uppercase capture lower-cased in CPE")
_t("cpe-highbytes", "TplCpe", b"CPEHI caf\xe9 \x01x\r\n", "bytes >= 0x80 and controls inside a CPE")
_t("cpe-pipe-delim", "TplCpe", b"CPEPIPE Val\r\n", "cpe:|...| with another delimiter")
_t("cpe-nul", "TplCpe", b"CPENUL ab\x00cd\r\n", "NUL inside a CPE capture")
_t(
    "cpe-nul-long",
    "TplCpe",
    b"CPENUL ab\x00" + b"c" * 90 + b"\r\n",
    "NUL early in a CPE capture longer than the field",
)

# == custom: pcre.probes ======================================================
R = "pcre.probes"


def _r(cid: str, probe: str, resp: bytes, desc: str, live: bool = False) -> None:
    add(_c(cid, R, probe, resp, desc, "pcre", live))


_r("rx-null-z", "NULL", b"NZ ok\n", "\\Z before the final newline (NULL probe)")
_r("rx-null-z-miss", "NULL", b"NZ ok\n\n", "\\Z with two newlines")
_r("rx-z-nl", "Rx", b"ZED ok\n", "\\Z matches before a final \\n")
_r("rx-z-end", "Rx", b"ZED ok", "\\Z at the very end")
_r("rx-z-2nl", "Rx", b"ZED ok\n\n", "\\Z does not skip two newlines")
_r("rx-lz-nl", "Rx", b"LZ ok\n", "\\z only at the very end")
_r("rx-dollar-nl", "Rx", b"DOL ok\n", "$ before a final newline")
_r("rx-dollar-crlf", "Rx", b"DOL ok\r\n", "$ does not skip \\r\\n")
_r("rx-dollar-mid", "Rx", b"DOL ok\nmore", "$ is not multiline")
_r("rx-brace-literal", "Rx", b"BRACE a{,3}b", "{,3} is literal in PCRE 8.39", live=True)
_r("rx-brace-python", "Rx", b"BRACE aab", "{,3} is not a quantifier")
_r("rx-posix", "Rx", b"POSIX Hello 42 !?\r\n", "[[:alpha:]] [[:digit:]] [[:punct:]]")
_r("rx-posix-neg", "Rx", b"PNEG 12 34x", "[[:^alpha:]]")
_r("rx-hex1", "Rx", b"HEX1 \x05-J", "\\x5 is one hex digit", live=True)
_r("rx-hex1-miss", "Rx", b"HEX1 \x5a-J", "\\x5- is not \\x5a")
_r("rx-inline", "Rx", b"INL aBC", "(?i) mid-pattern")
_r("rx-inline-miss", "Rx", b"inl abc", "(?i) does not reach back")
_r("rx-inline2", "Rx", b"iNxY", "(?i)...(?-i)")
_r("rx-inline2-miss", "Rx", b"INXy", "(?-i) switches it off")
_r("rx-fold-ascii", "Rx", b"FOLD \xe4X", "i folds ASCII only")
_r("rx-fold-high", "Rx", b"FOLD \xc4x", "i does not fold 0xC4/0xE4", live=True)
_r("rx-oct", "Rx", b"OCT\x00\x01\n\x081", "\\0 octal escapes, \\0101 = \\010 '1'")
_r("rx-oct-miss", "Rx", b"OCT\x00\x01\nA", "\\0101 is not 'A'")
_r("rx-limit-short", "Rx", b"LIM aaaa", "nested quantifier on a short subject")
_r(
    "rx-limit-hit",
    "Rx",
    b"LIM " + b"a" * 30 + b"b",
    "PCRE match limit: no match, next line",
    live=True,
)
_r("rx-dot-s", "Rx", b"DOT a\nb\nEND", "s flag: . matches newline")
_r("rx-nodot", "Rx", b"NODOT a\nbEND", ". excludes newline without s")
_r("rx-nodot-cr", "Rx", b"NODOT a\rbEND", ". matches \\r")
_r("rx-ci", "Rx", b"CI-LINE Value\r\n", "i flag")
_r("rx-bref", "Rx", b"BREF aabb", "back-references")
_r("rx-bref-miss", "Rx", b"BREF abab", "back-references failing")
_r("rx-atomic", "Rx", b"ATOM aaab", "atomic group cannot give back")
_r("rx-poss", "Rx", b"POSS aaa", "possessive quantifier")
_r("rx-quote", "Rx", b"QE .*+?", "\\Q...\\E")
_r("rx-quote-miss", "Rx", b"QE abc", "\\Q...\\E literal only")
_r("rx-h", "Rx", b"HS \t word", "\\h horizontal space")
_r("rx-vt", "Rx", b"VT\x0bword", "\\s and VT (0x0B)")
_r("rx-vt-ff", "Rx", b"VT\x0cword", "\\s and FF")
_r("rx-w-high", "Rx", b"WORD ab\xe9cd", "\\w is ASCII-only")
_r("rx-d-high", "Rx", b"DIG \xb2\xb3", "\\d is ASCII-only")
_r("rx-d", "Rx", b"DIG 0123", "\\d digits")
_r("rx-unanchored", "Rx", b"xx MIDDLE found\r\n", "unanchored search")
_r("rx-lazy", "Rx", b"LAZY abc123", "lazy quantifier and $")
_r("rx-class-high", "Rx", b"CLS \x80\xff\xfe", "[\\x80-\\xff] class")
_r("rx-ci-class", "Rx", b"CIC aBc", "i flag with a class")
_r("rx-lookbehind", "Rx", b"LB isok", "lookbehind")
_r("rx-lookbehind-miss", "Rx", b"LB nope", "lookbehind failing")
_r("rx-cond", "Rx", b"COND <tag>", "conditional group")
_r("rx-cond-miss", "Rx", b"COND <tag", "conditional group failing")
_r("rx-keep", "Rx", b"KEEP value=42", "\\K resets the match start")
_r("rx-nl-final", "Rx", b"NL\nword\n", "$ with a final newline and a capture")
_r("rx-binary", "Rx", b"\x00\x01BIN\x01\x02", "binary pattern with $I")
_r("rx-empty-pattern", "Rx", b"zzz nothing else\r\n", "a pattern matching the empty string")

# == custom: chains.probes ====================================================
C = "chains.probes"


def _ch(cid: str, probe: str, resp: bytes, desc: str, live: bool = False) -> None:
    add(_c(cid, C, probe, resp, desc, "chains", live))


_ch("ch-null-hard", "NULL", b"NHARD 1.0\r\n", "hard match in NULL")
_ch("ch-null-soft", "NULL", b"NSOFT 2.0\r\n", "softmatch in NULL stays the answer", live=True)
_ch("ch-null-tls", "NULL", b"NTLS 3.1\r\n", "ssl/ service from NULL: tunnel ssl")
_ch("ch-null-nomatch", "NULL", b"NOTHING HERE\r\n", "no NULL line matches")
_ch("ch-own", "ChainA", b"A-OWN v1\r\n", "probe's own line first (fallback has one too)")
_ch("ch-fallback-b", "ChainA", b"B-LINE v2\r\n", "first fallback")
_ch("ch-fallback-c", "ChainA", b"C-LINE v3\r\n", "second fallback")
_ch("ch-cheat", "ChainA", b"CHEAT-BANNER late\r\n", "NULL cheat at the end of the chain", live=True)
_ch("ch-cheat-direct", "ChainC", b"CHEAT-BANNER c\r\n", "NULL cheat for a probe without fallback")
_ch(
    "ch-soft-shadows",
    "ChainA",
    b"SOFTFIRST\r\n",
    "own softmatch shadows the fallback's hard match",
    live=True,
)
_ch("ch-soft-direct", "ChainB", b"SOFTFIRST\r\n", "same response to ChainB: hard")
_ch("ch-softhard-soft", "ChainA", b"SOFTTHENHARD-S\r\n", "softmatch line before a hard line")
_ch("ch-softhard-hard", "ChainA", b"SOFTTHENHARD\r\n", "softmatch misses, hard line after it")
_ch("ch-null-soft-via", "ChainC", b"NSOFT 9\r\n", "NULL softmatch reached through the chain")
_ch("ch-nomatch-chain", "ChainA", b"Z-NOTHING\r\n", "whole chain misses")
_ch(
    "ch-cross-udp",
    "CrossTcp",
    b"XUDP abc\r\n",
    "TCP probe falling back to a UDP-only probe",
    live=True,
)
_ch("ch-cross-own", "CrossTcp", b"XOWN\r\n", "cross-protocol probe's own line")
_ch("ch-dual", "UsesDual", b"DUAL\r\n", "fallback name on both protocols: TCP preferred")
_ch("ch-later", "LaterFb", b"LATERX q\r\n", "fallback to a probe defined later")
_ch("ch-ssl-name", "SslNames", b"SSLZZ 4.2\r\n", "hard ssl/<x>: tunnel ssl, no restart", live=True)
_ch("ch-ssl-soft", "SslNames", b"SSLSOFT 5\r\n", "soft ssl/<x>: name kept, no tunnel", live=True)
_ch("ch-soft-ssl-plain", "SslNames", b"SOFTSSL\r\n", "soft match named ssl does nothing special")
_ch("ch-plain", "SslNames", b"PLAIN 1\r\n", "plain hard line after ssl lines")
_ch(
    "ch-binary",
    "BinProbe",
    b"\x00\x00\x01\x02A\x00B\x00",
    "binary probe string and response",
    live=True,
)
_ch("ch-binary-soft", "BinProbe", b"\x00\x01\x02", "binary softmatch")
_ch("ch-softmulti", "SoftMulti", b"SM1 hostx\r\n", "soft line with h/ i/ before a hard line")
_ch("ch-softmulti-hard", "SoftMulti", b"SMX\r\n", "hard line")


def by_id() -> dict[str, Case]:
    table = {c.id: c for c in CASES}
    if len(table) != len(CASES):
        raise AssertionError("duplicate case ids")
    return table
