"""Real daemons from Debian packages, each started on a free 127.0.0.1 port in a temp dir.

Each starter returns a running :class:`Daemon` or raises :class:`Unavailable`
with a reason (the package is not installed).  Nothing here touches system
state, except sshd's privilege-separation directory ``/run/sshd`` (compiled into
Debian's sshd, created by its init script; an empty root-owned directory).

postfix is not covered: its ``master`` daemon needs a queue directory owned by
the ``postfix`` user with a ``postdrop`` group, a chroot layout and config under
``/etc/postfix`` (``postfix start`` checks and rewrites system-wide state), and
installing the package runs debconf's mail-system configuration.  None of that
can be confined to a temporary directory without changing the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.loopback import free_port

LOOPBACK = "127.0.0.1"


class Unavailable(Exception):
    """The daemon cannot be started here (package missing): the reason is the message."""


class DaemonFailed(Exception):
    """The daemon is installed but did not come up: a real failure."""


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise DaemonFailed(f"exited with {proc.returncode}: {text.strip()[-2000:]}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DaemonFailed(f"not listening on {LOOPBACK}:{port} after {timeout} s")


class Daemon:
    def __init__(self, name: str, package: str, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.package = package
        self.port = port
        self.proc = proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _find(program: str, package: str, *dirs: str) -> str:
    for directory in dirs:
        candidate = Path(directory) / program
        if candidate.exists():
            return str(candidate)
    found = shutil.which(program)
    if found is None:
        raise Unavailable(f"{program} not found (Debian package {package} is not installed)")
    return found


def _launch(
    name: str, package: str, cmd: list[str], port: int, workdir: Path, cwd: Path | None = None
) -> Daemon:
    log = workdir / f"{name}.out"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd or workdir,
            start_new_session=True,
        )
    daemon = Daemon(name, package, port, proc)
    try:
        _wait_listening(proc, port, log, 20.0)
    except DaemonFailed as exc:
        daemon.stop()
        raise DaemonFailed(f"{name} ({' '.join(cmd)}): {exc}") from None
    return daemon


def start_redis(workdir: Path) -> Daemon:
    exe = _find("redis-server", "redis-server", "/usr/bin")
    port = free_port()
    cmd = [
        exe,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--bind",
        LOOPBACK,
        "--daemonize",
        "no",
        "--dir",
        str(workdir),
    ]
    return _launch("redis", "redis-server", cmd, port, workdir)


def _sshd_knows(exe: str, config: Path, line: str) -> bool:
    """Whether this sshd accepts the option ``line`` (older releases reject the
    unknown keyword): ``sshd -t`` on the config with the line added."""
    probe = config.with_name(config.name + ".probe")
    probe.write_text(config.read_text() + line + "\n")
    try:
        result = subprocess.run(
            [exe, "-t", "-f", str(probe)], capture_output=True, text=True, timeout=30, check=False
        )
    finally:
        probe.unlink()
    keyword = line.split(maxsplit=1)[0]
    return keyword.lower() not in (result.stdout + result.stderr).lower()


def start_sshd(workdir: Path) -> Daemon:
    exe = _find("sshd", "openssh-server", "/usr/sbin")
    keygen = _find("ssh-keygen", "openssh-client", "/usr/bin")
    port = free_port()
    home = workdir / "sshd"
    home.mkdir(mode=0o700)
    key = home / "ssh_host_ed25519_key"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        f"ListenAddress {LOOPBACK}\n"
        f"HostKey {key}\n"
        f"PidFile {home / 'sshd.pid'}\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication no\n"
        "AuthorizedKeysFile none\n"
        "PermitRootLogin no\n"
        "StrictModes no\n"
        "MaxStartups 100\n"
        "LogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        # Debian's sshd insists on its compiled-in privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    if _sshd_knows(exe, config, "PerSourcePenalties no"):
        # OpenSSH 9.8+ (Debian 13's 10.0) penalises a source address whose connections
        # end without authenticating (what every scanner does) by refusing it for a
        # while: off, so that scans do not depend on the ones before them
        with config.open("a") as out:
            out.write("PerSourcePenalties no\n")
    return _launch("sshd", "openssh-server", [exe, "-D", "-e", "-f", str(config)], port, workdir)


def start_nginx(workdir: Path) -> Daemon:
    return launch_nginx(workdir, "nginx")


def launch_nginx(
    workdir: Path, name: str, listen_options: str = "", server_lines: tuple[str, ...] = ()
) -> Daemon:
    """nginx in the foreground on a free loopback port, every path inside ``workdir/name``,
    answering ``<html>hello</html>``; *listen_options* (``"ssl"``) and *server_lines* (the
    certificate) make it an HTTPS server."""
    exe = _find("nginx", "nginx", "/usr/sbin")
    port = free_port()
    home = workdir / name
    home.mkdir()
    temp = {part: home / part for part in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    listen = f"{LOOPBACK}:{port} {listen_options}".rstrip()
    config = home / "nginx.conf"
    config.write_text(
        "worker_processes 1;\n"
        f"pid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'};\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"  access_log {home / 'access.log'};\n"
        f"  client_body_temp_path {temp['client_body']};\n"
        f"  proxy_temp_path {temp['proxy']};\n"
        f"  fastcgi_temp_path {temp['fastcgi']};\n"
        f"  uwsgi_temp_path {temp['uwsgi']};\n"
        f"  scgi_temp_path {temp['scgi']};\n"
        "  server {\n"
        f"    listen {listen};\n"
        + "".join(f"    {line}\n" for line in server_lines)
        + "    location / { default_type text/html; return 200 '<html>hello</html>\\n'; }\n"
        "  }\n"
        "}\n"
    )
    cmd = [exe, "-p", str(home), "-e", str(home / "error.log"), "-c", str(config)]
    cmd += ["-g", "daemon off;"]
    return _launch(name, "nginx", cmd, port, workdir)


def start_vsftpd(workdir: Path) -> Daemon:
    exe = _find("vsftpd", "vsftpd", "/usr/sbin")
    port = free_port()
    home = workdir / "vsftpd"
    home.mkdir()
    empty = home / "empty"
    empty.mkdir(mode=0o755)
    config = home / "vsftpd.conf"
    config.write_text(
        "listen=YES\n"
        "listen_ipv6=NO\n"
        f"listen_port={port}\n"
        f"listen_address={LOOPBACK}\n"
        "background=NO\n"
        f"secure_chroot_dir={empty}\n"
        # vsftpd refuses to run with both logins off: read-only anonymous on an empty dir
        "anonymous_enable=YES\n"
        f"anon_root={empty}\n"
        "ftp_username=nobody\n"
        "no_anon_password=YES\n"
        "local_enable=NO\n"
        "write_enable=NO\n"
        "xferlog_enable=NO\n"
        "dirmessage_enable=NO\n"
        "pasv_enable=NO\n"
        "seccomp_sandbox=NO\n"
        "max_clients=0\n"
        "max_per_ip=0\n"
    )
    return _launch("vsftpd", "vsftpd", [exe, str(config)], port, workdir)


#: name -> (Debian package, starter)
DAEMONS = {
    "redis": ("redis-server", start_redis),
    "sshd": ("openssh-server", start_sshd),
    "nginx": ("nginx", start_nginx),
    "vsftpd": ("vsftpd", start_vsftpd),
}
