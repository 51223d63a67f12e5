"""Redis URLs: ``redis://``, ``rediss://``, ``unix://`` and the Sentinel form
``redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``.

Pure code (the daemon's configuration checks URLs with it): nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisURL:
    """Where Redis is and how to log in. ``str()`` and ``repr()`` never show the password."""

    host: str | None = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    ssl: bool = False
    unix_path: str | None = None
    #: Sentinel: the sentinels' addresses and the monitored service (master) name
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    def __str__(self) -> str:
        user = ""
        if self.username or self.password is not None:
            user = f"{self.username or ''}{':***' if self.password is not None else ''}@"
        if self.sentinel:
            scheme = "rediss+sentinel" if self.ssl else "redis+sentinel"
            hosts = ",".join(_host_port(h, p) for h, p in self.sentinels)
            return f"{scheme}://{user}{hosts}/{self.service}/{self.db}"
        if self.unix_path is not None:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        scheme = "rediss" if self.ssl else "redis"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"

    @property
    def address(self) -> str:
        """Host and port (or socket path), for log lines."""
        if self.unix_path is not None:
            return self.unix_path
        if self.sentinel:
            return f"{self.service} (Sentinel {_host_port(*self.sentinels[0])}...)"
        return f"{self.host}:{self.port}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sentinel_hosts(netloc: str) -> tuple[tuple[str, int], ...]:
    """``HOST:PORT[,HOST:PORT...]`` (IPv6 in brackets; the port defaults to 26379)."""
    hosts: list[tuple[str, int]] = []
    for raw in netloc.split(","):
        item = raw.strip()
        if not item:
            raise ValueError("invalid Redis URL: an empty Sentinel address")
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"invalid Redis URL: Sentinel address {item!r} has no host")
        try:
            port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError(f"invalid Redis URL: Sentinel port {port_text!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"invalid Redis URL: Sentinel port {port} is out of range")
        hosts.append((host, port))
    return tuple(hosts)


def parse_redis_url(url: str) -> RedisURL:
    """``redis://[user:pass@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path?db=N``,
    ``redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`` (the master of
    SERVICE as the sentinels name it; ``rediss+sentinel://`` for TLS to the master; the
    sentinels' own password, if any, as ``?sentinel_password=``).

    ``db``, ``password`` and ``username`` may also be given as query parameters.
    Errors never quote the password.
    """
    if url.lower().startswith(("redis+sentinel://", "rediss+sentinel://")):
        return _parse_sentinel_url(url)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        port_text = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL: {exc}") from None
    if "password" in query:
        password = query["password"]
    if "username" in query:
        username = query["username"]
    db_text = query.get("db", "")
    if scheme in ("redis", "rediss"):
        path = parts.path.strip("/")
        if path:
            db_text = path
        if not hostname:
            raise ValueError(f"invalid Redis URL: no host in {scheme}://...")
        host: str | None = hostname
        unix_path = None
        port = port_text or DEFAULT_PORT
    elif scheme == "unix":
        if not parts.path:
            raise ValueError("invalid Redis URL: no socket path in unix://...")
        host, unix_path, port = None, unquote(parts.path), DEFAULT_PORT
    else:
        raise ValueError(
            f"invalid Redis URL: scheme {scheme or '(none)'!r} is not redis, rediss or unix"
        )
    db = _database(db_text)
    return RedisURL(
        host=host,
        port=port,
        db=db,
        password=password,
        username=username,
        ssl=scheme == "rediss",
        unix_path=unix_path,
    )


def _database(text: str) -> int:
    """The database number of a URL (empty: 0)."""
    try:
        db = int(text) if text else 0
    except ValueError:
        raise ValueError(f"invalid Redis URL: database {text!r} is not a number") from None
    if db < 0:
        raise ValueError(f"invalid Redis URL: database {db} is negative")
    return db


def _parse_sentinel_url(url: str) -> RedisURL:
    scheme, _, rest = url.partition("://")
    location, _, query_text = rest.partition("?")
    netloc, _, path = location.partition("/")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    password = query.get("password", password)
    username = query.get("username", username)
    sentinels = _sentinel_hosts(hostlist)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("invalid Redis URL: no service name in redis+sentinel://HOSTS/SERVICE")
    if len(parts) > 2:
        raise ValueError("invalid Redis URL: redis+sentinel://HOSTS/SERVICE[/DB], not more")
    service = unquote(parts[0])
    db_text = parts[1] if len(parts) == 2 else query.get("db", "")
    db = _database(db_text)
    return RedisURL(
        host=None,
        port=DEFAULT_PORT,
        db=db,
        password=password,
        username=username,
        ssl=scheme.lower() == "rediss+sentinel",
        sentinels=sentinels,
        service=service,
        sentinel_password=query.get("sentinel_password"),
    )
