"""Prometheus metrics of the daemon (`sigmatch run --metrics HOST:PORT`).

    metrics = DaemonMetrics(engine)                  # after the engine is restored
    metrics.serve(*parse_hostport("127.0.0.1:9108"))
    ...
    metrics.observe(engine, input_bytes=len(data), checkpoint_seconds=elapsed)   # after each commit
    ...
    metrics.close()

Threads: `observe` runs on the daemon's thread and is the only place that reads the engine.
It builds an immutable snapshot of plain numbers and swaps it in under a lock; scrapes (on
the HTTP server's threads) read that snapshot and the wall clock, never the engine, so a
scrape cannot race the core.

Counters carry the engine's cumulative figures: after a restart from a checkpoint they go on
from the checkpointed values (the counts are part of the state). `sigmatch_input_bytes_total`
is the one counter kept here; it counts the bytes observed by this process.

Labels hold event type names, bad-event reasons, campaign ids, action kinds and funnel
stages: never a subscriber number.

What is live (the console reads it to show whether an approved version took effect):
`sigmatch_config_info{sha256}` is 1 for the sha256 of the configuration file the running
engine was built from (stats.json's `configuration.sha256`); `sigmatch_last_reload_success`
is 1 when the last load of a configuration succeeded, 0 when a SIGHUP's configuration was
rejected (the previous one goes on); `sigmatch_last_reload_timestamp_seconds` is when that
load was tried. Start-up counts as a successful load, as Prometheus counts its own.

    metrics.observe_reload(new_engine)                 # a reload took effect
    metrics.observe_reload(None)                       # a reload was rejected
"""
from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.records import BAD_REASONS, FUNNEL, KINDS
from engine.service.serving import HTTP_DROP_REASONS, BoundedHTTPServer
from engine.service.sources import TCP_DROP_REASONS

__all__ = ["DaemonMetrics", "parse_hostport", "DEFAULT_HOST", "METRIC_NAMES", "CONNECTION_DROPS"]

DEFAULT_HOST = "127.0.0.1"

METRICS_PATH = "/metrics"


def _handler(registry) -> type:
    """prometheus_client's handler, answering GET /metrics (its query is the library's) only.
    It answered every path and method with the metrics, or http.server's HTML page of 501:
    a mistyped scrape target looked like a working one."""
    import urllib.parse

    class Handler(MetricsHandler.factory(registry)):
        # a request line http.server cannot read is answered with a status line too (its
        # default, HTTP/0.9, answered a bare line of text: no status, no headers)
        default_request_version = "HTTP/1.0"

        def do_GET(self):
            if urllib.parse.urlsplit(self.path).path != METRICS_PATH:
                self._say(404, f"no such page: the metrics are at GET {METRICS_PATH}")
                return
            super().do_GET()

        def do_POST(self):
            self._say(405, f"{self.command} is not answered here: use GET {METRICS_PATH}", {"Allow": "GET"})

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_POST

        def send_error(self, code, message=None, explain=None):
            # http.server's own refusals (a malformed request line) as a line of text too
            self.close_connection = True
            if code == 501 and self.command:
                # a method without a do_ (TRACE, BREW, a lowercase get): 405 as for the others
                self._say(405, f"{self.command} is not answered here: use GET {METRICS_PATH}",
                          {"Allow": "GET", "Connection": "close"})
                return
            self._say(code, message or self.responses.get(code, ("error",))[0], {"Connection": "close"})

        def _say(self, status: int, text: str, headers: Optional[dict] = None):
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


# The exposed series (counter families are shown with their `_total` suffix).
METRIC_NAMES = (
    "sigmatch_events_total",                    # {type}: good events by event type name
    "sigmatch_bad_events_total",                # {reason}: dead letters by reason (records.BAD_REASONS)
    "sigmatch_bad_event_fields_total",          # {reason, field}: the same by the event field that failed
    "sigmatch_bad_bytes_total",                 # the stream's bytes inside bad values
    "sigmatch_unknown_subscribers_total",       # good events whose MSISDN is not in the profiles
    "sigmatch_late_events_total",               # good events whose ts was below the engine clock
    "sigmatch_actions_total",                   # {campaign, kind=send|control}: contacts made
    "sigmatch_funnel_total",                    # {campaign, stage}: every records.FUNNEL counter
    "sigmatch_pending_actions",                 # delayed actions waiting on a timer
    "sigmatch_event_time_lag_seconds",          # wall clock - event clock (absent before the first event)
    "sigmatch_checkpoint_age_seconds",          # since the last checkpoint, or the one restored (absent before the first)
    "sigmatch_checkpoint_duration_seconds",     # how long the last checkpoint took (absent before the first)
    "sigmatch_spool_rejected_total",            # spool files set aside in rejected/, this process
    "sigmatch_spool_changed_total",             # spool files that changed after they were opened, this process
    "sigmatch_spool_tails_rejected_total",      # tails appended too late, set aside in rejected/, this process
    "sigmatch_spool_broken_total",              # spool files whose event stream broke inside them, this process
    "sigmatch_spool_done_bytes",                # bytes kept in SPOOL/done/ (0 until first measured)
    "sigmatch_input_bytes_total",               # bytes fed to the engine, this process
    "sigmatch_input_bytes_per_second",          # over the last observed interval
    "sigmatch_events_per_second",               # good events over the last observed interval
    "sigmatch_connections",                     # {server=tcp|lookup|metrics}: connections held now
    "sigmatch_connections_dropped_total",       # {server, reason}: connections the service ended (CONNECTION_DROPS)
    "sigmatch_config_info",                     # {sha256}: 1 for the live configuration file's sha256
    "sigmatch_last_reload_success",             # 1 when the last load (start-up or SIGHUP) took, 0 when rejected
    "sigmatch_last_reload_timestamp_seconds",   # wall time of that load
)

# Why each server ends a connection, the label values of sigmatch_connections_dropped_total;
# every pair is exposed from the start (0 when that server is off), so alerts need no absent().
CONNECTION_DROPS = {
    "tcp": TCP_DROP_REASONS,
    "lookup": HTTP_DROP_REASONS,
    "metrics": HTTP_DROP_REASONS,
}

# A scrape renders a few kB from a snapshot: two workers keep up with any sane scraper, and
# more connections than this at once are not scrapers.
METRICS_WORKERS = 2
METRICS_MAX_CONNECTIONS = 256

# Stages that `sigmatch_actions_total` reports, by kind.
_ACTION_STAGES = {"send": "sent", "control": "control", "global_control": "global_control"}
assert set(_ACTION_STAGES) == set(KINDS) and set(_ACTION_STAGES.values()) <= set(FUNNEL)


# ---------------------------------------------------------------------------- HOST:PORT

def parse_hostport(text: str, default_host: str = DEFAULT_HOST, option: Optional[str] = None) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT`, `PORT` or `[IPV6]:PORT` -> (host, port); the host defaults to
    127.0.0.1 (never all interfaces unless asked). ValueError with the reason otherwise,
    naming the `option` it was given to (`--listen localhost:abc: port 'abc' is not a number`)."""
    if not isinstance(text, str):
        raise ValueError(f"{option + ': ' if option else ''}address must be a string, not {type(text).__name__}")
    spec = text.strip()
    if not spec:
        raise ValueError(f"{option + ': ' if option else ''}empty address: expected HOST:PORT, :PORT or PORT")
    given = f"{option} {spec}" if option else repr(text)
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise ValueError(f"{given}: missing ']' after the IPv6 address")
        host, rest = spec[1:close], spec[close + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"{given}: expected [IPV6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{given}: {host!r} is not an IPv6 address") from None
    elif ":" in spec:
        host, _, port_text = spec.rpartition(":")
        if ":" in host:
            raise ValueError(f"{given}: put an IPv6 address in brackets, as [::1]:9108")
        host = host or default_host
    else:
        host, port_text = default_host, spec
    if not port_text:
        raise ValueError(f"{given}: missing port (expected HOST:PORT, :PORT or PORT)")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"{given}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{given}: port {port} is out of range (0..65535)")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"{given}: bad host {host!r}")
    return host, port


# ---------------------------------------------------------------------------- the snapshot

@dataclass(frozen=True)
class _Snapshot:
    """Plain numbers read from the engine by `observe`; what a scrape sees."""
    events_by_type: tuple[tuple[str, int], ...]
    # ((reason, n), ...) and ((reason, field, n), ...): field "" when the value as a whole is wrong
    bad_events: tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str, int], ...]]
    unknown_subscribers: int
    funnel: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]    # (campaign, ((stage, n), ...))
    pending: int
    clock_s: Optional[float]            # engine clock in seconds, None before the first event
    input_bytes: int
    events_per_s: Optional[float]
    bytes_per_s: Optional[float]
    checkpoint_at: Optional[float]      # wall time of the last checkpoint
    checkpoint_s: Optional[float]
    late_events: int = 0                # good events with ts below the clock (processed at the clock)
    bad_bytes: int = 0                  # the stream's bytes inside bad values


def _read_engine(engine) -> tuple:
    """(events_by_type, bad_events, unknown, funnel, pending, clock_s, events, late, bad_bytes) of an
    engine."""
    counts = engine._core.counts()
    names = {code: name for name, code in engine.config.event_types.items()}
    by_type = dict.fromkeys(sorted(names.values(), key=lambda n: engine.config.event_types[n]), 0)
    for code, n in counts["events_by_type"].items():
        name = names.get(code, f"code_{code}")
        by_type[name] = by_type.get(name, 0) + int(n)
    by_field = tuple((reason, field, int(n)) for reason in BAD_REASONS
                     for field, n in sorted(counts.get("bad_events_by_field", {}).get(reason, {}).items()))
    bad = (tuple((reason, int(counts["bad_events"].get(reason, 0))) for reason in BAD_REASONS), by_field)
    campaigns = engine.stats["campaigns"]
    funnel = tuple((cid, tuple((stage, int(figures[stage])) for stage in FUNNEL))
                   for cid, figures in campaigns.items())
    clock = engine.clock
    return (tuple(by_type.items()), bad, int(counts["unknown_subscribers"]), funnel, int(engine.pending),
            None if clock is None else clock / 1000.0, int(counts["events"]), int(counts["late_events"]),
            int(counts["bad_bytes"]))


@dataclass(frozen=True)
class _Reload:
    """The live configuration and the last load's outcome."""
    sha256: str                 # "" when the file could not be read back to hash it
    success: bool
    at: float                   # wall time, seconds since the epoch


def _sha256_of(engine) -> str:
    return (getattr(engine, "configuration", None) or {}).get("sha256") or ""


class _ReloadCollector(Collector):
    """What is live: the configuration's sha256 and the last reload's result and time."""

    def __init__(self, owner: "DaemonMetrics"):
        self.owner = owner

    def collect(self) -> Iterator:
        state = self.owner._reload_now()
        info = GaugeMetricFamily("sigmatch_config_info", "The live configuration: 1 for the sha256 of the "
                                 "file the running engine was built from.", labels=["sha256"])
        info.add_metric([state.sha256], 1)
        yield info
        yield GaugeMetricFamily("sigmatch_last_reload_success", "1 when the last load of the configuration "
                                "(start-up or SIGHUP) succeeded, 0 when it was rejected.",
                                value=1 if state.success else 0)
        yield GaugeMetricFamily("sigmatch_last_reload_timestamp_seconds", "When the last load of the "
                                "configuration was tried (seconds since the epoch).", value=state.at)


class _SpoolCollector(Collector):
    """The spool's own figures (DaemonMetrics.observe_spool), apart from the engine's."""

    def __init__(self, owner: "DaemonMetrics"):
        self.owner = owner

    def collect(self) -> Iterator:
        rejected, changed, tails, broken, done_bytes = self.owner._spool_now()
        yield CounterMetricFamily("sigmatch_spool_rejected", "Spool files set aside in rejected/ (a link, "
                                  "not a regular file, another owner's, unreadable, not an event stream).",
                                  value=rejected)
        yield CounterMetricFamily("sigmatch_spool_changed", "Spool files that grew or shrank after they were opened.",
                                  value=changed)
        yield CounterMetricFamily("sigmatch_spool_tails_rejected", "Bytes appended to a spool file after it was "
                                  "processed, set aside in rejected/ (one per tail).", value=tails)
        yield CounterMetricFamily("sigmatch_spool_broken", "Spool files whose event stream broke inside them (not "
                                  "msgpack, an event too large): the bytes after the break set aside in rejected/.",
                                  value=broken)
        yield GaugeMetricFamily("sigmatch_spool_done_bytes", "Bytes kept in the spool's done/ directory.",
                                value=done_bytes or 0)


class _Collector(Collector):
    def __init__(self, owner: "DaemonMetrics"):
        self.owner = owner

    def collect(self) -> Iterator:
        snap = self.owner._snapshot_now()
        wall = self.owner._wall()

        f = CounterMetricFamily("sigmatch_events", "Good events by event type.", labels=["type"])
        for name, n in snap.events_by_type:
            f.add_metric([name], n)
        yield f

        f = CounterMetricFamily("sigmatch_bad_events", "Bad events (dead letters) by reason.", labels=["reason"])
        for reason, n in snap.bad_events[0]:
            f.add_metric([reason], n)
        yield f

        f = CounterMetricFamily("sigmatch_bad_event_fields", "Bad events by reason and the event field that failed "
                                "(empty: the value as a whole).", labels=["reason", "field"])
        for reason, field, n in snap.bad_events[1]:
            f.add_metric([reason, field], n)
        yield f

        yield CounterMetricFamily("sigmatch_bad_bytes", "The stream's bytes inside bad events: far more than "
                                  "an event's size each tells of a damaged header that made one bad value of "
                                  "the events after it.", value=snap.bad_bytes)

        yield CounterMetricFamily("sigmatch_unknown_subscribers",
                                  "Good events whose subscriber is not in the profiles.",
                                  value=snap.unknown_subscribers)
        yield CounterMetricFamily("sigmatch_late_events", "Good events whose ts was below the engine clock "
                                  "(processed at the clock's time).", value=snap.late_events)

        actions = CounterMetricFamily("sigmatch_actions", "Contacts made, by campaign and kind "
                                      "(send: sent to the channel; control: kept as hold-out control).",
                                      labels=["campaign", "kind"])
        funnel = CounterMetricFamily("sigmatch_funnel", "Campaign funnel counters, by campaign and stage.",
                                     labels=["campaign", "stage"])
        for campaign, stages in snap.funnel:
            figures = dict(stages)
            for kind in KINDS:
                actions.add_metric([campaign, kind], figures[_ACTION_STAGES[kind]])
            for stage, n in stages:
                funnel.add_metric([campaign, stage], n)
        yield actions
        yield funnel

        yield GaugeMetricFamily("sigmatch_pending_actions", "Delayed actions waiting for their due time.",
                                value=snap.pending)

        if snap.clock_s is not None:
            yield GaugeMetricFamily("sigmatch_event_time_lag_seconds",
                                    "Wall clock minus the engine's event clock (largest event ts).",
                                    value=wall - snap.clock_s)
        if snap.checkpoint_at is not None:
            yield GaugeMetricFamily("sigmatch_checkpoint_age_seconds", "Seconds since the last checkpoint.",
                                    value=max(0.0, wall - snap.checkpoint_at))
        if snap.checkpoint_s is not None:
            yield GaugeMetricFamily("sigmatch_checkpoint_duration_seconds",
                                    "How long the last checkpoint took.", value=snap.checkpoint_s)

        yield CounterMetricFamily("sigmatch_input_bytes", "Input bytes fed to the engine by this process.",
                                  value=snap.input_bytes)
        if snap.bytes_per_s is not None:
            yield GaugeMetricFamily("sigmatch_input_bytes_per_second",
                                    "Input bytes per second over the last observed interval.",
                                    value=snap.bytes_per_s)
        if snap.events_per_s is not None:
            yield GaugeMetricFamily("sigmatch_events_per_second",
                                    "Good events per second over the last observed interval.",
                                    value=snap.events_per_s)

        # the servers' own counts, read at scrape time (each under its own lock, never the engine's)
        held = GaugeMetricFamily("sigmatch_connections", "Connections held now, by server.", labels=["server"])
        dropped = CounterMetricFamily("sigmatch_connections_dropped",
                                      "Connections the service ended, by server and reason.",
                                      labels=["server", "reason"])
        watched = self.owner._watched_now()
        for server, reasons in CONNECTION_DROPS.items():
            source = watched.get(server)
            open_now, drops = source.connection_counts() if source is not None else (0, {})
            held.add_metric([server], open_now)
            for reason in reasons:
                dropped.add_metric([server, reason], drops.get(reason, 0))
        yield held
        yield dropped


# ---------------------------------------------------------------------------- the metrics

class DaemonMetrics:
    """The daemon's metrics on a registry of their own (never prometheus_client's global one).

    Build it once the engine is ready (restored): the engine's current figures are the
    baseline of the first per-second rates. `wall` is the wall clock (seconds since the
    epoch) read at scrape time for the lag and checkpoint age."""

    def __init__(self, engine, *, wall: Callable[[], float] = time.time, checkpoint_at: Optional[float] = None):
        self._wall = wall
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self._server: Optional[BoundedHTTPServer] = None
        self._watched: dict = {}               # server name -> object with connection_counts()
        self._input_bytes = 0
        now = wall()
        by_type, bad, unknown, funnel, pending, clock_s, events, late, bad_bytes = _read_engine(engine)
        self._last = (now, events, 0)          # (wall, events, input bytes) at the last rate update
        # after a restart, the checkpoint restored (its duration is not known)
        self._snapshot = _Snapshot(by_type, bad, unknown, funnel, pending, clock_s, 0, None, None, checkpoint_at,
                                   None, late_events=late, bad_bytes=bad_bytes)
        self.registry.register(_Collector(self))
        self._spool = (0, 0, 0, 0, None)
        self.registry.register(_SpoolCollector(self))
        self._reload = _Reload(_sha256_of(engine), True, now)
        self.registry.register(_ReloadCollector(self))

    def observe_reload(self, engine, *, now: Optional[float] = None) -> None:
        """A SIGHUP's outcome: `engine` the new engine when the reload took effect (its
        configuration becomes the live one), None when it was rejected (the live one stays).
        `now`: when it was tried (default: the wall clock)."""
        if now is None:
            now = self._wall()
        with self._lock:
            sha256 = self._reload.sha256 if engine is None else _sha256_of(engine)
            self._reload = _Reload(sha256, engine is not None, float(now))

    def _reload_now(self) -> _Reload:
        with self._lock:
            return self._reload

    def observe(self, engine, *, input_bytes: int = 0, checkpoint_seconds: Optional[float] = None,
                now: Optional[float] = None) -> None:
        """Take the engine's current figures (call on the thread that drives the engine, after
        each commit). `input_bytes`: bytes fed since the previous call (not a running total).
        `checkpoint_seconds`: how long the checkpoint of this commit took, when one was written
        (it also restarts the checkpoint age). `now`: wall time of this observation (default:
        the wall clock); the per-second rates cover the time since the previous observation
        that moved the clock."""
        if input_bytes < 0:
            raise ValueError(f"input_bytes must be >= 0, not {input_bytes}")
        if checkpoint_seconds is not None and checkpoint_seconds < 0:
            raise ValueError(f"checkpoint_seconds must be >= 0, not {checkpoint_seconds}")
        if now is None:
            now = self._wall()
        by_type, bad, unknown, funnel, pending, clock_s, events, late, bad_bytes = _read_engine(engine)
        with self._lock:
            old = self._snapshot
            self._input_bytes += int(input_bytes)
            events_per_s, bytes_per_s = old.events_per_s, old.bytes_per_s
            last_now, last_events, last_bytes = self._last
            if events < last_events:
                # another engine (a fresh start after a damaged checkpoint): start the rates again
                self._last = (now, events, self._input_bytes)
            elif now > last_now:
                dt = now - last_now
                events_per_s = (events - last_events) / dt
                bytes_per_s = (self._input_bytes - last_bytes) / dt
                self._last = (now, events, self._input_bytes)
            checkpoint_at, checkpoint_s = old.checkpoint_at, old.checkpoint_s
            if checkpoint_seconds is not None:
                checkpoint_at, checkpoint_s = now, float(checkpoint_seconds)
            self._snapshot = _Snapshot(by_type, bad, unknown, funnel, pending, clock_s, self._input_bytes,
                                       events_per_s, bytes_per_s, checkpoint_at, checkpoint_s, late_events=late,
                                       bad_bytes=bad_bytes)

    def observe_spool(self, *, rejected: int, changed: int, tails: int, broken: int = 0,
                      done_bytes: Optional[int]) -> None:
        """The spool's figures so far (counts of this process; `done_bytes` None until measured)."""
        with self._lock:
            self._spool = (int(rejected), int(changed), int(tails), int(broken), done_bytes)

    def _spool_now(self) -> tuple:
        with self._lock:
            return self._spool

    def _snapshot_now(self) -> _Snapshot:
        with self._lock:
            return self._snapshot

    def watch(self, server: str, source) -> None:
        """Expose `source.connection_counts()` -> (held now, {reason: dropped}) as the
        connection series of `server` (a key of CONNECTION_DROPS); read at scrape time."""
        if server not in CONNECTION_DROPS:
            raise ValueError(f"unknown server {server!r}: one of {', '.join(CONNECTION_DROPS)}")
        with self._lock:
            self._watched[server] = source

    def _watched_now(self) -> dict:
        with self._lock:
            return dict(self._watched)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format (what a scrape of /metrics returns)."""
        from prometheus_client import generate_latest
        return generate_latest(self.registry)

    # -- the HTTP endpoint

    def serve(self, host: str = DEFAULT_HOST, port: int = 0) -> tuple[str, int]:
        """Serve the metrics over HTTP at GET /metrics (another path: 404, another method:
        405, each a line of text that says where the metrics are). Returns the address
        bound (port 0 picks a free port). OSError when the address cannot be bound;
        RuntimeError when already serving.

        prometheus_client's start_http_server has socketserver's backlog of 5 and a thread
        per connection; this serves its handler on a BoundedHTTPServer instead (backlog 1024,
        METRICS_WORKERS threads, a request head within 10 s, at most METRICS_MAX_CONNECTIONS
        connections), so a burst of scrapes or idle sockets cannot stall it."""
        if self._server is not None:
            raise RuntimeError("metrics are already being served")
        server = BoundedHTTPServer(_handler(self.registry), host, port, name="metrics",
                                   workers=METRICS_WORKERS, max_connections=METRICS_MAX_CONNECTIONS)
        self._server = server.start()
        self.watch("metrics", server)
        return self.address

    @property
    def address(self) -> Optional[tuple[str, int]]:
        """(host, port) served, None when not serving."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return host, port

    def close(self) -> None:
        """Stop serving (a no-op when not serving); the port is free on return."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()

    def __enter__(self) -> "DaemonMetrics":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
