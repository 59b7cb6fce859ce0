"""`make bench`: logwarden scan and the daemon against grep (and a naive Python loop), in one run.

Every contender runs as a child process over the same file (warm in the page cache after the
first run, which is untimed), measured the same way: wall time from spawn to exit and the peak RSS
that wait4 reports for that child alone, median of --runs. Two rule sets, each against its own
grep in the same run: bench.toml's (grep runs the EREs its placeholders stand for) and plain.toml's
(the same five rules written in the common subset of POSIX ERE and RE2: grep runs the very same
patterns). Before any number is printed, every contender's count per rule must equal the rule
set's expected count (bench.toml: what the corpus generator wrote; plain.toml: what grep counts
with the same EREs): a fast wrong answer is not a result. ripgrep joins when `rg` is installed.
Then the daemon benchmarks (daemons.py): catch-up on the corpus as a backlog, live latency, live
CPU (against rsyslog when it is installed), many idle files, each figure next to its target.
tests/bench/README.md says what each figure means.

    .venv/bin/python tests/bench/run.py                  # 2,000,000 lines (~240 MB)
    .venv/bin/python tests/bench/run.py --lines 200000   # a quick run
    .venv/bin/python tests/bench/run.py --only live      # one benchmark (grep always runs)
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONFIG = HERE / "bench.toml"
PLAIN = HERE / "plain.toml"  # the same five rules without placeholders (issue 14)
CORPUS_OUT = HERE / "corpus" / "out"  # scratch: the contenders' output (gitignored with corpus/)
TIMEOUT = 1800  # seconds for one contender over the full corpus; a hang is a failed benchmark

sys.path.insert(0, str(HERE))
import corpus as corpus_module  # noqa: E402 (a sibling script, not a package)
import daemons  # noqa: E402
import rsyslog  # noqa: E402

# POSIX EREs equivalent to bench.toml's rules: on this corpus they match the same lines (grep checks
# it on every run), and the live-CPU benchmark gives them to rsyslog's re_match. `%{user}` is RE2's
# \S+, `%{ip}` is loosened to the characters of an address (the corpus holds only valid ones),
# `%{iso8601}` is written out for the forms the app logs. Groups `(?P<name>...)` are the rules'
# named captures (what rsyslog's re_extract fills); rsyslog.posix_ere drops the names for grep.
_ADDRESS = "[0-9A-Fa-f:.]+"
_METHOD = "GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH"
_STAMP = "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?"
RULE_ERES = {
    "ssh-failed-password": r"sshd\[[0-9]+\]: Failed password for (invalid user )?"
    rf"(?P<user>[^[:space:]]+) from (?P<ip>{_ADDRESS}) port (?P<port>[+-]?[0-9]+)",
    "ssh-invalid-user": rf"sshd\[[0-9]+\]: Invalid user (?P<user>[^[:space:]]+) from (?P<ip>{_ADDRESS})",
    "nginx-5xx": rf"(?P<client>{_ADDRESS}) [^ ]+ [^ ]+ \[[^]]+\] "
    rf'"(?P<method>{_METHOD}) (?P<path>[^ "]+) HTTP/[0-9.]+" (?P<status>5[0-9][0-9]) ',
    "app-error": rf"^(?P<time>{_STAMP}) ERROR \[(?P<thread>[^]]+)\] "
    r"(?P<logger>[A-Za-z0-9_.]+): (?P<message>.*)",
    "traceback": r"^Traceback \(most recent call last\):",
}


def plain_eres(config: Path = PLAIN) -> dict[str, str]:
    """plain.toml's patterns, rule by rule: already EREs (with RE2's `(?P<name>` for captures)."""
    return {
        name: table["match"][0]
        for name, table in tomllib.loads(config.read_text())["rules"].items()
    }


@dataclass
class RuleSet:
    """One rule set of the comparison: its config, its EREs for grep (and rg), what it must count,
    and grep's median time on it in this run (what its contenders' ratios divide by)."""

    name: str
    config: Path
    eres: dict[str, str]  # rule → ERE with `(?P<name>...)` groups; posix_ere drops the names
    grep_label: str
    scan_target: float  # scan / grep, issue 14 (0: none)
    catchup_target: float  # catch-up / grep
    expected: dict[str, int] = field(default_factory=dict)
    grep_wall: float = 0.0

    @property
    def grep_patterns(self) -> list[str]:
        return [rsyslog.posix_ere(pattern)[0] for pattern in self.eres.values()]


def rule_sets() -> list[RuleSet]:
    return [
        RuleSet("bench.toml", CONFIG, RULE_ERES, "grep runs the expanded placeholders", 0.0, 5.0),
        RuleSet("plain.toml", PLAIN, plain_eres(), "grep runs the very same EREs", 3.0, 4.0),
    ]


@dataclass
class Measured:
    wall: float  # seconds
    peak_rss: int  # bytes
    returncode: int
    spread: str = ""  # every run's wall, when this is a median


@dataclass
class Row:
    """One line of the results table."""

    name: str
    measured: Measured
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    rule_set: str = "bench.toml"


@dataclass
class Context:
    """What every benchmark gets: the corpus, the parsed options, and a scratch directory."""

    corpus: corpus_module.Corpus
    args: argparse.Namespace
    scratch: Path
    rule_sets: list[RuleSet] = field(default_factory=list)


# wait4's peak RSS for a child of this script is not the child's own: Linux carries the RSS of
# the forked parent into the child's maximum at exec. So a small fresh Python forks the command,
# times it and reports wait4's figures: a floor of about 10 MiB instead of this process's size.
PROBE = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as report:
    report.write(f"{usage.ru_maxrss * 1024} {wall}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(
    command: Sequence[str], stdout: Path | None = None, env: dict[str, str] | None = None
) -> Measured:
    """Run `command` to completion: its wall time and its own peak RSS, through PROBE."""
    report = CORPUS_OUT / ".probe"
    environment = {**os.environ, **(env or {})}
    with stdout.open("wb") if stdout else open(os.devnull, "wb") as out:
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, str(report), *command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            env=environment,
            start_new_session=True,
        )
        try:
            _, errors = probe.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(probe.pid, signal.SIGKILL)  # the probe and the command it forked
            probe.communicate()
            raise SystemExit(f"{command[0]} did not finish within {TIMEOUT}s") from None
    if probe.returncode not in (0, 1):  # grep -c exits 1 when it counts nothing
        detail = errors.decode(errors="replace")[-2000:]
        raise SystemExit(f"{command[0]} failed ({probe.returncode}): {detail}")
    peak, wall = report.read_text().split()
    return Measured(float(wall), int(peak), probe.returncode)


def measure_median(
    runs: int, command: Sequence[str], stdout: Path | None = None, env: dict[str, str] | None = None
) -> Measured:
    """`measure` `runs` times: the run of median wall time, with every run's wall noted."""
    results = sorted((measure(command, stdout, env) for _ in range(runs)), key=lambda m: m.wall)
    median = results[len(results) // 2]
    median.spread = ", ".join(f"{m.wall:.2f}" for m in results)
    return median


# ---------------------------------------------------------------- the contenders


def grep_all(ctx: Context, rules: RuleSet) -> Row:
    """One grep pass with all five patterns: the line count of the whole rule set."""
    out = ctx.scratch / f"grep-count-{rules.name}.txt"
    patterns = [arg for pattern in rules.grep_patterns for arg in ("-e", pattern)]
    command = ["grep", "-E", "-c", *patterns, str(ctx.corpus.path)]
    measured = measure_median(ctx.args.runs, command, out, env={"LC_ALL": "C"})
    counts = {"*": int(out.read_text())}
    return Row("`LC_ALL=C grep -E -c` (5 patterns)", measured, counts, rules.grep_label, rules.name)


def ripgrep_all(ctx: Context, rules: RuleSet) -> Row:
    """ripgrep with the same patterns as grep, when it is installed (the bench installs nothing)."""
    out = ctx.scratch / f"rg-count-{rules.name}.txt"
    patterns = [arg for pattern in rules.grep_patterns for arg in ("-e", pattern)]
    command = ["rg", "-c", "--no-filename", *patterns, str(ctx.corpus.path)]
    measured = measure_median(ctx.args.runs, command, out)
    counts = {"*": int(out.read_text() or 0)}
    note = f"median of {ctx.args.runs} ({measured.spread} s); its RSS holds the file it maps"
    return Row("`rg -c` (the same 5 patterns)", measured, counts, note, rules.name)


def grep_per_rule(ctx: Context, rules: RuleSet) -> dict[str, int]:
    """Each rule's line count with its own grep (untimed: this is the correctness check)."""
    counts = {}
    for rule, pattern in zip(rules.eres, rules.grep_patterns, strict=True):
        result = subprocess.run(
            ["grep", "-E", "-c", "-e", pattern, str(ctx.corpus.path)],
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
            timeout=TIMEOUT,
            check=False,
        )
        counts[rule] = int(result.stdout)
    return counts


def logwarden_scan(ctx: Context, rules: RuleSet) -> Row:
    out = ctx.scratch / f"scan-{rules.name}.ndjson"
    command = [
        sys.executable,
        "-m",
        "logwarden",
        "scan",
        "-c",
        str(rules.config),
        str(ctx.corpus.path),
    ]
    measured = measure_median(ctx.args.runs, command, out)
    counts: Counter[str] = Counter()
    with out.open("rb") as stream:
        for line in stream:
            counts[orjson.loads(line)["rule"]] += 1
    note = f"NDJSON records with captures; median of {ctx.args.runs} ({measured.spread} s)"
    return Row("`logwarden scan`", measured, dict(counts), note, rules.name)


def naive_python(ctx: Context) -> Row:
    out = ctx.scratch / "naive-counts.json"
    measured = measure([sys.executable, __file__, "--naive", str(ctx.corpus.path)], out)
    return Row(
        "naive Python (`re` per rule, orjson)",
        measured,
        orjson.loads(out.read_bytes()),
        note="for line in file: for rule: re.search",
    )


def naive(path: Path) -> None:
    """The baseline, what one writes first: counts as JSON on stdout, records to /dev/null."""
    from logwarden.patterns import expand

    rules = []
    for name, table in tomllib.loads(CONFIG.read_text())["rules"].items():
        patterns = table["match"] if isinstance(table["match"], list) else [table["match"]]
        rules.append((name, [re.compile(expand(p)) for p in patterns]))
    counts = dict.fromkeys((name for name, _ in rules), 0)
    dumps = orjson.dumps
    text_file = path.open(encoding="utf-8", errors="replace", newline="\n")
    with open(os.devnull, "wb") as sink, text_file as lines:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\n").removesuffix("\r")
            for name, patterns in rules:
                for pattern in patterns:
                    found = pattern.search(text)
                    if found:
                        counts[name] += 1
                        record = {
                            "rule": name,
                            "line_no": number,
                            "line": text,
                            "captures": found.groupdict(),
                        }
                        sink.write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
                        break
    sys.stdout.write(orjson.dumps(counts).decode())


# ---------------------------------------------------------------- the daemon benchmarks
# Each takes the Context and returns an Outcome (rows for the main table, figures with their
# targets for the daemon table, problems); main() runs them after the scan comparison, in this
# order. The machinery (the daemon as a child, inotify on report dirs) is in daemons.py.


def daemon_catch_up(ctx: Context) -> daemons.Outcome:
    outcome = daemons.Outcome()
    for rules in ctx.rule_sets:
        try:
            one = daemons.catch_up(ctx, runs=ctx.args.catchup_runs, rule_set=rules)
        except daemons.BenchmarkFailed as error:  # the other rule set's figures still count
            outcome.problems.append(f"catch-up ({rules.name}): {error}")
            continue
        outcome.rows += one.rows
        outcome.figures += one.figures
        outcome.problems += one.problems
        outcome.notes += one.notes
    return outcome


def daemon_live(ctx: Context) -> daemons.Outcome:
    return daemons.live_latency(
        ctx, rate=ctx.args.live_rate, seconds=ctx.args.live_seconds, share=ctx.args.live_share
    )


def daemon_live_cpu(ctx: Context) -> daemons.Outcome:
    return daemons.live_cpu(ctx, seconds=ctx.args.live_cpu_seconds, eres=RULE_ERES)


def daemon_many_files(ctx: Context) -> daemons.Outcome:
    return daemons.many_files(ctx, dirs=20, per_dir=100, idle_seconds=ctx.args.idle_seconds)


LATER_BENCHMARKS: dict[str, Callable[[Context], daemons.Outcome]] = {
    "catchup": daemon_catch_up,
    "live": daemon_live,
    "live-cpu": daemon_live_cpu,
    "idle": daemon_many_files,
}
BENCHMARKS = ("scan", "naive", *LATER_BENCHMARKS)  # what --only may name; grep always runs


# ---------------------------------------------------------------- the report


def check_counts(
    rules: RuleSet, generated: dict[str, int], grep_rules: dict[str, int], rows: list[Row]
) -> list[str]:
    """Every disagreement between the generator, grep and each contender of one rule set."""
    problems = []
    for rule, written in generated.items():
        if rules.config == CONFIG and grep_rules.get(rule) != written:
            problems.append(f"grep counts {grep_rules.get(rule)} lines for {rule}, not {written}")
        # plain.toml's rules are narrower (no IPv6 client): never a line the generator did not
        # write for the rule (a rule matching another's lines would show here)
        if not 0 < grep_rules.get(rule, 0) <= written:
            problems.append(f"{rules.name}: grep counts {grep_rules.get(rule)} lines for {rule}")
    total = sum(rules.expected.values())
    for row in rows:
        if row.rule_set != rules.name:
            continue
        # the combined grep counts each matching line once: right because the rules are disjoint
        if "*" in row.counts:
            if row.counts["*"] != total:
                problems.append(f"{row.name} counts {row.counts['*']} lines, not {total}")
            continue
        for rule, want in rules.expected.items():
            if row.counts.get(rule, 0) != want:
                problems.append(
                    f"{row.name} ({rules.name}) counts {row.counts.get(rule, 0)} for {rule}, "
                    f"not {want}"
                )
    return problems


def table(ctx: Context, rows: list[Row]) -> str:
    """One line per contender and rule set; each ratio divides by that rule set's grep median of
    this run, shown beside it."""
    size, lines = ctx.corpus.bytes, ctx.corpus.lines
    greps = {rules.name: rules.grep_wall for rules in ctx.rule_sets}
    out = [
        "| rules | contender | wall (s) | MB/s | lines/s | grep (s) | time / grep's "
        "| peak RSS (MiB) | matches |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rules in ctx.rule_sets:
        for row in rows:
            if row.rule_set != rules.name:
                continue
            wall = row.measured.wall
            matches = row.counts.get("*", sum(row.counts.values()))
            ratio = wall / greps[rules.name]
            rss = row.measured.peak_rss / 2**20
            speed = f"{size / wall / 1e6:,.0f} | {lines / wall / 1e6:.2f} M"
            out.append(
                f"| {rules.name} | {row.name} | {wall:.2f} | {speed} | {greps[rules.name]:.2f} "
                f"| {ratio:.2f} | {rss:.0f} | {matches:,} |"
            )
    return "\n".join(out)


def per_rule_table(
    rules: RuleSet, generated: dict[str, int], grep_rules: dict[str, int], rows: list[Row]
) -> str:
    contenders = [row for row in rows if "*" not in row.counts and row.rule_set == rules.name]
    out = [
        f"| rule ({rules.name}) | generator | grep -c | "
        + " | ".join(row.name for row in contenders)
        + " |",
        "|---|---:|---:|" + "---:|" * len(contenders),
    ]
    for rule, want in generated.items():
        cells = " | ".join(f"{row.counts.get(rule, 0):,}" for row in contenders)
        out.append(f"| {rule} | {want:,} | {grep_rules.get(rule, 0):,} | {cells} |")
    return "\n".join(out)


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    grep = subprocess.run(
        ["grep", "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    grep_version = grep.stdout.splitlines()[0]
    return f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}; {grep_version}"


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def figures_table(figures: list[daemons.Figure]) -> str:
    out = ["| benchmark | figure | measured | target | |", "|---|---|---:|---:|---|"]
    for figure in figures:
        verdict = {None: "", True: "met", False: "**MISSED**"}[figure.ok]
        out.append(
            f"| {figure.benchmark} | {figure.name} | {figure.value} | {figure.target} | {verdict} |"
        )
    return "\n".join(out)


def compile_logwarden() -> None:
    """logwarden's bytecode, written once before anything is timed, as installing it does: with
    PYTHONDONTWRITEBYTECODE set and the package run from its source tree (an editable install),
    every `scan` and every daemon start would compile it all again, ~90 ms of each on a 2-core
    VM that an installed logwarden never pays. The same interpreter and environment as the
    contenders, so the files are the ones they load."""
    spec = importlib.util.find_spec("logwarden")
    if spec is None or spec.origin is None:
        raise SystemExit("logwarden is not importable here")
    if not compileall.compile_dir(Path(spec.origin).parent, quiet=2):  # (a read-only tree)
        print("could not write logwarden's bytecode: its figures include compiling it",
              file=sys.stderr)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lines",
        type=int,
        default=corpus_module.DEFAULT_LINES,
        help="corpus size in lines (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=corpus_module.DEFAULT_SEED)
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable; grep always runs): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the Python baseline")
    parser.add_argument(
        "--runs", type=int, default=3, help="grep, rg and scan runs, median shown (default: 3)"
    )
    parser.add_argument(
        "--catchup-runs", type=int, default=3, help="catch-up runs, median shown (default: 3)"
    )
    parser.add_argument(
        "--live-seconds", type=float, default=10.0, help="live writer duration (default: 10)"
    )
    parser.add_argument(
        "--live-rate", type=float, default=2000.0, help="live lines/s, one a write (default: 2000)"
    )
    parser.add_argument(
        "--live-share",
        type=float,
        default=0.0,
        help="share of live lines that match, at least the corpus' own (default: the corpus' own)",
    )
    parser.add_argument(
        "--live-cpu-seconds",
        type=float,
        default=10.0,
        help="live-CPU writing time per load and daemon (default: 10)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="many-files idle window (default: 10)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to each daemon (figures then include its overhead)",
    )
    parser.add_argument("--naive", type=Path, help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args(argv)
    if args.naive:
        naive(args.naive)
        return 0
    if shutil.which("grep") is None:
        raise SystemExit("grep is needed for the comparison")
    signal.signal(signal.SIGTERM, _terminated)  # so that `finally` stops every daemon by PID
    selected = set(args.only or BENCHMARKS)
    if args.skip_naive:
        selected.discard("naive")

    corpus = corpus_module.ensure(args.lines, args.seed, log=partial(print, file=sys.stderr))
    CORPUS_OUT.mkdir(exist_ok=True)
    ctx = Context(corpus, args, CORPUS_OUT, rule_sets())
    matching = sum(corpus.expected.values())
    print(
        f"corpus: {corpus.path.relative_to(ROOT)}: {corpus.lines:,} lines, "
        f"{corpus.bytes / 1e6:.0f} MB, {matching:,} matching lines "
        f"({100 * matching / corpus.lines:.1f}%)",
        file=sys.stderr,
    )
    with corpus.path.open("rb") as stream:  # into the page cache, so no contender pays for the disk
        while stream.read(16 << 20):
            pass
    compile_logwarden()

    grep_rules: dict[str, dict[str, int]] = {}
    rows: list[Row] = []
    figures: list[daemons.Figure] = []
    for rules in ctx.rule_sets:
        grep_rules[rules.name] = grep_per_rule(ctx, rules)
        # bench.toml's must count what the generator wrote; plain.toml's are checked against the
        # same EREs run by grep, one rule at a time (check_counts bounds them by the generator's)
        rules.expected = corpus.expected if rules.config == CONFIG else grep_rules[rules.name]
        grep_row = grep_all(ctx, rules)
        rules.grep_wall = grep_row.measured.wall
        rows.append(grep_row)
        if shutil.which("rg"):
            rows.append(ripgrep_all(ctx, rules))
        if "scan" in selected:
            scan = logwarden_scan(ctx, rules)
            rows.append(scan)
            if rules.scan_target:
                ratio = scan.measured.wall / rules.grep_wall
                figures.append(
                    daemons.Figure(
                        f"scan ({rules.name})",
                        f"scan / grep, median of {args.runs}",
                        f"{scan.measured.wall:.2f} s = {ratio:.2f}x grep ({rules.grep_wall:.2f} s)",
                        f"≤ {rules.scan_target:.1f}x grep",
                        ratio <= rules.scan_target,
                    )
                )
        if "naive" in selected and rules.config == CONFIG:
            rows.append(naive_python(ctx))
    problems: list[str] = []
    profiles: list[str] = []
    for name, benchmark in LATER_BENCHMARKS.items():
        if name not in selected:
            continue
        print(f"running the daemon benchmark {name} ...", file=sys.stderr)
        try:
            outcome = benchmark(ctx)
        except daemons.BenchmarkFailed as error:
            problems.append(f"{name}: {error}")
            continue
        rows += [
            Row(r.name, Measured(r.wall, r.peak_rss, 0), r.counts, r.note, r.rule_set)
            for r in outcome.rows
        ]
        figures += outcome.figures
        problems += outcome.problems
        profiles += outcome.notes

    for rules in reversed(ctx.rule_sets):
        problems = check_counts(rules, corpus.expected, grep_rules[rules.name], rows) + problems
    print(f"\n{environment()}\n")
    print(table(ctx, rows))
    for rules in ctx.rule_sets:
        if any("*" not in row.counts and row.rule_set == rules.name for row in rows):
            print()
            print(per_rule_table(rules, corpus.expected, grep_rules[rules.name], rows))
    if figures:
        print()
        print(figures_table(figures))
    notes = [f"- {row.name} ({row.rule_set}): {row.note}" for row in rows if row.note]
    if notes:
        print("\n" + "\n".join(notes))
    for profile in profiles:
        print("\n" + profile)
    if problems:
        print(
            "\nPROBLEMS (these figures are not results):\n  " + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
