"""Storage URL resolution and redaction: SQLite for one machine, PostgreSQL for many.

Exercise: `histosweep status STUDY --storage postgresql+psycopg2://user:pw@host/db`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, quote_plus, unquote

from histosweep.constants import DEFAULT_STORAGE, ENV_STORAGE
from histosweep.storage._errors import StorageError

# user:password@host inside any URL-looking text -> user:***@host. Tolerates malformed URLs
# (`scheme:/u:pw@h`, no slashes), a password holding spaces or a raw `@`: the password runs to
# the first `@` that is followed by a host name and then a port, path, quote, space or the end.
# No quotes in user or password: a URL is quoted in our messages, and the text after the quote
# (a hint such as "use postgresql://USER@HOST") is not a password.
_PASSWORD_RE = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*:/*)(?P<user>[^:/@\s'\"]*):(?P<pw>[^\n'\"]*?)"
    r"@(?=(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::\d*)?(?:[/?'\"\s,;)]|$))"
)
# libpq takes the password as a query parameter too: ?password=... or &sslpassword=...
# (a ':' followed by a space ends it: the URL is quoted in "cannot open storage URL: why")
_QUERY_PASSWORD_RE = re.compile(r"(?i)(?P<key>[?&](?:ssl)?password=)(?P<pw>(?:[^&#\s'\":]|:(?!\s|$))*)")
# One whole URL (not prose): the password runs to the last `@`, whatever it holds.
_WHOLE_URL_PASSWORD_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:/*[^:/@\s]*:(?P<pw>.*)@[^@]*$")
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
            "postgresql://USER@HOST:5432/DB (the password in the URL, PGPASSWORD or ~/.pgpass) "
            "or grpc://PROXY_HOST:13000"
        )
    if url.startswith("postgresql+") and _raw_at_in_password(url):
        raise StorageError(
            f"storage URL {redact(url)!r} has a raw '@' in its password: write it as %40 "
            "(percent-encode the password), or put the password in PGPASSWORD or ~/.pgpass"
        )
    return url


def _raw_at_in_password(url: str) -> bool:
    """scheme://USER:PA@SS@HOST/DB: more than one `@` before the query (drivers split at the
    first, so the rest of the password would become the host name, and appear in its error)."""
    head = url.split("://", 1)[-1].split("?", 1)[0]
    return "@" in head.rpartition("@")[0]


def is_grpc(url: str) -> bool:
    return url.startswith("grpc://")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def remember_secrets(url: str) -> None:
    """Remember a URL's password(s) so redact_text also hides them where they appear bare (in a
    driver's error, in pieces of a URL the driver split elsewhere than we do, in a usage error).

    Found by SQLAlchemy's own URL parser (the password, `password`/`sslpassword` query
    parameters, Unix-socket URLs without a host), plus the patterns for text it cannot parse
    (`scheme:/u:pw@h`, a raw `@` in the password)."""
    found = _parsed_secrets(url.strip())
    found += [m.group("pw") for m in (_WHOLE_URL_PASSWORD_RE.match(url.strip()),
                                      _PASSWORD_RE.search(url)) if m]
    found += [m.group("pw") for m in _QUERY_PASSWORD_RE.finditer(url)]
    for secret in found:
        if secret:
            _KNOWN_SECRETS.update((secret, unquote(secret)))  # p%40ss reaches the driver as p@ss
            _KNOWN_SECRETS.update(quote(secret, safe=""), quote_plus(secret))  # as typed in a URL
            _KNOWN_SECRETS.update(part for part in secret.split("@") if len(part) >= 3)


def _parsed_secrets(url: str) -> list[str]:
    """The password and password query parameters of `url` as SQLAlchemy reads them."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in ("password", "sslpassword"):
            found += [value] if isinstance(value, str) else list(value)
    return found


def remember_secrets_in(args: list[str], environ: dict[str, str]) -> None:
    """Remember the secrets of every URL on a command line and in the storage variable, before
    anything (an argparse usage error, a traceback) can print them."""
    for text in [*args, environ.get(ENV_STORAGE, "")]:
        value = text.split("=", 1)[1] if text.startswith("--") and "=" in text else text
        if "://" in value or value.startswith(("postgres", "sqlite", "grpc")):
            remember_secrets(value)


def redact(url: str) -> str:
    """The URL (or any text: an error, a log line) with URL passwords and the passwords of URLs
    seen before (remember_secrets: also those the patterns miss, e.g. with a quote) as ***."""
    url = _PASSWORD_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)
    url = _QUERY_PASSWORD_RE.sub(lambda m: f"{m.group('key')}***", url)
    for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
        if len(secret) >= 3:
            url = url.replace(secret, "***")
    return url


redact_text = redact  # the name callers use for free text
