"""Settings, read from the environment (never from the repository).

Every setting has a ``SAFETOUR_*`` variable; ``safetour --help`` and the README list them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from schemas import ConfigError, Thresholds, Zone, ZoneRegistryError, load_zones
from streams import RegistryRules, WindowedDensityEngine, check_zones
from streams.alarm import AlarmConfig
from streams.pipeline import Pipeline

from .kafka import KafkaConfig

START_MODES = ("recent", "from-start")


def repo_root() -> Path:
    """The source checkout this package runs from (it holds ``deploy/``)."""
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names. ``prefix`` lets tests and staging share a cluster without colliding."""

    prefix: str = "safetour."
    sensor: str | None = None  # read sensor events from this topic instead (replays, benchmarks)
    # A drill's worker (`safetour run --drill`) reads and keeps state on topics of its own
    # (``prefix``) but writes its alerts, marked, where the channels read (this prefix).
    outputs: str | None = None

    @property
    def sensor_events(self) -> str:
        return self.sensor or f"{self.prefix}sensor-events.v1"

    @property
    def reports(self) -> str:
        return f"{self.prefix}reports.v1"

    @property
    def zones(self) -> str:
        return f"{self.prefix}zones.v1"

    @property
    def alerts(self) -> str:
        return f"{self.outputs or self.prefix}alerts.v1"

    @property
    def alerts_cap(self) -> str:
        return f"{self.outputs or self.prefix}alerts-cap.v1"

    @property
    def density(self) -> str:
        return f"{self.prefix}density.v1"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}dlq.v1"

    @property
    def notify_dlq(self) -> str:
        return f"{self.prefix}notify-dlq.v1"

    @property
    def acks(self) -> str:
        return f"{self.prefix}acks.v1"

    @property
    def escalations(self) -> str:
        return f"{self.prefix}escalations.v1"

    @property
    def shelves(self) -> str:
        """Operators' shelving of a zone's notifications (agents/delivery/shelving.py)."""
        return f"{self.prefix}shelves.v1"

    @property
    def state(self) -> str:
        return f"{self.prefix}state.v1"

    @property
    def health(self) -> str:
        return f"{self.prefix}health.v1"

    @property
    def by_zone(self) -> str:
        """Internal: sensor messages and reports re-keyed by zone (agents/worker/router.py), on the
        partition safetour picks for the zone (streams/route.py ``zone_partition``)."""
        return f"{self.prefix}by-zone.v1"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _forecast_span(env: Mapping[str, str]) -> float:
    span = _float(env, "SAFETOUR_FORECAST_SPAN_S", 300.0)
    if span < 60:
        raise ConfigError(f"SAFETOUR_FORECAST_SPAN_S={span:g} is less than the 60 s the "
                          "forecast needs")
    return span


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r}: use 1 or 0")


def _levels(
    env: Mapping[str, str], name: str, default: tuple[float, float, float]
) -> tuple[float, float, float]:
    raw = env.get(name)
    if not raw:
        return default
    try:
        e, h, c = (float(x) for x in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: give three numbers, elevated,high,critical") from None
    if not 0 < e < h < c:
        raise ConfigError(f"{name}={raw!r}: levels must rise: 0 < elevated < high < critical")
    return e, h, c


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a safetour process needs to know, with documented defaults."""

    # Kafka bootstrap servers. Empty: use (and start if needed) the embedded broker.
    bootstrap: str = ""
    # Port of the embedded broker (its controller listens on port + 1).
    broker_port: int = 19092
    # The embedded broker secured (SASL_SSL, SCRAM, TLS, ACLs; agents/devtools/broker.py), its
    # controller and inter-broker mTLS listeners on port + 1 and port + 2.
    broker_secure: bool = False
    topics: Topics = field(default_factory=Topics)
    # Faust app id = consumer group id of the worker.
    app_id: str = "safetour-worker"
    zones_file: Path = field(default_factory=lambda: repo_root() / "deploy/zones/phitsanulok.yaml")
    # Local state (embedded broker data and jars, faust data dir); never committed.
    state_dir: Path = field(default_factory=lambda: repo_root() / ".safetour")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Event-time windows (streams/density.py): length, emit interval, allowed lateness, and
    # how long a partition may stay quiet before its watermark follows the wall clock.
    window_s: float = 60.0
    slide_s: float = 5.0
    grace_s: float = 10.0
    idle_s: float = 30.0
    # Seconds between state snapshots (recovery replays at most this much input).
    snapshot_s: float = 10.0
    # Where a partition without a snapshot starts: "recent" (the arrivals of the last
    # window + grace, found by timestamp) or "from-start" (the oldest retained: a backtest).
    start: str = "recent"
    # Export a per-zone density gauge only up to this many zones (cardinality).
    zone_metrics_max: int = 500
    # Alarm discipline (streams/alarm.py).
    on_delay_s: float = 10.0
    off_delay_s: float = 30.0
    dead_band: float = 0.10
    realarm_s: float = 300.0
    horizon_s: float = 600.0
    forecast_span_s: float = 300.0  # the forecast's robust slope: over this much history
    # Default density levels (elevated, high, critical), p/m²; zones may override them.
    standing_levels: tuple[float, float, float] = (2.0, 3.5, 5.0)
    moving_levels: tuple[float, float, float] = (1.08, 2.17, 3.5)
    # A worker that dies without leaving the group holds its partitions this long; faust's
    # default (60 s) would blind its zones for a minute. 6 s is Kafka's minimum (heartbeats
    # every 1.5 s, from the consumer's own thread, so a busy pipeline does not miss them).
    session_timeout_s: float = 6.0
    # Most sensor messages a fetch (one batch through the pipeline: agents/worker/transport.py).
    batch_max: int = 5000
    # Input rules (README "Input rules"): a reading or report stamped further ahead of its
    # arrival than this is dead-lettered `future`; one up to `lead_s` ahead counts in its
    # own bucket, one further ahead at arrival + lead_s.
    max_skew_s: float = 300.0
    lead_s: float = 30.0
    exercise: bool = False  # a drill's worker: its alerts carry "exercise": true
    # Accept readings from sensors the registry does not list, for zones that list none
    # (at most 64 such sensors a zone); otherwise they are dead-lettered `unknown_sensor`.
    accept_unlisted: bool = False
    # Re-key readings and reports by zone onto the by-zone topic first (streams/route.py,
    # streams/lanes.py): one owner per zone whatever the producers' partitioners.
    route_by_zone: bool = True
    # The dashboard's banner: no heartbeat and no density record for this long.
    dashboard_stale_s: float = 30.0
    # Dashboard sign-in (agents/dashboard/dashboard_auth.py): a session's absolute and idle
    # lifetime; whether a proxy's X-Forwarded-Proto/-For are believed; HTTPS certificate and key
    # (PEM).
    dashboard_session_s: float = 8 * 3600.0
    dashboard_idle_s: float = 30 * 60.0
    dashboard_trust_proxy: bool = False
    dashboard_tls_cert_file: str | None = None
    dashboard_tls_key_file: str | None = None
    # How to connect to Kafka (SAFETOUR_KAFKA_*: security, connect timeout); its bootstrap
    # follows ``bootstrap_servers`` (see :attr:`kafka`). None: plaintext, defaults.
    kafka_security: KafkaConfig | None = None

    def pipeline(self, zones: Iterable[Zone]) -> Pipeline:
        """The processing pipeline these settings describe."""
        zone_list = list(zones)
        alarm = AlarmConfig(on_delay_s=self.on_delay_s, off_delay_s=self.off_delay_s,
                            dead_band=self.dead_band, realarm_s=self.realarm_s,
                            horizon_s=self.horizon_s, forecast_span_s=self.forecast_span_s,
                            standing=Thresholds(*self.standing_levels),
                            moving=Thresholds(*self.moving_levels))
        return Pipeline(zone_list, engine=self.density_engine(zone_list), alarm=alarm,
                        max_skew_ms=round(self.max_skew_s * 1000), exercise=self.exercise)

    def density_engine(self, zones: Iterable[Zone]) -> WindowedDensityEngine:
        """The density engine these settings describe."""
        return WindowedDensityEngine(
            zones,
            window_ms=round(self.window_s * 1000),
            slide_ms=round(self.slide_s * 1000),
            grace_ms=round(self.grace_s * 1000),
            idle_ms=round(self.idle_s * 1000),
            lead_ms=round(self.lead_s * 1000),
            accept_unlisted=self.accept_unlisted,
        )

    def registry_rules(self) -> RegistryRules:
        """The registry rules of the engine and alarms these settings describe (the same
        window, slide and slide limit as :meth:`density_engine`, the same defaults as
        :meth:`pipeline`)."""
        window_ms, slide_ms = round(self.window_s * 1000), round(self.slide_s * 1000)
        return RegistryRules(window_ms=window_ms, slide_ms=slide_ms,
                             max_slides=window_ms // slide_ms,
                             standing=Thresholds(*self.standing_levels),
                             moving=Thresholds(*self.moving_levels))

    def load_registry(self, path: str | Path | None = None) -> list[Zone]:
        """Load a registry file (default ``zones_file``) and check it against
        :meth:`registry_rules`; ZoneRegistryError (one line, naming the file) if it breaks
        the contract or a rule."""
        p = Path(path) if path is not None else self.zones_file
        zones = load_zones(p)
        try:
            check_zones(zones, self.registry_rules())
        except ZoneRegistryError as exc:
            raise ZoneRegistryError(f"{p}: {exc}") from None
        return zones

    @property
    def embedded(self) -> bool:
        return not self.bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def kafka(self) -> KafkaConfig:
        """The Kafka client factory (agents/kafka.py) for these settings: every component
        builds its clients from it."""
        base = self.kafka_security or KafkaConfig(self.bootstrap_servers)
        if base.bootstrap == self.bootstrap_servers:
            return base
        return replace(base, bootstrap=self.bootstrap_servers)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        s = cls(
            bootstrap=e.get("SAFETOUR_KAFKA_BOOTSTRAP", "").strip(),
            broker_port=_int(e, "SAFETOUR_BROKER_PORT", 19092),
            broker_secure=_bool(e, "SAFETOUR_BROKER_SECURE"),
            topics=Topics(e.get("SAFETOUR_TOPIC_PREFIX", "safetour."),
                          e.get("SAFETOUR_SENSOR_TOPIC") or None,
                          e.get("SAFETOUR_ALERTS_TOPIC_PREFIX") or None),
            app_id=e.get("SAFETOUR_APP_ID", "safetour-worker"),
            web_host=e.get("SAFETOUR_WEB_HOST", "127.0.0.1"),
            web_port=_int(e, "SAFETOUR_WEB_PORT", 6066),
            window_s=_float(e, "SAFETOUR_WINDOW_S", 60.0),
            slide_s=_float(e, "SAFETOUR_SLIDE_S", 5.0),
            grace_s=_float(e, "SAFETOUR_GRACE_S", 10.0),
            idle_s=_float(e, "SAFETOUR_IDLE_S", 30.0),
            snapshot_s=_float(e, "SAFETOUR_SNAPSHOT_S", 10.0),
            start=e.get("SAFETOUR_START", "").strip().lower() or "recent",
            session_timeout_s=_float(e, "SAFETOUR_SESSION_TIMEOUT_S", 6.0),
            zone_metrics_max=_int(e, "SAFETOUR_ZONE_METRICS_MAX", 500),
            on_delay_s=_float(e, "SAFETOUR_ON_DELAY_S", 10.0),
            off_delay_s=_float(e, "SAFETOUR_OFF_DELAY_S", 30.0),
            dead_band=_float(e, "SAFETOUR_DEAD_BAND", 0.10),
            realarm_s=_float(e, "SAFETOUR_REALARM_S", 300.0),
            horizon_s=_float(e, "SAFETOUR_FORECAST_HORIZON_S", 600.0),
            forecast_span_s=_forecast_span(e),
            standing_levels=_levels(e, "SAFETOUR_STANDING_LEVELS", (2.0, 3.5, 5.0)),
            moving_levels=_levels(e, "SAFETOUR_MOVING_LEVELS", (1.08, 2.17, 3.5)),
            batch_max=_int(e, "SAFETOUR_BATCH_MAX", 5000),
            max_skew_s=_float(e, "SAFETOUR_MAX_SKEW_S", 300.0),
            lead_s=_float(e, "SAFETOUR_LEAD_S", 30.0),
            exercise=_bool(e, "SAFETOUR_EXERCISE"),
            accept_unlisted=_bool(e, "SAFETOUR_ACCEPT_UNLISTED_SENSORS"),
            route_by_zone=_bool(e, "SAFETOUR_ROUTE_BY_ZONE", True),
            dashboard_stale_s=_float(e, "SAFETOUR_DASHBOARD_STALE_S", 30.0),
            dashboard_session_s=_float(e, "SAFETOUR_DASHBOARD_SESSION_S", 8 * 3600.0),
            dashboard_idle_s=_float(e, "SAFETOUR_DASHBOARD_IDLE_S", 30 * 60.0),
            dashboard_trust_proxy=_bool(e, "SAFETOUR_DASHBOARD_TRUST_PROXY"),
            dashboard_tls_cert_file=e.get("SAFETOUR_DASHBOARD_TLS_CERT_FILE") or None,
            dashboard_tls_key_file=e.get("SAFETOUR_DASHBOARD_TLS_KEY_FILE") or None,
        )
        s = replace(s, kafka_security=KafkaConfig.from_env(e, s.bootstrap_servers))
        if e.get("SAFETOUR_ZONES"):
            s = replace(s, zones_file=Path(e["SAFETOUR_ZONES"]))
        if e.get("SAFETOUR_STATE_DIR"):
            s = replace(s, state_dir=Path(e["SAFETOUR_STATE_DIR"]))
        if min(s.window_s, s.slide_s, s.batch_max) <= 0:
            raise ConfigError(
                "SAFETOUR_WINDOW_S, _SLIDE_S and _BATCH_MAX must be > 0")
        if min(s.grace_s, s.idle_s, s.lead_s) < 0:
            raise ConfigError("SAFETOUR_GRACE_S, _IDLE_S and _LEAD_S must be >= 0")
        if s.max_skew_s < s.lead_s:
            raise ConfigError("SAFETOUR_MAX_SKEW_S must be at least SAFETOUR_LEAD_S")
        if s.start not in START_MODES:
            raise ConfigError(f"SAFETOUR_START={s.start!r}: use recent or from-start")
        if s.dashboard_stale_s <= 0:
            raise ConfigError("SAFETOUR_DASHBOARD_STALE_S must be > 0")
        if min(s.dashboard_session_s, s.dashboard_idle_s) <= 0:
            raise ConfigError("SAFETOUR_DASHBOARD_SESSION_S and _IDLE_S must be > 0")
        ratio = s.window_s / s.slide_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ConfigError("SAFETOUR_WINDOW_S must be a multiple of SAFETOUR_SLIDE_S")
        return s


ENV_HELP = """\
environment:
  SAFETOUR_KAFKA_BOOTSTRAP  existing Kafka cluster (host:port,...); unset = embedded broker
  SAFETOUR_KAFKA_SECURITY_PROTOCOL  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
  SAFETOUR_KAFKA_SASL_MECHANISM  SCRAM-SHA-512 (default with SASL), SCRAM-SHA-256 or PLAIN
  SAFETOUR_KAFKA_USER, SAFETOUR_KAFKA_PASSWORD or SAFETOUR_KAFKA_PASSWORD_FILE  SASL login
  SAFETOUR_KAFKA_CA_FILE    CA bundle (PEM) the broker's certificate is checked against
  SAFETOUR_KAFKA_CERT_FILE/_KEY_FILE  client certificate and key (PEM), for mTLS
  SAFETOUR_KAFKA_CONNECT_TIMEOUT_S  tools give up on an unreachable Kafka after this (15)
  SAFETOUR_BROKER_PORT      embedded broker port (default 19092; controller on +1)
  SAFETOUR_BROKER_SECURE    1: the embedded broker is secured (as `broker start --secure`)
  SAFETOUR_TOPIC_PREFIX     topic name prefix (default "safetour.")
  SAFETOUR_SENSOR_TOPIC     read sensor events from this topic instead (replays, benchmarks)
  SAFETOUR_APP_ID           faust app id / consumer group (default safetour-worker)
  SAFETOUR_ZONES            zone registry file (default deploy/zones/phitsanulok.yaml)
  SAFETOUR_STATE_DIR        local state: broker jars and data, faust data (default .safetour/)
  SAFETOUR_WEB_HOST/_PORT   worker web server (default 127.0.0.1:6066)
  SAFETOUR_LOG_FORMAT       text (default) or json: one JSON object a log line
  SAFETOUR_ZONE_METRICS_MAX per-zone density gauges only up to this many zones (default 500)
  SAFETOUR_LOG_LEVEL        DEBUG, INFO (default), WARNING or ERROR
  SAFETOUR_WINDOW_S         sliding window length in seconds (default 60)
  SAFETOUR_SLIDE_S          emit interval of the window in seconds (default 5)
  SAFETOUR_GRACE_S          allowed lateness of events in seconds (default 10)
  SAFETOUR_IDLE_S           quiet time before a partition follows the wall clock (default 30)
  SAFETOUR_SNAPSHOT_S       seconds between state snapshots for recovery (default 10)
  SAFETOUR_START            without a snapshot, start at the last window + grace of input
                            (recent, default) or at the oldest retained (from-start: backtest)
  SAFETOUR_ON_DELAY_S       a level must hold this long before it is raised (default 10)
  SAFETOUR_OFF_DELAY_S      ... and be cleared this long before it is lowered (default 30)
  SAFETOUR_DEAD_BAND        a level clears below (1 - band) x its threshold (default 0.10)
  SAFETOUR_REALARM_S        re-send a critical alert this often while it lasts (default 300)
  SAFETOUR_FORECAST_HORIZON_S  early warning when critical is this close at the trend (600)
  SAFETOUR_FORECAST_SPAN_S  the forecast's robust slope looks back this far, >= 60 (300)
  SAFETOUR_STANDING_LEVELS  elevated,high,critical p/m² for standing crowds (2.0,3.5,5.0)
  SAFETOUR_MOVING_LEVELS    elevated,high,critical p/m² for moving crowds (1.08,2.17,3.5)
  SAFETOUR_SESSION_TIMEOUT_S  consumer-group session timeout: failover time of a dead worker
                            (default 6, Kafka's minimum)
  SAFETOUR_BATCH_MAX        most sensor messages a fetch, one pipeline batch (default 5000)
  SAFETOUR_MAX_SKEW_S       readings/reports stamped further ahead of their arrival are
                            dead-lettered `future` (default 300)
  SAFETOUR_LEAD_S           a reading counts at most this far ahead of its arrival (30)
  SAFETOUR_ACCEPT_UNLISTED_SENSORS  1: accept unlisted sensors for zones that list none
  SAFETOUR_DASHBOARD_STALE_S  the dashboard's "no data" banner after this many seconds with
                            no worker heartbeat and no density record (default 30)
  SAFETOUR_DASHBOARD_SESSION_S/_IDLE_S  a dashboard session ends this long after sign-in
                            (default 28800) or after this long unused (default 1800)
  SAFETOUR_DASHBOARD_TRUST_PROXY  1: believe X-Forwarded-Proto/-For (behind a TLS proxy)
  SAFETOUR_DASHBOARD_TLS_CERT_FILE/_KEY_FILE  serve the dashboard over HTTPS (PEM)
"""
