"""What the running service says of itself, read from its Prometheus metrics (`--metrics URL`):
the configuration it runs, its last reload, and the live funnel per campaign.

    status = scrape("http://127.0.0.1:9464/metrics")
    status.config_sha256, status.last_reload_success, status.last_reload_at
    status.funnel["topup_rescue"]["sent"]
    # after an approval wrote CONFIG and sent SIGHUP at `sent_at` (wall clock, s):
    outcome = reload_outcome(url, sent_at, expected_sha256)   # "succeeded" | "rejected" | "unknown: ..."

The series are engine/service/metrics.py's (METRIC_NAMES); a service older than the
`sigmatch_config_info` series has no configuration to report (None).
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine.errors import SigmatchError
from engine.service.client import service_address

__all__ = ["ServiceStatus", "ScrapeFailed", "scrape", "reload_outcome", "metrics_url"]

# a scrape is a few kB; a service that does not answer within this is not going to
SCRAPE_TIMEOUT_S = 5.0
# how long an approval waits for the service to say what became of its SIGHUP
RELOAD_WAIT_S = 30.0


class ScrapeFailed(SigmatchError):
    """The metrics cannot be read: one line naming the URL."""


@dataclass(frozen=True)
class ServiceStatus:
    """One scrape. Counts are the engine's cumulative figures (they go on over restarts)."""
    config_sha256: Optional[str] = None
    last_reload_success: Optional[bool] = None
    last_reload_at: Optional[float] = None           # seconds since the epoch
    funnel: dict = field(default_factory=dict)       # campaign -> {stage: n}
    events: int = 0
    bad_events: int = 0
    pending: Optional[int] = None
    lag_s: Optional[float] = None                    # wall clock - event clock
    checkpoint_age_s: Optional[float] = None
    events_per_s: Optional[float] = None


def metrics_url(url: str) -> str:
    """`--metrics` as given (`http://HOST:PORT`, `HOST:PORT`, with or without /metrics) ->
    the URL to scrape. ValueError, one line, when it is no service address
    (engine.service.client.service_address)."""
    service_address(url, "--metrics")
    url = url.strip().rstrip("/")       # the server answers /metrics, not /metrics/
    if "://" not in url:
        url = "http://" + url
    if not url.endswith("/metrics"):
        url = url + "/metrics"
    return url


def scrape(url: str, *, timeout: float = SCRAPE_TIMEOUT_S) -> ServiceStatus:
    """Read the service's metrics at `url` (see metrics_url). ScrapeFailed when it cannot."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        target = metrics_url(url)
    except ValueError as e:
        raise ScrapeFailed(str(e)) from None
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            text = response.read(16 << 20).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ScrapeFailed(f"--metrics {target}: cannot be read ({getattr(e, 'reason', None) or e})") from None
    values: dict = {"funnel": {}}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels, value = sample.name, sample.labels, sample.value
                if name == "sigmatch_config_info" and value == 1:
                    values["config_sha256"] = labels.get("sha256") or None
                elif name == "sigmatch_last_reload_success":
                    values["last_reload_success"] = value == 1
                elif name == "sigmatch_last_reload_timestamp_seconds":
                    values["last_reload_at"] = value
                elif name == "sigmatch_funnel_total":
                    values["funnel"].setdefault(labels["campaign"], {})[labels["stage"]] = int(value)
                elif name == "sigmatch_events_total":
                    values["events"] = values.get("events", 0) + int(value)
                elif name == "sigmatch_bad_events_total":
                    values["bad_events"] = values.get("bad_events", 0) + int(value)
                elif name == "sigmatch_pending_actions":
                    values["pending"] = int(value)
                elif name == "sigmatch_event_time_lag_seconds":
                    values["lag_s"] = value
                elif name == "sigmatch_checkpoint_age_seconds":
                    values["checkpoint_age_s"] = value
                elif name == "sigmatch_events_per_second":
                    values["events_per_s"] = value
    except (ValueError, KeyError, TypeError) as e:
        raise ScrapeFailed(f"--metrics {target}: not Prometheus metrics of sigmatch ({type(e).__name__})") from None
    return ServiceStatus(**values)


def reload_outcome(url: Optional[str], sent_at: float, expected_sha256: str, *, wait_s: float = RELOAD_WAIT_S,
                   poll_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> str:
    """What became of a SIGHUP sent at `sent_at` (wall clock, seconds since the epoch) after
    the live file was written with the text whose sha256 is `expected_sha256`: "succeeded"
    (the service reloaded and runs that file), "rejected" (it tried and kept the previous
    configuration: see its log), or a sentence starting "unknown" (no --metrics, or the
    service said nothing within `wait_s`)."""
    if not url:
        return "unknown: reload sent, result unknown (the console was started without --metrics)"
    deadline = clock() + wait_s
    problem = "the service did not report a reload"
    while True:
        try:
            status = scrape(url)
        except ScrapeFailed as e:
            problem = str(e)
        else:
            # the service stamps the reload with the wall clock of the same host, after the signal
            if status.last_reload_at is not None and status.last_reload_at >= sent_at:
                if status.last_reload_success and status.config_sha256 == expected_sha256:
                    return "succeeded"
                if status.last_reload_success is False:
                    return "rejected"
            if status.config_sha256 is None and status.last_reload_at is None:
                return "unknown: the service publishes no reload metrics (an older sigmatch run?)"
        if clock() >= deadline:
            return f"unknown: {problem} within {wait_s:g} s"
        sleep(poll_s)
