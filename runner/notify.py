"""Notifications: an HTTP POST of JSON when the sweep ends, when a trial fails for good, when a worker stalls.

The JSON carries a top-level `text` (what Slack and Mattermost incoming webhooks show as is) and the details:
sweep name, counts by state, the best trial and its metric, the report path and recent failures with their
reasons. Sending happens on a background thread with a short timeout; a notification that fails is one logged
line and never stops or slows the sweep. The URL is printed only masked (zoo.secrets.mask_webhook: a webhook's
path is its secret).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.secrets import mask_webhook
from zoo.errors import UserError, one_line

SEND_TIMEOUT_SECONDS = 5.0
CHECK_TIMEOUT_SECONDS = 3.0
RECENT_FAILURES = 5


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


class Notifier:
    """Posts notifications for the events it was asked for; `flush` waits (briefly) for those in flight."""

    def __init__(self, url: str | None, events: tuple[str, ...] | list[str], log: Callable[[str], None]):
        self.url, self.events, self.log = url, tuple(events), log
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
        import requests

        try:
            response = requests.post(str(self.url), json=body, timeout=SEND_TIMEOUT_SECONDS)
            if response.status_code >= 400:
                raise OSError(f"HTTP {response.status_code}")
            self.sent.append(body)
        except Exception as err:  # noqa: BLE001 - a notification never stops the sweep
            reason = one_line(str(err))[:200] or type(err).__name__
            if isinstance(err, requests.RequestException):
                reason = type(err).__name__
            self.log(f"notification ({body['event']}) to {mask_webhook(str(self.url))} failed: {reason}")

    def flush(self, timeout: float = SEND_TIMEOUT_SECONDS + 1) -> None:
        for thread in self._threads:
            thread.join(timeout)


def recent_failures(study: Any, limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    """The last failed trials with their reasons and saved tracebacks."""
    from optuna.trial import TrialState

    from runner.queue import KEY_ATTR

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return [{"trial": t.number, "key": t.user_attrs.get(KEY_ATTR, ""), "reason": t.user_attrs.get("failure", ""),
             "traceback": t.user_attrs.get("traceback_path", "")}
            for t in sorted(failed, key=lambda t: t.number)[-limit:]]


def summary(event: str, sweep: str, counts: dict[str, int], best: tuple[str, float] | None, metric: str,
            workdir: Path, failures: list[dict[str, Any]], detail: str = "") -> dict[str, Any]:
    """The notification's JSON: `text` for chat webhooks, then the details."""
    shown = {state: n for state, n in counts.items() if n}
    headline = {"end": "ended", "failure": "has a trial that failed for good", "stalled": "has a stalled worker"}
    text = f"videosweep: sweep {sweep} {headline.get(event, event)}"
    text += f" ({detail})" if detail else ""
    text += ". " + (", ".join(f"{n} {state}" for state, n in shown.items()) or "no trials")
    if best is not None:
        text += f"; best {metric} {best[1]:.4f} (trial {best[0]})"
    report = workdir / "report" / "report.html"
    if event == "end":
        text += f"; report: {report} (`videosweep report`)"
    if failures and event != "stalled":
        last = failures[-1]
        text += f"; last failure: trial {last['key']}: {last['reason'][:200]}"
    return {"text": text, "sweep": sweep, "counts": counts, "detail": detail,
            "best": None if best is None else {"trial_key": best[0], "metric": metric, "value": best[1]},
            "report": str(report), "failures": failures}
