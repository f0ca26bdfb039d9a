"""Storage URL resolution and redaction: SQLite for one machine, PostgreSQL for many.

Exercise: `histosweep status STUDY --storage postgresql+psycopg2://user:pw@host/db`.
"""

from __future__ import annotations

import os
import re

from histosweep.constants import DEFAULT_STORAGE, ENV_STORAGE
from histosweep.storage._errors import StorageError

# user:password@host inside any URL-looking text -> user:***@host. Tolerates malformed URLs
# (`scheme:/u:pw@h`, no slashes), a password holding spaces or a raw `@`: the password runs to
# the last `@` that is followed by a host name and then a port, path, quote, space or the end.
_PASSWORD_RE = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*:/*)(?P<user>[^:/@\s]*):(?P<pw>[^\n]*?)"
    r"@(?=(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::\d*)?(?:[/?'\"\s,;)]|$))"
)
_KNOWN_SECRETS: set[str] = set()


def resolve_storage_url(url: str | None = None) -> str:
    """`url`, else $HISTOSWEEP_STORAGE, else the SQLite default; normalised and checked."""
    url = (url or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE).strip()
    remember_secrets(url)
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    if not (url.startswith(("sqlite://", "postgresql+", "grpc://"))):
        raise StorageError(
            f"unsupported storage URL {redact(url)!r}: use sqlite:///FILE.db, "
            "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB or grpc://PROXY_HOST:13000"
        )
    return url


def is_grpc(url: str) -> bool:
    return url.startswith("grpc://")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def remember_secrets(url: str) -> None:
    """Remember a URL's password so redact_text also hides it where it appears bare."""
    match = _PASSWORD_RE.search(url)
    if match and match.group("pw"):
        _KNOWN_SECRETS.add(match.group("pw"))


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    return _PASSWORD_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)


def redact_text(text: str) -> str:
    """Any text (an error, a log line) with URL passwords and known secrets replaced by ***."""
    text = redact(text)
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
