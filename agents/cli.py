"""The ``safetour`` command.

    safetour run                   the demo: broker, topics, worker, a scenario, live alerts
    safetour broker start|stop|status|logs [--secure]
    safetour acls apply [--dry-run]  the principals' ACLs (deploy/kafka/acls.json) on a cluster
    safetour topics create|list
    safetour zones publish         push a registry file to the zones topic (applied live)
    safetour replay                recorded JSONL files through the pipeline, no broker
    safetour worker                the faust worker (consumes sensor events, emits alerts)
    safetour alerts tail           print alerts as they arrive
    safetour simulate              a Phitsanulok scenario with faults and ground truth
    safetour shelve|unshelve ZONE  hold back a zone's notifications below critical (<= 4 h)
    safetour shelves               the zones shelved now
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from schemas import SafetourError

from .config import ENV_HELP, Settings
from .devtools import SCENARIOS, BrokerError, EmbeddedBroker
from .kafka_safety import install_safe_fetch
from .logs import faust_logging_config, logging_config
from .processes import echo as _echo
from .run import cmd_run, dashboard_operators
from .topics import create_topics, list_topics, topic_specs

log = logging.getLogger("safetour.cli")


def ensure_broker(settings: Settings) -> bool:
    """Start the embedded broker if no external cluster is configured; True if started now."""
    if not settings.embedded:
        _echo(f"using Kafka at {settings.bootstrap} (SAFETOUR_KAFKA_BOOTSTRAP)")
        return False
    return EmbeddedBroker(settings, echo=_echo, say=print).start()


def broker_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment ``safetour broker`` reads its settings from: without the client
    settings (``SAFETOUR_KAFKA_*`` but the bootstrap). It manages the LOCAL embedded broker,
    which the shell's client variables (the ones ``broker start --secure`` prints: their CA
    file may be gone while its certificate is rotated) must not stop."""
    return {k: v for k, v in env.items()
            if not k.startswith("SAFETOUR_KAFKA_") or k == "SAFETOUR_KAFKA_BOOTSTRAP"}


def names_embedded(bootstrap: str, port: int) -> bool:
    """True if every address of ``bootstrap`` is the embedded broker's own (loopback, its
    port)."""
    addrs = [a.strip() for a in bootstrap.split(",") if a.strip()]
    for addr in addrs:
        host, _, p = addr.rpartition(":")
        if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or p != str(port):
            return False
    return bool(addrs)


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    """The embedded broker(s) of the state dir. stop/status/logs without ``--secure`` act
    on whichever runs (plaintext, secured or both), by the pid in its pid file."""
    secure = bool(args.secure or settings.broker_secure)
    if args.action == "start":
        if not settings.embedded and not names_embedded(settings.bootstrap,
                                                        settings.broker_port):
            _echo(f"SAFETOUR_KAFKA_BOOTSTRAP={settings.bootstrap} names another cluster: "
                  f"nothing to start (the embedded broker is 127.0.0.1:{settings.broker_port})")
            return 0
        EmbeddedBroker(replace(settings, broker_secure=secure), echo=_echo,
                       say=print).start(timeout=args.timeout)
        return 0
    brokers = [EmbeddedBroker(settings, echo=_echo, secure=k)
               for k in ((True,) if secure else (False, True))]
    running = [b for b in brokers if b.running_pid() is not None]
    if args.action == "stop":
        stopped = [b for b in running if b.stop()]  # each says which it stops
        if not stopped:
            kind = "secured " if secure else ""
            _echo(f"no embedded {kind}broker is running (state dir {settings.state_dir})")
    elif args.action == "status":
        if not running:
            b = brokers[0]
            print(f"stopped bootstrap={b.bootstrap} log={b.log_file}")
            return 3
        rc = 0
        for b in running:
            st = b.status()
            print(f"{'running' if st.listening else 'not-listening'} {st.kind} pid={st.pid} "
                  f"bootstrap={st.bootstrap} log={st.log_file}")
            rc = rc if st.listening else 3
        return rc
    else:
        logged = [b for b in brokers if b.log_file.exists()]
        shown = running or sorted(logged, key=lambda b: b.log_file.stat().st_mtime)[-1:] \
            or brokers[:1]
        for b in shown:
            if len(shown) > 1:
                print(f"== the {b.kind} broker: {b.log_file}")
            print(b.log_tail(args.lines))
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "create":
        started = ensure_broker(settings) if args.start_broker else False
        specs = topic_specs(settings.topics, replication=args.replication)
        # A broker started just now may need a few more seconds before it takes requests.
        result = asyncio.run(create_topics(settings.kafka, specs,
                                           wait_s=60.0 if started else None))
        for s in specs:
            print(f"{result[s.name]:<8} {s.name} partitions={s.partitions} "
                  + " ".join(f"{k}={v}" for k, v in s.config.items()))
    else:
        for name in asyncio.run(list_topics(settings.kafka)):
            print(name)
    return 0


def cmd_acls(args: argparse.Namespace, settings: Settings) -> int:
    from .acls import apply_acls, default_file, format_result, load_acls  # noqa: PLC0415

    path = Path(args.file) if args.file else default_file()
    acls = load_acls(settings, path)
    result = asyncio.run(apply_acls(settings.kafka, acls, dry_run=args.dry_run))
    for line in format_result(result, dry_run=args.dry_run):
        print(line)
    return 0


def cmd_zones(args: argparse.Namespace, settings: Settings) -> int:
    from .worker import publish_zones  # noqa: PLC0415

    path = Path(args.file) if args.file else settings.zones_file
    zones = settings.load_registry(path)
    n = asyncio.run(publish_zones(settings.kafka, settings.topics.zones, zones))
    _echo(f"published {n} zones from {path} to {settings.topics.zones}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:

    from streams.replay import replay, replay_pipeline  # noqa: PLC0415

    zones = settings.load_registry(args.zones)
    configured = settings.pipeline(zones)
    pipe = replay_pipeline(zones, configured.engine, configured.alerts.config)
    show = sys.stderr.isatty() and not args.quiet
    t0 = time.monotonic()

    def progress(st: object) -> None:
        if show:
            lines = getattr(st, "lines", 0)
            rate = lines / max(time.monotonic() - t0, 1e-9)
            print(f"\rreplay: {lines:,} lines, {getattr(st, 'alerts', 0):,} alerts, "
                  f"{rate:,.0f} lines/s", end="", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(Path(args.out).open("wb"))
        dens = stack.enter_context(Path(args.density).open("wb")) if args.density else None
        dlq = stack.enter_context(Path(args.dlq).open("wb")) if args.dlq else None
        stats = replay(pipe, Path(args.events), out, reports=Path(args.reports)
                       if args.reports else None, density_out=dens, dlq_out=dlq,
                       progress=progress)
    if show:
        print(file=sys.stderr)
    _echo(f"replayed {stats.lines:,} lines ({stats.events:,} events): {stats.alerts:,} alerts "
          f"-> {args.out}; {stats.dead_lettered:,} dead-lettered")
    return 0


def _sim_progress(sent: int, rate: float, scenario_ms: int) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from streams.messages import BANGKOK  # noqa: PLC0415

    clock = datetime.fromtimestamp(scenario_ms / 1000, UTC).astimezone(BANGKOK)
    print(f"\rsimulate: {sent:,} messages, {rate:,.0f}/s, scenario clock "
          f"{clock:%Y-%m-%d %H:%M:%S} ICT", end="", file=sys.stderr, flush=True)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from . import devtools as sim  # noqa: PLC0415

    if args.scenario not in sim.SCENARIOS:
        raise SafetourError(f"unknown scenario {args.scenario!r}; choose from "
                            f"{', '.join(sim.SCENARIOS)}")
    zones = settings.load_registry()
    out = sim.simulate(sim.SCENARIOS[args.scenario], zones, seed=args.seed,
                       grace_s=settings.grace_s)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if args.truth:
        Path(args.truth).parent.mkdir(parents=True, exist_ok=True)
        Path(args.truth).write_bytes(orjson.dumps(out.truth, option=orjson.OPT_INDENT_2))
    if args.out_dir:
        d = Path(args.out_dir)
        d.mkdir(parents=True, exist_ok=True)
        sim.write_files(out, str(d / "events.jsonl"), str(d / "reports.jsonl"))
        _echo(f"{args.scenario}: {len(out.events):,} sensor messages and {len(out.reports):,} "
              f"reports -> {d}/events.jsonl, {d}/reports.jsonl")
        return 0
    progress = _sim_progress if sys.stderr.isatty() and not args.quiet else None
    sent = [0]
    stopped = [False]

    async def publish(stop: asyncio.Event) -> None:
        # SIGTERM or SIGINT: stop sending, flush what was sent, say how much (within 1 s).
        sent[0] = await sim.publish_live(out, settings.kafka, settings.topics.sensor_events,
                                         settings.topics.reports, speed=args.speed,
                                         progress=progress, stop=stop)
        stopped[0] = stop.is_set()

    asyncio.run(_until_signal(publish))
    if progress is not None:
        print(file=sys.stderr)
    _echo(f"{args.scenario}: {'stopped; ' if stopped[0] else ''}published {sent[0]:,} messages")
    return 0


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``run(stop)`` until it returns; SIGINT or SIGTERM sets ``stop`` (a clean exit)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _notifier_factory(args: argparse.Namespace) -> Any:
    from .delivery import LineNotifier, WebhookNotifier, read_secret  # noqa: PLC0415

    if args.channel == "email":
        from .delivery import EmailNotifier, SmtpConfig  # noqa: PLC0415

        cfg = SmtpConfig.from_env(os.environ)
        return lambda session: EmailNotifier(cfg)
    if args.channel == "line":
        token = read_secret(os.environ, "SAFETOUR_LINE_TOKEN")
        to = os.environ.get("SAFETOUR_LINE_TO")
        if not to:
            raise SafetourError("set SAFETOUR_LINE_TO (a user, group or room id)")
        base = os.environ.get("SAFETOUR_LINE_BASE_URL", "https://api.line.me")
        return lambda session: LineNotifier(token, to, session, base_url=base)
    url = args.url or os.environ.get("SAFETOUR_WEBHOOK_URL")
    if not url:
        raise SafetourError("give --url or set SAFETOUR_WEBHOOK_URL")
    secret = read_secret(os.environ, "SAFETOUR_WEBHOOK_SECRET")
    return lambda session: WebhookNotifier(url, secret, session)


# Sends a second per channel, by default: LINE answers 429 past its limit, SMTP relays
# throttle, and a webhook receiver is someone else's server.
DEFAULT_RATES = {"webhook": 20.0, "line": 10.0, "email": 2.0}


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    from .delivery import RateLimited, RetryPolicy, Route, TokenBucket  # noqa: PLC0415

    zones = frozenset(args.zones.split(",")) if args.zones else None
    inner = _notifier_factory(args)
    rate = args.rate if args.rate is not None else DEFAULT_RATES[args.channel]
    if rate <= 0:
        raise SafetourError("--rate must be > 0")
    bucket = TokenBucket(rate=rate, burst=max(args.burst, 1))

    def factory(session: Any) -> Any:
        return RateLimited(inner(session), bucket)
    policy = RetryPolicy(max_attempts=args.attempts, retry_after_cap_s=args.retry_after_cap)
    if args.escalate_after is not None:
        from .delivery import run_escalator  # noqa: PLC0415

        _echo(f"escalating unacknowledged critical alerts to {args.channel} after "
              f"{args.escalate_after:g} s")
        asyncio.run(_until_signal(lambda stop: run_escalator(
            settings, factory, args.channel, args.escalate_after, policy,
            route=Route("critical", zones), stop=stop, grace_s=args.grace)))
        return 0

    from .delivery import run_notify  # noqa: PLC0415

    # Stops within --grace plus about a second on SIGTERM/SIGINT (README "Notifiers").
    asyncio.run(_until_signal(lambda stop: run_notify(
        settings, factory, args.channel, Route(args.min_level, zones), policy, stop,
        queue_bound=args.queue, grace_s=args.grace, delayed_after_s=args.delayed_after)))
    return 0


def cmd_shelve(args: argparse.Namespace, settings: Settings) -> int:
    """``shelve`` / ``unshelve``: one record on the shelves topic (agents/delivery/shelving.py)."""
    import getpass  # noqa: PLC0415

    from .delivery import (  # noqa: PLC0415
        parse_duration,
        publish_shelf,
        shelf_record,
        shelved_text,
    )

    known = {z.zone_id for z in settings.load_registry()}
    if args.zone not in known:
        raise SafetourError(f"unknown zone {args.zone!r} (the registry {settings.zones_file} "
                            f"has {', '.join(sorted(known))})")
    shelve = args.command == "shelve"
    record = shelf_record(args.zone, action=args.command, by=args.by or getpass.getuser(),
                          now_s=time.time(), for_s=parse_duration(args.for_) if shelve else 0,
                          reason=args.reason or "")
    asyncio.run(publish_shelf(settings.kafka, settings.topics.shelves, record))
    if shelve:
        _echo(shelved_text(record))
    else:
        _echo(f"{args.zone} unshelved by {record['by']}")
    return 0


def cmd_shelves(args: argparse.Namespace, settings: Settings) -> int:
    from schemas import format_ts  # noqa: PLC0415

    from .delivery import read_shelves, shelf_line  # noqa: PLC0415

    shelves = asyncio.run(read_shelves(settings.kafka, settings.topics.shelves)).listing(
        time.time())
    for sh in shelves:
        if args.json:
            print(orjson.dumps({"zone_id": sh.zone_id, "by": sh.by, "at": format_ts(sh.at_ms),
                                "until": format_ts(sh.until_ms), "reason": sh.reason}
                               ).decode())
        else:
            print(shelf_line(sh))
    if not shelves and not args.json:
        _echo("no zone is shelved")
    return 0


def _faust_logging(level: str) -> dict[str, Any]:
    """A faust worker's logging: JSON lines or faust's text format, and Kafka outages
    logged once every 10 s (agents/logs.py KafkaOutageFilter)."""
    if os.environ.get("SAFETOUR_LOG_FORMAT", "text") == "json":
        return logging_config("json", level)
    return faust_logging_config(level)


def _no_spinner(worker: Any) -> None:
    """No terminal spinner. At log level WARNING or above, faust's spinner sets the *root*
    logger to DEBUG for good (to spin on every record), so every debug call in aiokafka and
    faust builds a LogRecord: 14% of the worker's CPU in a profile of the benchmark."""
    worker.spinner = None


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust  # noqa: PLC0415  (heavy; only the worker needs it)

    from .topics import wait_for_topics  # noqa: PLC0415
    from .worker import build_app, warm_kernels  # noqa: PLC0415

    settings.load_registry()  # a bad registry file fails here, before any waiting
    warm_kernels()  # before the group: not ~20 s of compiling inside the first fetch
    # Join the group only once the input topics have leaders: joining earlier gets an empty
    # assignment that lasts until the next metadata refresh.
    t = settings.topics
    asyncio.run(wait_for_topics(settings.kafka,
                                [t.sensor_events, t.reports, t.zones, t.state]))
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=args.log_level, quiet=True,
                          logging_config=_faust_logging(args.log_level))
    _no_spinner(worker)
    worker.execute_from_commandline()  # runs until SIGTERM/Ctrl-C, then exits the process


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from .tail import tail_alerts  # noqa: PLC0415

    n = asyncio.run(tail_alerts(
        settings.kafka, settings.topics.alerts, from_beginning=args.from_beginning,
        max_alerts=args.max, timeout_s=args.timeout, as_json=args.json,
    ))
    return 0 if n or args.max is None else 1


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from .dashboard import serve_dashboard  # noqa: PLC0415

    settings.load_registry()  # a bad registry file fails here, before any connection
    operators, _ = dashboard_operators(demo=False)
    if args.login_link is not None and args.login_link not in operators.values():
        raise SafetourError(f"--login-link {args.login_link!r}: no such operator")
    _echo(f"{len(operators)} operator(s); reading {settings.topics.prefix}alerts/acks/density")

    def ready(url: str, link: str | None) -> None:
        _echo(f"dashboard on {url} (sign in with an operator token)")
        if link is not None:
            _echo(f"one-time sign-in link for {args.login_link}: {link}")

    asyncio.run(_until_signal(lambda stop: serve_dashboard(
        settings, operators, args.host, args.port, stop=stop, ready=ready,
        login_link_for=args.login_link)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="safetour",
        description="Real-time crowd-safety alerting for Phitsanulok (ท่องเที่ยวปลอดภัย).",
        epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--log-level", default=os.environ.get("SAFETOUR_LOG_LEVEL", "INFO"),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="demo: broker, topics, worker, a scenario, live alerts")
    run.add_argument("--scenario", default="crush",
                     help=f"{', '.join(SCENARIOS)} (default crush)")
    run.add_argument("--speed", type=float, default=10.0,
                     help="times faster than real time (default 10: the crush in 2.5 minutes)")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--keep-broker", action="store_true", help="leave the broker running")
    run.add_argument("--drill", action="store_true",
                     help="an exercise on the configured cluster: the scenario's readings on "
                          "topics of their own, its alerts on the real alerts topic marked "
                          "as a drill (CAP status Exercise, [ฝึกซ้อม / DRILL] in every channel)")
    run.add_argument("--worker-password-file", metavar="PATH",
                     help="the worker connects as SASL user --worker-user with this password "
                          "(a drill on a secured cluster: run by the operator, its worker as "
                          "the worker principal)")
    run.add_argument("--worker-user", default="worker",
                     help="SASL user of the worker (default worker)")
    run.add_argument("--expect-alerts", action="store_true", help="exit 1 if no alert arrived")
    run.add_argument("--dashboard-port", type=int,
                     default=int(os.environ.get("SAFETOUR_DASHBOARD_PORT", "6070")),
                     help="operations-centre dashboard port (default 6070; 0: no dashboard)")
    run.set_defaults(func=cmd_run)

    b = sub.add_parser("broker", help="manage the embedded Kafka broker")
    b.add_argument("action", choices=["start", "stop", "status", "logs"])
    b.add_argument("--timeout", type=float, default=90.0, help="start-up timeout, seconds")
    b.add_argument("--lines", type=int, default=40, help="log lines to show (logs)")
    b.add_argument("--secure", action="store_true",
                   help="the secured broker: SASL_SSL, SCRAM-SHA-512, TLS, ACLs "
                        "(or SAFETOUR_BROKER_SECURE=1)")
    b.set_defaults(func=cmd_broker)

    ac = sub.add_parser("acls", help="apply the principals' ACLs (deploy/kafka/acls.json)",
                        description="Creates on the cluster (SAFETOUR_KAFKA_*: the operator's "
                                    "credentials) the ACLs it lacks; deletes none.")
    ac.add_argument("action", choices=["apply"])
    ac.add_argument("--dry-run", action="store_true", help="show, create nothing")
    ac.add_argument("--file", help="ACL file (default deploy/kafka/acls.json)")
    ac.set_defaults(func=cmd_acls)

    t = sub.add_parser("topics", help="create or list topics")
    t.add_argument("action", choices=["create", "list"])
    t.add_argument("--replication", type=int, default=1, help="replication factor (create)")
    t.add_argument("--start-broker", action="store_true", help="start the embedded broker first")
    t.set_defaults(func=cmd_topics)

    rp = sub.add_parser("replay", help="run recorded JSONL files through the pipeline offline")
    rp.add_argument("--zones", required=True, help="zone registry file (YAML or JSON)")
    rp.add_argument("--events", required=True, help="sensor messages, one JSON value a line")
    rp.add_argument("--reports", help="human reports, one JSON object a line")
    rp.add_argument("--out", required=True, help="alerts written here, one JSON object a line")
    rp.add_argument("--density", help="also write every density window here")
    rp.add_argument("--dlq", help="also write dead-letter records here")
    rp.add_argument("--quiet", action="store_true", help="no progress line")
    rp.set_defaults(func=cmd_replay)

    sm = sub.add_parser("simulate", help="a Phitsanulok scenario with ground truth")
    sm.add_argument("--scenario", default="crush",
                    help=f"{', '.join(SCENARIOS)} (default crush)")
    sm.add_argument("--speed", type=float, default=60.0,
                    help="times faster than real time (60 = an hour a minute; 0 = flat out)")
    sm.add_argument("--seed", type=int, default=1)
    sm.add_argument("--out-dir", help="write events.jsonl and reports.jsonl here, not Kafka")
    sm.add_argument("--truth", help="write the ground truth (JSON) here")
    sm.add_argument("--quiet", action="store_true", help="no progress line")
    sm.set_defaults(func=cmd_simulate)

    zn = sub.add_parser("zones", help="publish a zone registry file to the zones topic")
    zn.add_argument("action", choices=["publish"])
    zn.add_argument("--file", help="registry file (default: SAFETOUR_ZONES)")
    zn.set_defaults(func=cmd_zones)

    nt = sub.add_parser("notify", help="deliver alerts to a channel (its own consumer group)")
    nt.add_argument("--channel", default="webhook", choices=["webhook", "line", "email"],
                    help="line: SAFETOUR_LINE_TOKEN(_FILE), SAFETOUR_LINE_TO, "
                         "SAFETOUR_LINE_BASE_URL; email: SAFETOUR_SMTP_HOST, _PORT, "
                         "_SECURITY (starttls|tls|none), _USER, _PASSWORD(_FILE), _CAFILE, "
                         "SAFETOUR_MAIL_FROM, SAFETOUR_MAIL_TO")
    nt.add_argument("--url", help="webhook URL (or SAFETOUR_WEBHOOK_URL); secret from "
                                   "SAFETOUR_WEBHOOK_SECRET or SAFETOUR_WEBHOOK_SECRET_FILE")
    nt.add_argument("--min-level", default="elevated",
                    choices=["elevated", "high", "critical"])
    nt.add_argument("--zones", help="only these zones, comma-separated")
    nt.add_argument("--attempts", type=int, default=6,
                    help="tries before the notify DLQ (retries go on while the episode is "
                         "open)")
    nt.add_argument("--retry-after-cap", type=float, default=300.0, metavar="SECONDS",
                    help="longest Retry-After honoured (300)")
    nt.add_argument("--queue", type=int, default=1000,
                    help="most alerts held per channel; the consumer pauses beyond (1000)")
    nt.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                    help="on SIGTERM/SIGINT, time given to sends in flight (5)")
    nt.add_argument("--delayed-after", type=float, default=30.0, metavar="SECONDS",
                    help="an alert sent later than this after its ts is marked delayed (30)")
    nt.add_argument("--rate", type=float, metavar="PER_S",
                    help="most sends a second, retries included (webhook 20, line 10, "
                         "email 2)")
    nt.add_argument("--burst", type=int, default=10, help="sends allowed at once (10)")
    nt.add_argument("--escalate-after", type=float, metavar="SECONDS",
                    help="escalation mode: send only critical alerts nobody acknowledged "
                         "on the dashboard within SECONDS")
    nt.set_defaults(func=cmd_notify)

    sh = sub.add_parser("shelve", help="hold back a zone's notifications below critical for "
                                       "a while (at most 4 h), with a reason",
                        description="Recorded on the shelves topic (who, when, until, why). "
                                    "Critical alerts and resolutions still go out; the shelf "
                                    "ends by itself.")
    sh.add_argument("zone", help="zone_id (from the registry, SAFETOUR_ZONES)")
    sh.add_argument("--for", dest="for_", required=True, metavar="DURATION",
                    help="how long: 45s, 30m, 2h (at most 4h)")
    sh.add_argument("--reason", required=True, help="why (recorded, shown)")
    sh.add_argument("--by", help="who shelves it (default: your user name)")
    sh.set_defaults(func=cmd_shelve)
    us = sub.add_parser("unshelve", help="end a zone's shelf now")
    us.add_argument("zone", help="zone_id")
    us.add_argument("--reason", help="why (recorded)")
    us.add_argument("--by", help="who (default: your user name)")
    us.set_defaults(func=cmd_shelve)
    sl = sub.add_parser("shelves", help="list the zones shelved now")
    sl.add_argument("--json", action="store_true", help="one JSON object a line")
    sl.set_defaults(func=cmd_shelves)

    db = sub.add_parser("dashboard", help="serve the operations-centre dashboard",
                        description="Operators: SAFETOUR_DASHBOARD_TOKENS=name:token,... or "
                                    "SAFETOUR_DASHBOARD_TOKENS_FILE (one name:token a line; "
                                    "tokens of 16+ characters).")
    db.add_argument("--host", default=os.environ.get("SAFETOUR_DASHBOARD_HOST", "127.0.0.1"))
    db.add_argument("--port", type=int,
                    default=int(os.environ.get("SAFETOUR_DASHBOARD_PORT", "6070")))
    db.add_argument("--login-link", metavar="OPERATOR",
                    help="print a sign-in link for OPERATOR that works once (within 1 h)")
    db.set_defaults(func=cmd_dashboard)

    w = sub.add_parser("worker", help="run the faust worker")
    w.set_defaults(func=cmd_worker)

    a = sub.add_parser("alerts", help="read the alerts topic")
    a.add_argument("action", choices=["tail"])
    a.add_argument("--from-beginning", action="store_true")
    a.add_argument("--max", type=int, help="stop after this many alerts")
    a.add_argument("--timeout", type=float, help="stop after this many seconds")
    a.add_argument("--json", action="store_true", help="one JSON object a line")
    a.set_defaults(func=cmd_tail)

    return p


ONE_SHOT_COMMANDS = frozenset({"broker", "topics", "zones", "alerts", "replay", "acls",
                               "shelve", "unshelve", "shelves"})


def main(argv: Sequence[str] | None = None) -> int:
    # Before any command runs: a record batch that aiokafka cannot decode (a codec library
    # missing, a corrupt batch) is skipped with a sentinel record in its place, never raised
    # out of getmany, in every consumer of this process (agents/kafka_safety.py).
    install_safe_fetch()
    args = build_parser().parse_args(argv)
    # Our loggers at the chosen level; third-party libraries only when they warn.
    fmt = os.environ.get("SAFETOUR_LOG_FORMAT", "text")
    if fmt not in ("text", "json"):
        print(f"safetour: error: SAFETOUR_LOG_FORMAT={fmt!r}: use text or json",
              file=sys.stderr)
        return 2
    # One-shot tools report an unreachable Kafka in one line of their own: the clients'
    # connection errors are not shown; long-running processes log them every 10 s.
    quiet = args.command in ONE_SHOT_COMMANDS
    logging.config.dictConfig(logging_config(fmt, args.log_level,
                                             kafka_errors="quiet" if quiet else "throttle"))
    logging.getLogger("safetour").setLevel(args.log_level)
    try:
        settings = Settings.from_env(broker_env(os.environ) if args.command == "broker"
                                     else None)
        rc: int = args.func(args, settings)
    except (SafetourError, BrokerError) as exc:
        print(f"safetour: error: {exc}", file=sys.stderr)
        return 2
    return rc
