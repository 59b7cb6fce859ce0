"""The main process's CPU per match → record during catch-up, in-process (issue 14).

With matching moved to a worker, what the daemon's main process still does for each matched line
is: `MatchProcessor.process` (event time, the record), `Pipeline._write` (the journal append, the
per-rule recent counts), the committer's `take_batches` + `write_batches` (the journal file), and
at the end the seal: `ReportWriter.stage` rendering the whole report. This times exactly those,
with the real classes, on the corpus' matches for plain.toml's rules (and catch-up's report:
`format = "json"`), which are found once, before any timing.

    .venv/bin/python tests/bench/records.py                 # corpus/mixed-2000000.log, 5 runs
    .venv/bin/python tests/bench/records.py --runs 9 --corpus tests/bench/corpus/mixed-20000.log
    .venv/bin/python tests/bench/records.py --dump out.json  # the report, times blanked (diffable)

Prints process CPU (user + system, `time.process_time`) per match for each part and in all, the
median of `--runs` (each on a fresh processor, pipeline and report writer; the first run is a
warm-up and not counted). The processor's clock is fixed just after the corpus' last line (its
times stay in bounds whenever this runs). `--dump` writes the last run's report with every `time`
(the moment of writing) and the report's opened/closed blanked, so that the output of two
versions of the code can be compared byte for byte.
"""

from __future__ import annotations

import argparse
import gc
import re
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
PLAIN = HERE / "plain.toml"
DEFAULT_CORPUS = HERE / "corpus" / "mixed-2000000.log"
CHUNK = 1024 * 1024  # [daemon] read_chunk_bytes' default: what one catch-up read hands on
# the clock the processor reads: 2026-11-24T12:00:00Z, just after the corpus' last line, so that
# its times are in bounds whenever this runs, and arrival times are the same in every run
NOW = 1_795_521_600.0
PARTS = ("process", "write", "commit", "seal")

# the daemon's own modules, from the checkout this script is in unless PYTHONPATH says otherwise
sys.path.insert(0, str(HERE.parent.parent / "daemon"))
from logwarden.config import load  # noqa: E402
from logwarden.framing import LineFramer  # noqa: E402
from logwarden.origin import SourceRef  # noqa: E402
from logwarden.pipeline import Pipeline  # noqa: E402
from logwarden.records import RecordBuilder  # noqa: E402
from logwarden.reports import ReportWriter, settle, staged_path, write_batches  # noqa: E402
from logwarden.rules import Match, RuleSet  # noqa: E402
from logwarden.stages import MatchProcessor  # noqa: E402


def config_text(work: Path, log: Path) -> str:
    """catch_up's config (daemons.py): plain.toml's rule tables, one json report no run fills."""
    text = PLAIN.read_text()
    rules = text[text.index("[rules.") : text.index("[reports.")]
    head = textwrap.dedent(
        f"""\
        [daemon]
        state_dir = "{work / "state"}"

        [sources.backlog]
        paths = ["{log}"]
        start_at = "beginning"

        """
    )
    report = textwrap.dedent(
        f"""
        [reports.bench]
        dir = "{work / "reports"}"
        format = "json"
        rotate_max_bytes = "4GiB"
        rotate_max_records = 100000000
        rotate_interval = "24h"
        keep = 1000
        """
    )
    return head + rules + report


def matched_blocks(rules: RuleSet, corpus: Path) -> list[list[Match]]:
    """Each 1 MiB read's matches (those with any), as the catch-up's framer and matcher give them."""
    matcher = rules.for_source("backlog")
    framer = LineFramer(64 * 1024)
    out: list[list[Match]] = []
    with open(corpus, "rb") as stream:
        while chunk := stream.read(CHUNK):
            for block in framer.feed(chunk):
                if found := matcher.scan(block):
                    out.append(found)
        for block in framer.flush():
            if found := matcher.scan(block):
                out.append(found)
    return out


def one_run(
    work: Path, corpus: Path, blocks: list[list[Match]], commit_every: int
) -> tuple[dict[str, float], Path]:
    """One pass over the matches on a fresh pipeline and report; CPU seconds per part."""
    for name in ("state", "reports", "journal"):
        (work / name).mkdir(exist_ok=True)
    config, _ = load(work / "logwarden.toml")
    rules = RuleSet.compile(config, load(work / "logwarden.toml")[1])
    report = config.reports["bench"]
    writer = ReportWriter(report, work / "journal", "bench-host", [], 1)
    writers = {"bench": writer}
    builder = RecordBuilder("bench-host")
    pipeline = Pipeline(rules, config.sources, writers, builder=builder, on_records=lambda: None)
    pipeline.processor = MatchProcessor(rules, config.sources, builder, lambda: NOW)
    info = corpus.stat()
    origin = SourceRef("backlog", str(corpus), info.st_dev, info.st_ino)
    process, write = pipeline.processor.process, pipeline._write
    clock = time.process_time
    spent = dict.fromkeys(PARTS, 0.0)

    def commit(seal: bool) -> None:
        batches = writer.take_batches(seal=seal)
        write_batches(batches)
        settle(batches)

    gc.collect()
    for number, matches in enumerate(blocks, 1):
        started = clock()
        outputs = process(matches, origin)
        processed = clock()
        write(outputs, origin)
        written = clock()
        spent["process"] += processed - started
        spent["write"] += written - processed
        if number % commit_every == 0:
            commit(seal=False)
            spent["commit"] += clock() - written
    started = clock()
    commit(seal=False)
    committed = clock()
    sealed = writer.sealed[0] if writer.sealed else writer.active
    assert sealed is not None
    commit(seal=True)
    spent["commit"] += committed - started
    spent["seal"] += clock() - committed
    return spent, staged_path(sealed.state)


def check(report: Path, blocks: list[list[Match]]) -> None:
    """The report holds one record per match, per rule: a fast wrong answer is not a result."""
    document = orjson.loads(report.read_bytes())
    got = Counter(record["rule"] for record in document["records"])
    want = Counter(match.rule for matches in blocks for match in matches)
    if got != want:
        raise SystemExit(f"the report's records {dict(got)} are not the matches {dict(want)}")


def dump(report: Path, to: Path) -> None:
    """The report with what differs from run to run blanked: records' `time`, opened, closed."""
    data = report.read_bytes()
    data = re.sub(rb'"time":"[^"]*"', b'"time":""', data)
    data = re.sub(rb'"(opened|closed)":"[^"]*"', rb'"\1":""', data, count=2)
    to.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--runs", type=int, default=5, help="timed runs, median shown (5)")
    parser.add_argument("--commit-every", type=int, default=1, help="blocks per commit (1)")
    parser.add_argument("--dump", type=Path, help="write the report, times blanked, here")
    args = parser.parse_args(argv)
    if not args.corpus.exists():
        raise SystemExit(
            f"{args.corpus}: no corpus; `make bench` or tests/bench/corpus.py builds it"
        )
    with tempfile.TemporaryDirectory(prefix="lw-records-") as scratch:
        base = Path(scratch)
        (base / "logwarden.toml").write_text(config_text(base, args.corpus.resolve()))
        config, sink = load(base / "logwarden.toml")
        started = time.perf_counter()
        blocks = matched_blocks(RuleSet.compile(config, sink), args.corpus)
        count = sum(len(matches) for matches in blocks)
        print(
            f"{args.corpus.name}: {count:,} matches in {len(blocks)} blocks"
            f" (found in {time.perf_counter() - started:.1f} s, not timed)"
        )
        figures: dict[str, list[float]] = {part: [] for part in (*PARTS, "total")}
        for run in range(args.runs + 1):
            work = base / f"run-{run}"
            work.mkdir()
            (work / "logwarden.toml").write_text(config_text(work, args.corpus.resolve()))
            spent, report = one_run(work, args.corpus, blocks, args.commit_every)
            check(report, blocks)
            if run == args.runs and args.dump is not None:
                dump(report, args.dump)
            shutil.rmtree(work)
            if run == 0:
                continue  # warm-up: imports, first-use caches, the page cache
            for part, seconds in spent.items():
                figures[part].append(seconds)
            figures["total"].append(sum(spent.values()))
    print("µs of process CPU per match, median of", args.runs, "runs:")
    for part, runs in figures.items():
        low, middle, high = (
            value / count * 1e6 for value in (min(runs), statistics.median(runs), max(runs))
        )
        print(f"  {part:8} {middle:6.2f}   (range {low:.2f}-{high:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
