"""Notifications: an HTTP POST of JSON when the sweep ends, when a trial fails for good, when a worker stalls.

The JSON carries a top-level `text` (what Slack and Mattermost incoming webhooks show as is) and the details:
sweep name, counts by state, the best trial and its metric, the report path and recent failures with their
reasons. Sending happens on a background thread within one overall deadline (not a timeout per read: an
endpoint that answers a byte at a time is cut off too); redirects are not followed (a 3xx would re-post the
summary elsewhere); a notification that fails is one logged line and never stops or slows the sweep. The URL is
printed only masked (zoo.secrets.mask_webhook: a webhook's path is its secret). Text read from the shared study
(trial keys, failure reasons, traceback paths) is one line, bounded and escaped for chat markup (`<!channel>`
stays text); the report is named relative to the workdir, which keeps this machine's folders out.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from zoo.errors import UserError, one_line
from zoo.secrets import mask_webhook

SEND_TIMEOUT_SECONDS = 5.0
CHECK_TIMEOUT_SECONDS = 3.0
RECENT_FAILURES = 5
STUDY_TEXT_CHARS = 200  # of each text read from the shared study
REPORT = "report/report.html"  # inside the workdir


def check_url(url: str) -> None:
    """Refuse, in one line, a URL that is not HTTP(S) or whose host does not accept connections."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"notify URL {mask_webhook(url)} is not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"notify URL {mask_webhook(url)} has an invalid port") from None
    try:
        socket.create_connection((parts.hostname, port), timeout=CHECK_TIMEOUT_SECONDS).close()
    except OSError as err:
        raise UserError(f"notify URL {mask_webhook(url)} is unreachable: {one_line(str(err)) or type(err).__name__}"
                        ) from None


class Undelivered(Exception):
    """A notification the endpoint did not take (its status, or no answer in time)."""


class Notifier:
    """Posts notifications for the events it was asked for; `flush` waits (briefly) for those in flight."""

    def __init__(self, url: str | None, events: tuple[str, ...] | list[str], log: Callable[[str], None],
                 deadline_seconds: float = SEND_TIMEOUT_SECONDS):
        self.url, self.events, self.log = url, tuple(events), log
        self.deadline_seconds = deadline_seconds
        self._threads: list[threading.Thread] = []
        self.sent: list[dict[str, Any]] = []

    def wants(self, event: str) -> bool:
        return bool(self.url) and event in self.events

    def send(self, event: str, payload: dict[str, Any]) -> None:
        if not self.wants(event):
            return
        body = {"event": event, **payload}
        thread = threading.Thread(target=self._post, args=(body,), daemon=True, name=f"notify-{event}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _post(self, body: dict[str, Any]) -> None:
        try:
            status = post_json(str(self.url), body, self.deadline_seconds)
            if status >= 300:
                raise Undelivered(f"HTTP {status}" + (" (redirects are not followed)" if status < 400 else ""))
            self.sent.append(body)
        except Exception as err:  # noqa: BLE001 - a notification never stops the sweep
            # Our own words or the system's, never an exception's whole text: it may quote the URL (the secret).
            reason = str(err) if isinstance(err, Undelivered) else \
                err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
            self.log(f"notification ({body['event']}) to {mask_webhook(str(self.url))} failed: {reason}")

    def flush(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(self.deadline_seconds + 1 if timeout is None else timeout)


def post_json(url: str, body: dict[str, Any], deadline_seconds: float) -> int:
    """POST `body` as JSON and return the HTTP status; redirects are not followed, and the whole exchange
    (connecting, sending, reading the answer) must end within `deadline_seconds`, else Undelivered."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "", parts.port, timeout=deadline_seconds)
    headers = {"Content-Type": "application/json", "User-Agent": "videosweep"}
    if parts.username is not None:  # user:password@ in the URL, as requests would send it
        credentials = f"{parts.username}:{parts.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    expired = threading.Event()

    def cut_off() -> None:  # a blocked read wakes up when its socket is shut down
        expired.set()
        if connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline_seconds, cut_off)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                           json.dumps(body).encode(), headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        status = response.status
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise Undelivered(f"no answer within {deadline_seconds:g} s") from None
        raise
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set():
        raise Undelivered(f"no answer within {deadline_seconds:g} s")
    return status


def from_study(text: Any, limit: int = STUDY_TEXT_CHARS) -> str:
    """Text read from the shared study as a notification carries it: one line, at most `limit` characters,
    with &, < and > escaped (chat webhooks read <!channel>, <@user> and <url|label> as markup)."""
    line = one_line(str(text))
    if len(line) > limit:
        line = line[:limit - 1] + "…"
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def recent_failures(study: Any, limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    """The last failed trials with their reasons and saved tracebacks."""
    from optuna.trial import TrialState

    from runner.study.claims import KEY_ATTR

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return [{"trial": t.number, "key": from_study(t.user_attrs.get(KEY_ATTR, ""), 40),
             "reason": from_study(t.user_attrs.get("failure", "")),
             "traceback": from_study(t.user_attrs.get("traceback_path", ""))}
            for t in sorted(failed, key=lambda t: t.number)[-limit:]]


def summary(event: str, sweep: str, counts: dict[str, int], best: tuple[str, float] | None, metric: str,
            failures: list[dict[str, Any]], detail: str = "") -> dict[str, Any]:
    """The notification's JSON: `text` for chat webhooks, then the details."""
    shown = {state: n for state, n in counts.items() if n}
    detail = from_study(detail)  # a stop rule's reason is read back from the study
    headline = {"end": "ended", "failure": "has a trial that failed for good", "stalled": "has a stalled worker"}
    text = f"videosweep: sweep {sweep} {headline.get(event, event)}"
    text += f" ({detail})" if detail else ""
    text += ". " + (", ".join(f"{n} {state}" for state, n in shown.items()) or "no trials")
    best_key = None if best is None else from_study(best[0], 40)
    if best is not None:
        text += f"; best {metric} {best[1]:.4f} (trial {best_key})"
    if event == "end":
        text += f"; report: {REPORT} in the workdir (`videosweep report`)"
    if failures and event != "stalled":
        last = failures[-1]
        text += f"; last failure: trial {last['key']}: {last['reason']}"
    return {"text": text, "sweep": sweep, "counts": counts, "detail": detail,
            "best": None if best is None else {"trial_key": best_key, "metric": metric, "value": best[1]},
            "report": REPORT, "failures": failures}
