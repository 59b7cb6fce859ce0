"""The front door: parse the command line, configure logging, run one command, exit with its code.

Only this module exits the process. Exit codes: 0 ok, 1 runtime failure, 2 usage error (argparse),
78 (EX_CONFIG) invalid config, for `run` too, so systemd's RestartPreventExitStatus=78 stops a
restart loop; `status` answers 0 running, 3 not running (LSB), even with a broken config.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from logwarden.config import EX_CONFIG, Config, DaemonConfig, default_config_path, load
from logwarden.log import LEVELS, configure, get_logger
from logwarden.problems import ConfigError, KeyLocator, key_path
from logwarden.rules import load_config

EX_OK = 0
EX_FAILURE = 1

log = get_logger(__name__)


class _Version(argparse.Action):
    """`--version`, looked up only when asked: importlib.metadata costs every other command
    (a scan, a status, the daemon's start) 30 ms before it does anything."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show the version and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from logwarden import __version__

        print(f"logwarden {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logwarden", description="Watch log files, match rules, publish JSON reports."
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "-c",
            "--config",
            type=Path,
            default=None,
            help="config file (default: $LOGWARDEN_CONFIG, else /etc/logwarden/logwarden.toml)",
        )
        sub.add_argument(
            "--log-format",
            choices=("auto", "console", "json", "journal"),
            default="auto",
            help="auto: console on a terminal, journal under systemd, else json",
        )
        sub.add_argument("--log-level", choices=LEVELS, default="info", type=str.lower)
        return sub

    run = with_config(
        commands.add_parser("run", help="run the daemon (never forks; systemd supervises it)")
    )
    run.add_argument(
        "--foreground", action="store_true", help="debug mode: echo every match, print rates"
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="with --foreground on a terminal: a status panel instead of scrolling lines",
    )
    check = with_config(
        commands.add_parser("check-config", help="validate the config; exit 0 if valid, 78 if not")
    )
    check.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="with each problem, what the message leaves out (a pattern's placeholders expanded)",
    )
    scan = with_config(
        commands.add_parser("scan", help="run the rules over whole files once; NDJSON on stdout")
    )
    scan.add_argument(
        "--rule", action="append", default=[], metavar="NAME", help="only this rule (repeatable)"
    )
    scan.add_argument(
        "--source", metavar="NAME", help="treat every FILE as belonging to this source"
    )
    scan.add_argument(
        "files", nargs="+", metavar="FILE", help="files to scan ('-' for standard input)"
    )
    status = with_config(
        commands.add_parser("status", help="what the running daemon (or its state dir) says")
    )
    view = status.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="print the status document as JSON")
    view.add_argument("--watch", action="store_true", help="redraw every second until ^C (exit 0)")
    report = commands.add_parser("report", help="what published reports hold")
    actions = report.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="summarise report files")
    show.add_argument("files", nargs="+", type=Path, metavar="FILE")
    summary = actions.add_parser("summary", help="summarise every report in a report dir")
    summary.add_argument("dir", type=Path, metavar="DIR")
    decrypt = actions.add_parser("decrypt", help="print encrypted reports' JSON on stdout")
    decrypt.add_argument("files", nargs="+", type=Path, metavar="REPORT")
    for action in (show, summary, decrypt):
        action.add_argument(
            "--key",
            action="append",
            type=Path,
            default=[],
            required=action is decrypt,
            metavar="FILE",
            help="a key file for encrypted reports (repeatable: old keys after a rotation)",
        )
    for action in (show, summary):
        action.add_argument("--json", action="store_true", help="the numbers as one JSON document")
    explain = with_config(
        commands.add_parser("explain", help="each rule's verdict on each LINE, and why")
    )
    explain.add_argument("--source", metavar="NAME", help="explain as a line of this source")
    explain.add_argument("--json", action="store_true", help="one JSON object per line")
    explain.add_argument("--all", action="store_true", help="list the rules that did not match too")
    explain.add_argument("lines", nargs="+", metavar="LINE", help="log lines ('-' reads stdin)")
    return parser


def report_config_error(error: ConfigError, verbose: bool = False) -> int:
    """Print every problem, one `file:line: key: message` a line, plainly: a person fixes these.

    A problem's detail (a pattern with its placeholders expanded, thousands of characters for
    `%{ip}`) would bury the message the operator needs: it is printed with `--verbose` only, and
    otherwise one closing line says how to see it.
    """
    count = len(error.problems)
    print(
        f"logwarden: invalid config ({count} problem{'s' if count != 1 else ''}):", file=sys.stderr
    )
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
        if verbose and problem.detail:
            print(f"      {problem.detail}", file=sys.stderr)
    if not verbose and any(problem.detail for problem in error.problems):
        print(
            "  (patterns are quoted as written; `logwarden check-config --verbose` also shows"
            " them with their placeholders expanded)",
            file=sys.stderr,
        )
    return EX_CONFIG


class StoppedBeforeStart(BaseException):
    """SIGTERM before the daemon installed its own handlers: nothing was started yet, so the
    stop is simply leaving. A BaseException, so no `except Exception` on the way swallows it."""


def _stop_before_start(signum: int, frame: FrameType | None) -> None:
    raise StoppedBeforeStart


def main(argv: Sequence[str] | None = None) -> int:
    # `run`'s handlers come with its event loop; until then a SIGTERM (systemd sends one
    # whenever it likes) ends the process cleanly, not by the default action (exit -15)
    signal.signal(signal.SIGTERM, _stop_before_start)
    args: argparse.Namespace | None = None
    try:  # from here on: a SIGTERM while the parser is built is as clean as one later
        args = build_parser().parse_args(argv)
        if args.command != "run":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # one-shot commands die of it as usual
        else:  # a reload or rotation asked for before the loop can take it: the config is
            # read after this anyway, and a death by SIGHUP would be a failed start
            for signum in (signal.SIGHUP, signal.SIGUSR1):
                signal.signal(signum, signal.SIG_IGN)
        # `report` has no logging options: what it has to say goes to stdout and stderr
        configure(getattr(args, "log_format", "auto"), getattr(args, "log_level", "warning"))
        if args.command == "check-config":
            return check_config(args)
        if args.command == "scan":
            return scan(args)
        if args.command == "status":
            return status(args)
        if args.command == "report":
            return report(args)
        if args.command == "explain":
            return explain(args)
        return run(args)
    except ConfigError as error:
        return report_config_error(error, verbose=getattr(args, "verbose", False))
    except KeyboardInterrupt:
        return 130
    except StoppedBeforeStart:
        if args is not None:  # logging is configured once the arguments are known
            log.info("stopped before start-up began (SIGTERM)")
        return EX_OK
    except BrokenPipeError:
        # the reader went away (`logwarden scan ... | head`): stop quietly, like grep
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_FAILURE


def check_config(args: argparse.Namespace) -> int:
    config, _ = load_config(args.config)
    tests = sum(len(rule.tests) for rule in config.rules.values())
    print(
        f"{config.path}: ok: {len(config.sources)} sources, {len(config.rules)} rules "
        f"({tests} samples passed), {len(config.reports)} reports"
    )
    warn_unmatched_sources(config)
    return EX_OK


def warn_unmatched_sources(config: Config) -> None:
    """A warning (not an error: the files may appear later) for each source whose globs match
    no file now, at the line of its `paths`."""
    from logwarden.discovery import PathIndex, unmatched_sources

    files = config.file_sources
    unmatched = unmatched_sources(files, PathIndex(files).discover())
    try:
        locator = KeyLocator(config.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        locator = KeyLocator("")
    _warn_journal_sources(config, locator)
    for name in unmatched:
        where = ("sources", name, "paths")
        line = locator.line_of(where)
        place = f"{config.path}:{line}" if line else str(config.path)
        paths = ", ".join(config.sources[name].paths)
        print(
            f"logwarden: warning: {place}: {key_path(where)}: matches no file now ({paths})",
            file=sys.stderr,
        )


def _warn_journal_sources(config: Config, locator: KeyLocator) -> None:
    """A warning for each journal source that cannot read now: no journalctl, or no journal
    file it may open (a directory that does not exist, or not in group systemd-journal)."""
    import shutil

    from logwarden.journal import journal_readable

    for name, source in config.journal_sources.items():
        assert source.journal is not None
        where = ("sources", name, "journal")
        line = locator.line_of(where)
        place = f"{config.path}:{line}" if line else str(config.path)
        if shutil.which("journalctl") is None:
            problem = "journalctl is not installed (or not on PATH): this source will read nothing"
        elif not journal_readable(source.journal.directory):
            problem = "no journal file can be read now (missing, or not in group systemd-journal)"
        else:
            continue
        fallbacks = [n for n, s in config.sources.items() if s.fallback_for == name]
        if fallbacks:
            problem += f"; its fallback {', '.join(fallbacks)} is used instead"
        print(f"logwarden: warning: {place}: {key_path(where)}: {problem}", file=sys.stderr)


def scan(args: argparse.Namespace) -> int:
    from logwarden.scan import Scanner

    config, rules = load_config(args.config)
    if args.rule:
        try:
            rules = rules.only(args.rule)
        except KeyError as error:
            print(f"logwarden scan: {error.args[0]}", file=sys.stderr)
            return 2
    if args.source and args.source not in config.sources:
        print(
            f"logwarden scan: no source named {args.source!r} (known: {', '.join(config.sources)})",
            file=sys.stderr,
        )
        return 2
    scanner = Scanner(config, rules, sys.stdout.buffer, progress=sys.stderr.isatty())
    # what start-up made lives until exit: the collector stops walking it (half its time, which
    # every match's garbage sets off)
    gc.freeze()
    summary = scanner.scan(args.files, args.source)
    sys.stdout.buffer.flush()
    log.debug(
        "scan done",
        files=summary.files,
        lines=summary.lines,
        matches=summary.matches,
        bytes=summary.bytes,
    )
    return EX_FAILURE if summary.failed else EX_OK


def explain(args: argparse.Namespace) -> int:
    """Exit like grep: 0 when some line matched a rule, 1 when none did."""
    from logwarden.explain import Explainer, print_json, print_text, text_console

    config, rules = load_config(args.config)
    if args.source and args.source not in config.sources:
        known = ", ".join(config.sources)
        print(
            f"logwarden explain: no source named {args.source!r} (known: {known})", file=sys.stderr
        )
        return 2
    console = text_console()
    matched = False
    for verdict in Explainer(config, rules, args.source).explain(args.lines):
        matched = matched or bool(verdict.matched)
        if args.json:
            print_json(verdict, sys.stdout.buffer)
        else:
            print_text(verdict, console, args.all)
    return EX_OK if matched else EX_FAILURE


def run(args: argparse.Namespace) -> int:
    from logwarden.service import run_daemon

    config, rules = load_config(args.config)
    return run_daemon(config, rules, foreground=args.foreground or args.live, live=args.live)


def status(args: argparse.Namespace) -> int:
    """Show the daemon's state even when the config on disk is broken: that is exactly when
    the daemon may still run on the config it loaded before (a refused reload leaves that).

    The state dir is the one the broken config names when its [daemon] table can be read, else
    the default ($STATE_DIRECTORY, else /var/lib/logwarden): the daemon cannot move its state
    dir on a reload, so the one a config names is the one a daemon started on it uses.
    """
    from logwarden.status import show_status

    path = args.config or default_config_path()
    try:
        config, sink = load(path, defer=True)  # with problems: what parsed of it
        problems = sink.problems
    except ConfigError as error:  # unreadable, or not TOML: nothing in it can be trusted
        config = Config(path=path, daemon=DaemonConfig(), sources={}, rules={}, reports={})
        problems = error.problems
    if problems:
        count = len(problems)
        print(
            f"logwarden: the config is broken ({count} problem{'s' if count != 1 else ''}; "
            f"`logwarden check-config` lists them); showing the state in "
            f"{config.daemon.state_dir}",
            file=sys.stderr,
        )
    return show_status(config, as_json=args.json, watch=args.watch)


def report(args: argparse.Namespace) -> int:
    """`report show|summary|decrypt`: open published reports (with `--key` when encrypted)."""
    import orjson

    from logwarden import report_view
    from logwarden.sealing import KeyFileError, ReportOpenError, load_key, open_report

    try:
        keys = [load_key(path) for path in args.key]
    except KeyFileError as error:
        print(f"logwarden report: {error}", file=sys.stderr)
        return EX_FAILURE
    if args.action == "decrypt":
        failed = False
        for path in args.files:
            try:
                sys.stdout.buffer.write(open_report(path, keys))
            except (ReportOpenError, ValueError, OSError) as error:
                print(f"logwarden report decrypt: {error}", file=sys.stderr)
                failed = True
        sys.stdout.buffer.flush()
        return EX_FAILURE if failed else EX_OK
    index = None
    if args.action == "summary":
        if not args.dir.is_dir():
            print(f"logwarden report summary: {args.dir}: not a directory", file=sys.stderr)
            return EX_FAILURE
        files = report_view.report_files(args.dir)
        index = report_view.verify_index(args.dir)
    else:
        files = args.files
    summary, problems = report_view.summarize(files, keys)
    for problem in problems:
        print(f"logwarden report: {problem}", file=sys.stderr)
    if args.json:
        document = summary.to_json() | ({"index": index} if index is not None else {})
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    else:
        report_view.render(summary, index)
    return EX_FAILURE if problems else EX_OK
