"""Where requests go and with which keys: sites, base URLs and secrets.

Everything here is resolved before the first request, so a bad site, URL or key file
stops the run with exit 2 and a message saying what to fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

SITES = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "datadoghq.eu",
    "ddog-gov.com",
    "us2.ddog-gov.com",
)
DEFAULT_SITE = "datadoghq.com"


class ConfigError(Exception):
    """An option, environment variable or key file is wrong; nothing was sent (exit 2)."""


class PathRefused(ConfigError):
    """The paths of `options` are why the run cannot start (two name one file, or one
    cannot be written): nothing is written to them, not even the report of the refusal,
    since such a path may be an input or the journal."""

    def __init__(self, message: str, options: Iterable[str]) -> None:
        super().__init__(message)
        self.options = frozenset(options)


class Secret:
    """A key that cannot leak by accident: its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: Secret
    app_key: Secret

    def secrets(self) -> tuple[str, str]:
        """The raw values, for the log redactor to scrub."""
        return (self.api_key.reveal(), self.app_key.reveal())


def base_url_for(site: str | None, base_url: str | None, environ: Mapping[str, str]) -> str:
    """`--base-url` wins; else `https://api.{site}` from `--site`, `$DD_SITE` or the default."""
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"--base-url {redact_url(base_url)!r} is not an http(s) URL; give one like "
                "https://api.datadoghq.eu or http://127.0.0.1:8126"
            )
        if parts.query or parts.fragment:
            raise ConfigError(
                f"--base-url {redact_url(base_url)!r} must not carry a query or fragment"
            )
        _refuse_userinfo(base_url)
        return base_url.rstrip("/")
    chosen = (site or environ.get("DD_SITE") or DEFAULT_SITE).strip().lower()
    chosen = chosen.removeprefix("https://").removeprefix("app.").removeprefix("api.").rstrip("/")
    if chosen not in SITES:
        raise ConfigError(
            f"unknown Datadog site {chosen!r}; use one of {', '.join(SITES)} "
            "(or --base-url for a proxy)"
        )
    return f"https://api.{chosen}"


def _read_key_file(path: str, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the {what} file {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"the {what} file {path} is empty")
    return value


def _checked(value: str, what: str, origin: str) -> Secret:
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(
            f"the {what} from {origin} holds whitespace or control characters; "
            "check that it was copied whole and alone"
        )
    return Secret(value)


def load_credentials(
    api_key_file: str | None, app_key_file: str | None, environ: Mapping[str, str]
) -> Credentials:
    """Keys from files (for mounted Secrets) or the environment, never from an option."""
    if api_key_file:
        api, api_origin = _read_key_file(api_key_file, "API key"), api_key_file
    else:
        api, api_origin = environ.get("DD_API_KEY", "").strip(), "DD_API_KEY"
    if app_key_file:
        app, app_origin = _read_key_file(app_key_file, "application key"), app_key_file
    else:
        app = (environ.get("DD_APP_KEY") or environ.get("DD_APPLICATION_KEY") or "").strip()
        app_origin = "DD_APP_KEY"
    missing = [
        name
        for name, value in (
            ("DD_API_KEY or --api-key-file", api),
            ("DD_APP_KEY or --app-key-file", app),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"missing Datadog keys: set {' and '.join(missing)} "
            "(a rehearsal needs none: `run --sandbox`, or `run --dry-run` of files)"
        )
    return Credentials(
        _checked(api, "API key", api_origin), _checked(app, "application key", app_origin)
    )


LOOPBACK_NAMES = frozenset({"localhost"})
"""Host names that always mean this machine (RFC 6761), besides loopback addresses."""


@dataclass(frozen=True, slots=True)
class Route:
    """How requests reach the API: the base URL, and the proxy they go through (None:
    directly). The proxy URL may hold `user:password`: show it only by `redact_url`."""

    base_url: str
    proxy: str | None = None


def redact_url(url: str) -> str:
    """`url` with the password of its `user:password@` replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unreadable port, say: show nothing that could be a secret
        return "(an unreadable URL)"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not, or as an IPv4-mapped address) and localhost."""
    name = host.strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def env_proxy(scheme: str, host: str, environ: Mapping[str, str]) -> str | None:
    """The proxy the environment names for `scheme`://`host`, as curl and urllib read it:
    `https_proxy` / `HTTPS_PROXY` (or the http ones), lower case first, minus `NO_PROXY`."""
    key = f"{scheme}_proxy"
    proxy = environ.get(key) or environ.get(key.upper())
    if not proxy:
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    return None if _bypassed(host, no_proxy) else proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether `NO_PROXY` exempts `host`: `*`, the host itself or a parent domain (with
    or without a leading dot, a `:port` ignored), or a network (`10.0.0.0/8`) it is in."""
    name = host.strip("[]").lower().rstrip(".")
    return any(_exempts(entry.strip(), name) for entry in no_proxy.lower().split(","))


def _exempts(entry: str, name: str) -> bool:
    if entry == "*":
        return True
    if "/" in entry:
        try:
            return ipaddress.ip_address(name) in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    domain = entry.strip(".")
    return bool(domain) and (name == domain or name.endswith("." + domain))


def _refuse_userinfo(base_url: str) -> None:
    """A base URL is never shown with a password: none is taken in the first place."""
    if "@" in urlsplit(base_url).netloc:
        raise ConfigError(
            f"--base-url {redact_url(base_url)!r} carries user:password; the keys travel in "
            "headers, so give the URL without them"
        )


INSECURE_ADVICE = "use https://, or pass --allow-insecure-http if this network is yours to trust"


def check_transport(
    base_url: str, environ: Mapping[str, str], *, allow_insecure_http: bool = False
) -> Route:
    """The route to `base_url`, refused (ConfigError, exit 2) before anything is sent if
    the keys would travel in clear where others may read them.

    * https: verified TLS end to end, directly or through a proxy. An `http://` proxy is
      fine there: it only tunnels (CONNECT) and sees the host and port, never the headers.
    * http to a loopback host (127.0.0.0/8, ::1, localhost): the keys never leave the
      machine. Always reached directly, whatever the environment's proxy says.
    * http to anything else, directly or through a proxy (which would see every header):
      refused unless `allow_insecure_http`.
    """
    parts = urlsplit(base_url)
    try:
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ConfigError(f"--base-url {redact_url(base_url)!r} has an unreadable port") from None
    _refuse_userinfo(base_url)
    if parts.scheme == "http" and is_loopback(host):
        return Route(base_url)
    proxy = env_proxy(parts.scheme, host, environ)
    if proxy is not None:
        proxy_parts = urlsplit(proxy)
        if proxy_parts.scheme not in ("http", "https") or not proxy_parts.hostname:
            raise ConfigError(
                f"the proxy {redact_url(proxy)!r} (from {parts.scheme.upper()}_PROXY) is not an "
                "http:// or https:// URL; fix it, or exclude this host with NO_PROXY"
            )
    if parts.scheme == "http" and not allow_insecure_http:
        raise ConfigError(
            f"--base-url {redact_url(base_url)!r} is plain http to a host that is not this "
            f"machine: the keys would cross the network in clear; {INSECURE_ADVICE}"
        )
    return Route(base_url, proxy)
