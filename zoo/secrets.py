"""Masking credentials: the one function every URL (or text holding URLs) goes through before it is printed,
logged or stored (a userinfo password and password-like query parameters become ***); a webhook's URL keeps
only its scheme and host (its path is the secret)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry a secret (libpq's password/sslpassword, tokens, keys of object stores, ...).
SECRET_PARAMETER = re.compile(r"pass|secret|token|key|credential|auth|signature", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# In free text (a source diff): the value of a secret-looking name (API_TOKEN=..., "password": "...", key: ...).
_ASSIGNMENT = re.compile(r"""(\b[\w.-]*(?:pass|secret|token|key|credential|auth|signature)[\w.-]*"""
                         r"""["']?\s*[:=]\s*["']?)([^\s"',;]+)""", re.IGNORECASE)
# Tokens recognisable by their shape wherever they stand: GitHub, Slack, AWS access keys.
_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|xox[abprs]-[\w-]{10,}|AKIA[0-9A-Z]{16})\b")


def mask_url(url: str) -> str:
    """The URL with its userinfo password and secret query parameters replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL (e.g. a bad port): mask anything between ':' and '@'
        return re.sub(r"(//[^/:@]*:)[^@/]*@", rf"\1{MASK}@", url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_PARAMETER.search(name) for name, _ in pairs):
            query = urlencode([(name, MASK if SECRET_PARAMETER.search(name) else value) for name, value in pairs],
                              safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def mask_text(text: str) -> str:
    """Every URL inside `text` masked (error messages, a sweep file's YAML, log lines)."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)


def mask_webhook(url: str) -> str:
    """A webhook URL as printed or stored: Slack's /services/T/B/XXXX, Mattermost's /hooks/ID and Discord's
    /api/webhooks/ID/TOKEN are secrets in the path, so only the scheme and host remain (`https://host/***`)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    origin = f"{parts.scheme}://{host}{port}"
    return f"{origin}/{MASK}" if parts.path.strip("/") or parts.query else origin


def mask_secrets(text: str, webhooks: Iterable[str | None] = ()) -> str:
    """Free text that may hold credentials anywhere (a source diff): the given webhook URLs cut to their host,
    every URL masked, the values of secret-looking names and tokens of known shapes replaced by ***."""
    for url in webhooks:
        if url:
            text = text.replace(url, mask_webhook(url))
    text = _ASSIGNMENT.sub(lambda match: match.group(1) + MASK, mask_text(text))
    return _TOKEN.sub(MASK, text)
