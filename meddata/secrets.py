"""Keeping secrets off disk and out of logs.

`redact` is applied to everything meddata writes about a run (dataset manifests, training
manifests, model cards) and `redact_url` to every URL it prints. Keys belong in environment
variables: a config names the variable (`api_key_env: OPENAI_API_KEY`), never the key.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
SECRET_KEYS = re.compile(r"^(token|authorization|credentials?)$|(^|_)(api_?key|access_?token|"
                         r"auth_?token|hub_?token|secret|password|passwd)$", re.I)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I)
_SECRET_QUERY = re.compile(r"(key|token|secret|sig|signature|password|credential)", re.I)


def redact_url(url: str) -> str:
    """The URL with any user:password@ and secret-looking query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_QUERY.search(k) and v else v) for k, v in pairs],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (for error messages and logs)."""
    return _URL.sub(lambda m: redact_url(m.group()), text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` (dicts, lists, strings) with secret-named fields masked and URLs
    redacted."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if value and SECRET_KEYS.search(key.replace("-", "_")):
            return MASK
        return redact_text(value)
    return value
