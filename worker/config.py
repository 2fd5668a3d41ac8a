"""Where requests go and with which keys: sites, base URLs and secrets.

Everything here is resolved before the first request, so a bad site, URL or key file
stops the run with exit 2 and a message saying what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
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
                f"--base-url {base_url!r} is not an http(s) URL; give one like "
                "https://api.datadoghq.eu or http://127.0.0.1:8126"
            )
        if parts.query or parts.fragment:
            raise ConfigError(f"--base-url {base_url!r} must not carry a query or fragment")
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
            "(or use --sandbox / --dry-run, which need none)"
        )
    return Credentials(
        _checked(api, "API key", api_origin), _checked(app, "application key", app_origin)
    )
