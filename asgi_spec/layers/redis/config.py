"""Redis layer URLs and host specs, as pure functions (no connection is made here).

Accepted forms::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                      TLS; ssl_* options pass through to redis-py
    redis://h1:6379/0,redis://h2:6379/0          several servers: sharded
    redis+sentinel://[[user]:password@]s1:26379,s2:26379/service_name[/db][?...]

Query options are either layer options (``expiry``, ``capacity`` ...) or
connection options (``socket_timeout`` ...); anything else is a
``LayerConfigError`` that names the option and lists the allowed ones. The
list option ``at_least_once`` takes comma-separated globs (a comma inside a
query does not start a new sharded URL) and may be repeated.
Passwords never appear in ``display`` strings or error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from asgi_spec.exceptions import LayerConfigError
from asgi_spec.options import LIST_OPTIONS, parse_option

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

#: Options of the layer itself (the base layer's plus ``prefix``).
LAYER_OPTIONS = frozenset({
    "prefix", "expiry", "group_expiry", "capacity", "max_message_size", "blocking_timeout",
    "at_least_once", "ack_timeout",
})

#: redis-py connection options a URL may carry.
CONNECTION_OPTIONS = frozenset({
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "health_check_interval",
    "max_connections", "client_name", "retry_attempts",
})

#: TLS options, allowed with ``rediss://`` only; passed to redis-py unchanged.
SSL_OPTIONS = frozenset({
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile",
    "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
})

SCHEMES = ("redis", "rediss", "redis+sentinel")


@dataclass(frozen=True)
class HostSpec:
    """One Redis server: where it is and how to connect."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node_name(self) -> str:
        """The name this server has on the hash ring (no credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.db}"

    @property
    def display(self) -> str:
        """A URL for messages and logs, with the password replaced by ``***``."""
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{_auth_display(self.username, self.password)}{self.node_name}"

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis`` / its connection pool."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.ssl:
            kwargs["ssl"] = True
        kwargs.update(self.options)
        return kwargs


@dataclass(frozen=True)
class SentinelSpec:
    """Sentinel-managed masters: each service is one shard."""

    sentinels: tuple[tuple[str, int], ...]
    services: tuple[str, ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def node_name(self, service: str) -> str:
        return f"sentinel:{service}/{self.db}"

    def display(self, service: str) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        auth = _auth_display(self.username, self.password)
        return f"redis+sentinel://{auth}{hosts}/{service}/{self.db}"


@dataclass
class ParsedURL:
    """What ``parse_url`` found: servers (or a Sentinel spec) and options."""

    hosts: list[HostSpec]
    sentinel: SentinelSpec | None
    layer_options: dict[str, Any]


def _auth_display(username: str | None, password: str | None) -> str:
    if password is not None:
        return f"{username or ''}:***@"
    if username:
        return f"{username}@"
    return ""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    out = []
    for piece in url.split(","):
        scheme, sep, rest = piece.partition("://")
        netloc, slash, path = rest.partition("/")
        if sep and "@" in netloc:
            auth, _, hostpart = netloc.rpartition("@")
            if ":" in auth:
                piece = f"{scheme}://{auth.split(':', 1)[0]}:***@{hostpart}{slash}{path}"
        out.append(piece)
    return ",".join(out)


def _allowed_list(allowed: frozenset[str]) -> str:
    return ", ".join(sorted(allowed))


def _split_query(query: str, allowed: frozenset[str], where: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            hint = (" (ssl_* options need a rediss:// URL)"
                    if key in SSL_OPTIONS else "")
            raise LayerConfigError(
                f"unknown option {key!r} in Redis layer URL {where}{hint}; "
                f"allowed: {_allowed_list(allowed)}"
            )
        if key in LIST_OPTIONS:
            options.setdefault(key, []).extend(
                part.strip() for part in value.split(",") if part.strip())
            continue
        options[key] = value if key.startswith("ssl_") and key != "ssl_check_hostname" \
            else parse_option(value)
    return options


def _parse_db(text: str, where: str) -> int:
    if not text:
        return 0
    try:
        db = int(text)
    except ValueError:
        raise LayerConfigError(
            f"Redis database in {where} must be a number, got {text!r}"
        ) from None
    if db < 0:
        raise LayerConfigError(f"Redis database in {where} must be >= 0, got {db}")
    return db


def _parse_port(text: str | None, default: int, where: str) -> int:
    if not text:
        return default
    try:
        port = int(text)
    except ValueError:
        raise LayerConfigError(f"port in {where} must be a number, got {text!r}") from None
    if not 0 < port < 65536:
        raise LayerConfigError(f"port in {where} is out of range: {port}")
    return port


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    layer = {k: v for k, v in options.items() if k in LAYER_OPTIONS}
    conn = {k: v for k, v in options.items() if k not in LAYER_OPTIONS}
    return layer, conn


def parse_host_url(url: str) -> tuple[HostSpec, dict[str, Any]]:
    """One ``redis://`` or ``rediss://`` URL: its server and its layer options."""
    where = redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise LayerConfigError(
            f"Redis host URL must start with redis:// or rediss://, got {where!r}"
        )
    ssl = scheme == "rediss"
    allowed = LAYER_OPTIONS | CONNECTION_OPTIONS | (SSL_OPTIONS if ssl else frozenset())
    options = _split_query(parts.query, allowed, where)
    try:
        host = parts.hostname or "127.0.0.1"
        port = _parse_port(str(parts.port) if parts.port else None, DEFAULT_PORT, where)
    except ValueError as exc:
        raise LayerConfigError(f"bad host or port in {where}: {exc}") from None
    path = parts.path.strip("/")
    db = _parse_db(path, where)
    layer, conn = _split_options(options)
    spec = HostSpec(
        host=host, port=port, db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ssl=ssl, options=conn,
    )
    return spec, layer


def _merge_layer_options(target: dict[str, Any], new: dict[str, Any], where: str) -> None:
    for key, value in new.items():
        if key in target and target[key] != value:
            raise LayerConfigError(
                f"layer option {key!r} is given twice with different values "
                f"({target[key]!r} and {value!r}) in {where}"
            )
        target[key] = value


def parse_sentinel_url(url: str) -> tuple[SentinelSpec, dict[str, Any]]:
    """``redis+sentinel://[:pw@]h1:26379,h2:26379/service[/db]``."""
    where = redact(url)
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        if ":" in auth:
            user, _, pw = auth.partition(":")
            username, password = (unquote(user) or None), unquote(pw)
        else:
            username = unquote(auth) or None
    sentinels = []
    for item in netloc.split(","):
        if not item:
            raise LayerConfigError(f"empty Sentinel host in {where}")
        if item.startswith("["):
            host, _, port_text = item[1:].partition("]")
            port_text = port_text.lstrip(":")
        else:
            host, _, port_text = item.partition(":")
        sentinels.append((host, _parse_port(port_text, DEFAULT_SENTINEL_PORT, where)))
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise LayerConfigError(
            f"Sentinel URL {where} needs a service name: redis+sentinel://host:26379/mymaster"
        )
    if len(segments) > 2:
        raise LayerConfigError(
            f"Sentinel URL {where} has too many path parts; expected /service_name[/db]"
        )
    db = _parse_db(segments[1] if len(segments) == 2 else "", where)
    options = _split_query(query, LAYER_OPTIONS | CONNECTION_OPTIONS, where)
    layer, conn = _split_options(options)
    spec = SentinelSpec(
        sentinels=tuple(sentinels), services=(segments[0],), db=db,
        username=username, password=password, options=conn,
    )
    return spec, layer


def parse_url(url: str) -> ParsedURL:
    """Parse a Redis layer URL (any of the module's forms)."""
    if not isinstance(url, str) or "://" not in url:
        raise LayerConfigError(f"Redis layer URL must look like redis://host:port/db, got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "redis+sentinel":
        sentinel, layer = parse_sentinel_url(url)
        return ParsedURL(hosts=[], sentinel=sentinel, layer_options=layer)
    if scheme not in ("redis", "rediss"):
        raise LayerConfigError(
            f"unknown Redis URL scheme {scheme!r} in {redact(url)!r}; "
            f"known: {', '.join(SCHEMES)}"
        )
    hosts: list[HostSpec] = []
    layer_options: dict[str, Any] = {}
    for piece in _host_urls(url):
        if "://" not in piece:
            raise LayerConfigError(
                f"each sharded Redis host needs its own URL (redis://host:port/db), "
                f"got {redact(piece)!r} in {redact(url)!r}"
            )
        spec, layer = parse_host_url(piece)
        hosts.append(spec)
        _merge_layer_options(layer_options, layer, redact(url))
    return ParsedURL(hosts=hosts, sentinel=None, layer_options=layer_options)


def _host_urls(url: str) -> list[str]:
    """The comma-separated URLs of ``url``; a comma inside a query string (a list
    option such as ``at_least_once=tasks.*,jobs.*``) does not start a new URL."""
    pieces: list[str] = []
    for piece in url.split(","):
        piece = piece.strip()
        if pieces and "://" not in piece and "?" in pieces[-1]:
            pieces[-1] += "," + piece
        else:
            pieces.append(piece)
    return pieces


def host_spec(host: Any) -> HostSpec:
    """A ``hosts=`` entry: a URL, a ``(host, port)`` pair or a dict of redis-py kwargs."""
    if isinstance(host, HostSpec):
        return host
    if isinstance(host, str):
        spec, layer = parse_host_url(host)
        if layer:
            raise LayerConfigError(
                f"layer options {sorted(layer)} belong in the layer's arguments, "
                f"not in the host URL {redact(host)!r}"
            )
        return spec
    if isinstance(host, tuple | list) and len(host) == 2:
        return HostSpec(host=str(host[0]), port=int(host[1]))
    if isinstance(host, Mapping):
        known = {"host", "port", "db", "username", "password", "ssl"}
        options = {k: v for k, v in host.items() if k not in known}
        return HostSpec(
            host=host.get("host", "127.0.0.1"), port=int(host.get("port", DEFAULT_PORT)),
            db=int(host.get("db", 0)), username=host.get("username"),
            password=host.get("password"), ssl=bool(host.get("ssl", False)), options=options,
        )
    raise LayerConfigError(
        f"a Redis host must be a URL, a (host, port) pair or a dict, got {host!r}"
    )


def sentinel_spec(sentinel: Any) -> SentinelSpec:
    """``sentinel=``: a ``SentinelSpec``, a ``redis+sentinel://`` URL or a dict.

    The dict form: ``{"sentinels": [(host, port), ...], "services": ["mymaster", ...],
    "db": 0, "password": ..., "sentinel_kwargs": {...}}``; each service is a shard.
    """
    if isinstance(sentinel, SentinelSpec):
        return sentinel
    if isinstance(sentinel, str):
        spec, layer = parse_sentinel_url(sentinel)
        if layer:
            raise LayerConfigError(
                f"layer options {sorted(layer)} belong in the layer's arguments, "
                f"not in the Sentinel URL {redact(sentinel)!r}"
            )
        return spec
    if isinstance(sentinel, Mapping):
        allowed = {"sentinels", "services", "db", "username", "password", "sentinel_kwargs"}
        unknown = sorted(set(sentinel) - allowed)
        if unknown:
            raise LayerConfigError(
                f"unknown sentinel option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        sentinels = tuple((str(h), int(p)) for h, p in sentinel.get("sentinels", ()))
        services = sentinel.get("services", ())
        if isinstance(services, str):
            services = (services,)
        if not sentinels or not services:
            raise LayerConfigError("sentinel= needs 'sentinels' and at least one of 'services'")
        return SentinelSpec(
            sentinels=sentinels, services=tuple(services), db=int(sentinel.get("db", 0)),
            username=sentinel.get("username"), password=sentinel.get("password"),
            sentinel_kwargs=dict(sentinel.get("sentinel_kwargs", {})),
        )
    raise LayerConfigError(f"sentinel= must be a URL or a dict, got {sentinel!r}")
