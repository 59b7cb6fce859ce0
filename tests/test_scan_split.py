"""`scan` of a large file in two halves, one in a forked process (issue 14): the same records,
in the same order, and the same counts as the file scanned in one piece."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from logwarden import scan
from logwarden.rules import load_config
from logwarden.scan import Scanner, ScanSummary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "bench"))
import corpus as bench_corpus  # noqa: E402 (the bench's generator: mixed sshd, nginx, app lines)

SMALL_LINES = """
[daemon]
state_dir = "state"

[sources.app]
paths = ["*.log"]
max_line_bytes = 256

[reports.ops]
dir = "reports"

[rules.error]
report = "ops"
match = ['ERROR (?P<code>E[0-9]+)']
"""


def scanned(
    config: Path, path: Path, monkeypatch: pytest.MonkeyPatch, split: bool
) -> tuple[list[dict[str, object]], ScanSummary]:
    """Records (without the moments they were written and read) and the summary of one scan."""
    monkeypatch.setattr(scan, "SPLIT_MIN_BYTES", 0 if split else 1 << 62)
    loaded, rules = load_config(config)
    out = io.BytesIO()
    scanner = Scanner(loaded, rules, out, progress=False)
    split_at = scanner._split_at
    chosen: list[int | None] = []

    def spied(*args: Any) -> int | None:
        chosen.append(split_at(*args))
        return chosen[-1]

    monkeypatch.setattr(scanner, "_split_at", spied)
    summary = scanner.scan([str(path)])
    assert (chosen[0] is not None) is split, chosen
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    for record in records:
        del record["time"]
        if record["time_source"] == "arrival":
            del record["event_time"]
    return records, summary


def test_the_bench_corpus_in_two_halves_gives_every_record_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus.log"
    with corpus.open("w") as stream:
        expected = bench_corpus.generate(stream, 20_000, seed=11)
    with corpus.open("a") as stream:
        stream.write("Traceback (most recent call last):")  # a last line without its newline
    config = ROOT / "tests" / "bench" / "plain.toml"
    whole, whole_summary = scanned(config, corpus, monkeypatch, split=False)
    halves, halves_summary = scanned(config, corpus, monkeypatch, split=True)
    assert halves == whole
    assert halves_summary == whole_summary
    assert whole_summary.lines == 20_001
    assert len(whole) > sum(expected.values()) // 2
    # line numbers run on across the split: the second half counted the first's lines
    numbers = [record["source"]["line_no"] for record in whole]  # type: ignore[index]
    assert numbers == sorted(numbers) and numbers[-1] == 20_001


def test_a_cut_line_across_the_middle_and_rules_with_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "logwarden.toml"
    config.write_text(textwrap.dedent(SMALL_LINES))
    log = tmp_path / "app.log"
    lines = [f"{n} ERROR E{n}" for n in range(200)]
    lines[100] = "ERROR E1 " + "x" * 3000  # cut at 256 bytes: the middle of the file is in it
    log.write_text("\n".join(lines) + "\n")
    whole, whole_summary = scanned(config, log, monkeypatch, split=False)
    halves, halves_summary = scanned(config, log, monkeypatch, split=True)
    assert halves == whole and halves_summary == whole_summary
    assert [r["truncated"] for r in whole].count(True) == 1
    # a threshold's window must see every match in one process: no split
    config.write_text(
        textwrap.dedent(SMALL_LINES) + 'threshold = { count = 5, within = "1m", key = "code" }\n'
    )
    with pytest.raises(AssertionError, match="None"):  # `scanned` found it was not split
        scanned(config, log, monkeypatch, split=True)


@pytest.mark.integration
def test_a_scan_stopped_by_sigterm_takes_its_second_half_with_it(tmp_path: Path) -> None:
    """`scan` dies of SIGTERM at once (the default action); the forked half must not run on."""
    big = tmp_path / "big.log"
    line = b"Nov 24 13:19:38 web1 sshd[1]: Invalid user al from 198.51.100.7 port 22\n"
    with big.open("wb") as stream:
        for _ in range(70):
            stream.write(line * ((1 << 20) // len(line)))  # 70 x ~1 MiB, every line a match
    assert big.stat().st_size >= scan.SPLIT_MIN_BYTES
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logwarden",
            "scan",
            "-c",
            str(ROOT / "tests" / "bench" / "plain.toml"),
            str(big),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 30
    second = ""
    while not second and time.monotonic() < deadline and process.poll() is None:
        second = children.read_text().strip()
        time.sleep(0.01)
    assert second, "the scan never forked its second half"
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == -signal.SIGTERM
    deadline = time.monotonic() + 2  # its half, a match a line, is several seconds of work
    while running(second) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running(second), "the second half outlived the scan"


def running(pid: str) -> bool:
    """Whether the process is there and not a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(
    "extra",
    [
        # a carry lends across the middle: the lender is in the first half, the borrower after
        """
[rules.conn]
records = false
match = ['conn pid=(?P<pid>[0-9]+) from (?P<ip>[0-9.]+)']

[rules.fail]
match = ['fail pid=(?P<pid>[0-9]+)']
carry = { key = "pid", from = ["conn"], within = "1h", captures = ["ip"] }
""",
        # an event spans the middle
        "",
    ],
    ids=["carry", "multiline"],
)
def test_carry_and_multiline_are_scanned_in_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str
) -> None:
    header = textwrap.dedent(SMALL_LINES)
    if not extra:
        header = header.replace("max_line_bytes = 256", "multiline = { start = '^[0-9]' }")
    config = tmp_path / "logwarden.toml"
    config.write_text(header + textwrap.dedent(extra))
    log = tmp_path / "app.log"
    lines = [f"{n} ERROR E{n}" for n in range(200)]
    lines[10] = "conn pid=7 from 192.0.2.9"
    lines[190] = "fail pid=7"
    lines[99:103] = ["99 ERROR E99", "  continued", "  continued", "  continued"]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(AssertionError, match="None"):  # `scanned` found it was not split
        scanned(config, log, monkeypatch, split=True)
    whole, _ = scanned(config, log, monkeypatch, split=False)
    if extra:
        assert [r["captures"] for r in whole if r["rule"] == "fail"] == [
            {"pid": "7", "ip": "192.0.2.9"}
        ]
    else:
        assert any(
            r["line"] == "99 ERROR E99\n  continued\n  continued\n  continued" for r in whole
        )


@pytest.mark.integration
def test_standard_input_is_never_split(tmp_path: Path) -> None:
    """`scan -` from a redirected file reads from where its offset stands, which the halves'
    preads from 0 would not: stdin is scanned in one piece, whatever its size."""
    config = tmp_path / "logwarden.toml"
    config.write_text(textwrap.dedent(SMALL_LINES))
    log = tmp_path / "app.log"
    lines = [f"{n} ERROR E{n}\n" for n in range(20)]
    log.write_text("".join(lines))
    tenth = len("".join(lines[:10]))
    code = (
        "import os, sys\n"
        "from logwarden import scan\n"
        "from logwarden.cli import main\n"
        "scan.SPLIT_MIN_BYTES = 0\n"
        "os.lseek(0, int(sys.argv[1]), os.SEEK_SET)\n"
        "sys.argv = ['logwarden', 'scan', '-c', sys.argv[2], '-']\n"
        "raise SystemExit(main())\n"
    )
    with log.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", code, str(tenth), str(config)],
            stdin=stdin, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
    codes = [orjson.loads(line)["captures"]["code"] for line in done.stdout.splitlines()]
    assert codes == [f"E{n}" for n in range(10, 20)], done.stderr
