"""Journals, sealing, idempotent publish, retention, disk-full give-back: on real files."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from logwarden.config import ReportConfig
from logwarden.reports import (
    STAGED_PREFIX,
    Journal,
    JournalState,
    ReportDirError,
    ReportWriter,
    cut_back,
    give_back,
    prepare_dirs,
    publish_sealed,
    recover_journals,
    settle,
    staged_path,
    write_batches,
)
from logwarden.service import lock_state_dir


def make_writer(tmp_path: Path, **overrides: object) -> ReportWriter:
    settings: dict[str, object] = {"name": "sec", "dir": tmp_path / "out"} | overrides
    config = ReportConfig.model_validate(settings)
    prepare_dirs({"sec": config}, tmp_path / "journals")
    return ReportWriter(config, tmp_path / "journals" / "sec", "host1", [], 1)


def record(n: int, rule: str = "r1") -> bytes:
    return orjson.dumps({"rule": rule, "n": n}) + b"\n"


def sealed_then_crash(writer: ReportWriter) -> Journal:
    """One record, sealed and staged, its checkpoint durable; then the crash, before any rename."""
    writer.append(record(1), "r1")
    batches = writer.take_batches(seal=True)
    write_batches(batches)
    settle(batches)
    [journal] = writer.sealed
    return journal


def commit(writer: ReportWriter, seal: bool = False) -> list[Path]:
    """What the daemon's commit does, minus the checkpoint: write, settle, publish."""
    batches = writer.take_batches(seal=seal)
    write_batches(batches)
    settle(batches)
    published, error = publish_sealed(batches)
    assert error is None
    for _, journal, _ in published:
        writer.forget_published(journal)
    return [path for _, _, path in published]


def test_json_report_is_one_valid_document_with_counts(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    for n in range(5):
        writer.append(record(n, "a" if n % 2 else "b"), "a" if n % 2 else "b")
    [published] = commit(writer, seal=True)
    document = orjson.loads(published.read_bytes())
    assert document["report"] == "sec" and document["host"] == "host1"
    assert document["counts"] == {"a": 2, "b": 3}
    assert [item["n"] for item in document["records"]] == [0, 1, 2, 3, 4]
    assert document["closed"] >= document["opened"]
    assert published.name.startswith("sec-") and published.name.endswith("-00000001.json")
    assert published.stat().st_mode & 0o777 == 0o640
    assert not any(p.name.startswith(".") for p in published.parent.iterdir())


def test_ndjson_report_is_the_records_one_a_line(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, format="ndjson", file_mode=0o600)
    for n in range(3):
        writer.append(record(n), "r1")
    [published] = commit(writer, seal=True)
    assert [orjson.loads(line)["n"] for line in published.read_bytes().splitlines()] == [0, 1, 2]
    assert published.stat().st_mode & 0o777 == 0o600


def test_rotation_by_records_bytes_and_request(tmp_path: Path) -> None:
    writer = make_writer(
        tmp_path, rotate_max_records=3, rotate_interval=None, rotate_max_bytes=None
    )
    writer.append(record(1), "r1")
    writer.append(record(2), "r1")
    assert not writer.due_for_rotation(0.0)
    writer.append(record(3), "r1")
    assert writer.due_for_rotation(0.0)

    by_bytes = make_writer(tmp_path / "b", rotate_max_bytes=50, rotate_interval=None)
    by_bytes.append(b"x" * 60 + b"\n", None)
    assert by_bytes.due_for_rotation(0.0)

    requested = make_writer(tmp_path / "c", rotate_interval=None)
    requested.rotate_requested = True
    assert not requested.due_for_rotation(0.0), "an empty journal is never published"
    requested.append(record(1), "r1")
    assert requested.due_for_rotation(0.0)


def test_publish_is_idempotent_after_crash_between_rename_and_checkpoint(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    journal = sealed_then_crash(writer)
    first = writer.publish(journal, journal.state)
    content = first.read_bytes()
    # a restart finds the same sealed journal in the checkpoint: publishing again is a no-op
    again = ReportWriter(writer.config, writer.journal_dir, "host1", [journal.state], 1)
    [same] = again.publishable()
    assert again.publish(same, same.state) == first
    assert first.read_bytes() == content
    assert len(list(first.parent.glob("*.json"))) == 1


def test_recovery_cuts_uncommitted_tail_and_removes_unknown_journals(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    commit(writer)
    assert writer.active is not None
    committed = writer.active.state
    with open(writer.active.path, "ab") as stream:
        stream.write(record(2)[:7])  # a torn, uncommitted write
    stray = writer.journal_dir / "sec-20260101T000000Z-00000099.ndjson"
    stray.write_bytes(record(3))
    assert recover_journals(tmp_path / "journals", writer.config, [committed]) == []
    assert writer.active.path.read_bytes() == record(1)
    assert not stray.exists()


def test_failed_write_gives_everything_back_in_order(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    batches = writer.take_batches(seal=False)
    writer.append(record(2), "r1")  # arrived while the commit was running
    give_back(batches)
    assert writer.active is not None
    assert bytes(writer.active.pending) == record(1) + record(2)
    assert writer.active.records == 2
    assert writer.active.pending_counts == {"r1": 2}


def test_pending_bytes_and_active_records_span_sealed_and_active(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    writer.seal_active()
    writer.append(record(2), "r1")
    writer.append(record(3), "r1")
    assert writer.pending_bytes == len(record(1) + record(2) + record(3))
    assert writer.active_records == 2
    batches = writer.take_batches(seal=False)  # taken: in flight, no longer pending
    assert writer.pending_bytes == 0 and writer.active_records == 2
    give_back(batches)
    assert writer.pending_bytes == len(record(1) + record(2) + record(3))


def test_seal_survives_a_failed_commit(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    batches = writer.take_batches(seal=True)
    give_back(batches)  # the disk was full
    assert writer.publishable() == []
    retry = writer.take_batches(seal=False)
    write_batches(retry)
    settle(retry)
    [journal] = writer.publishable()
    assert journal.state.closed is not None
    assert orjson.loads(writer.publish(journal, journal.state).read_bytes())["records"] == [
        {"rule": "r1", "n": 1}
    ]


def test_commit_retried_after_a_failed_checkpoint_writes_each_record_once(tmp_path: Path) -> None:
    """The journals were written and fsynced, then the checkpoint could not be (disk full), and
    even cutting the journal back failed: the retry must overwrite that part, not append it
    after itself."""
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    commit(writer)
    writer.append(record(2), "r1")
    failed = writer.take_batches(seal=False)
    write_batches(failed)  # durable in the journal, but no checkpoint says so
    give_back(failed)
    writer.append(record(3), "r1")
    [published] = commit(writer, seal=True)
    assert orjson.loads(published.read_bytes())["records"] == [
        {"rule": "r1", "n": n} for n in (1, 2, 3)
    ]


def test_write_failure_truncates_back(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    commit(writer)
    writer.append(record(2), "r1")
    batches = writer.take_batches(seal=False)
    assert writer.active is not None
    path = writer.active.path
    os.chmod(path, 0o400)
    if os.access(path, os.W_OK):  # root ignores modes: make the write fail another way
        path.unlink()
        path.mkdir()
    with pytest.raises(OSError):
        write_batches(batches)


def test_retention_keeps_newest_and_spares_protected(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, keep=2)
    names = []
    for n in range(4):
        writer.append(record(n), "r1")
        [published] = commit(writer, seal=True)
        names.append(published.name)
        for journal in list(writer.sealed):
            writer.forget_published(journal)
    (writer.config.dir / "unrelated.txt").write_text("x")
    protected = {names[0].rsplit(".", 1)[0]}
    removed = writer.apply_retention(protected)
    assert [p.name for p in removed] == [names[1]]
    assert sorted(p.name for p in writer.config.dir.iterdir()) == sorted(
        [names[0], names[2], names[3], "unrelated.txt"]
    )


def test_journal_state_round_trip() -> None:
    state = JournalState("sec", 12, "2026-11-24T13:19:38.120512Z", 10, 2, {"r": 2}, None)
    assert JournalState.from_dict(state.to_dict()) == state
    assert state.id == "sec-20261124T131938Z-00000012"


def test_unwritable_report_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    config = ReportConfig.model_validate({"name": "x", "dir": blocker / "reports"})
    with pytest.raises(ReportDirError, match="cannot write to"):
        prepare_dirs({"x": config}, tmp_path / "journals")


def test_limits_are_exact_even_when_many_records_arrive_between_commits(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, rotate_max_records=5, rotate_interval=None)
    for n in range(23):
        writer.append(record(n), "r1")
    published = commit(writer, seal=True)
    sizes = [len(orjson.loads(path.read_bytes())["records"]) for path in published]
    assert sizes == [5, 5, 5, 5, 3]
    assert [
        n["n"] for path in published for n in orjson.loads(path.read_bytes())["records"]
    ] == list(range(23))
    assert [p.name for p in published] == sorted(p.name for p in published)


def test_byte_limit_never_exceeded_by_a_report_of_several_records(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, rotate_max_bytes=100, rotate_interval=None, format="ndjson")
    for n in range(20):
        writer.append(record(n), "r1")  # ~20 bytes each
    for path in commit(writer, seal=True):
        assert path.stat().st_size <= 100


def test_a_report_opened_and_sealed_in_one_commit_never_writes_a_journal(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, rotate_max_records=1)
    writer.append(record(1), "r1")
    writer.append(record(2), "r1")  # seals the first
    batches = writer.take_batches(seal=True)
    write_batches(batches)
    assert list(writer.journal_dir.iterdir()) == []
    staged = sorted(path.name for path in writer.config.dir.iterdir())
    assert len(staged) == 2 and all(name.startswith(STAGED_PREFIX) for name in staged)
    settle(batches)
    published, error = publish_sealed(batches)
    assert error is None
    assert [orjson.loads(path.read_bytes())["records"] for _, _, path in published] == [
        [{"rule": "r1", "n": 1}],
        [{"rule": "r1", "n": 2}],
    ]
    assert not list(writer.config.dir.glob(".*"))


def test_a_long_lived_journal_is_published_whole_and_its_file_removed(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, format="ndjson")
    writer.append(record(1), "r1")
    commit(writer)
    writer.append(record(2), "r1")
    commit(writer)
    assert writer.active is not None
    journal_file = writer.active.path
    assert journal_file.read_bytes() == record(1) + record(2)
    writer.append(record(3), "r1")  # still in memory when the journal is sealed
    [published] = commit(writer, seal=True)
    assert published.read_bytes() == record(1) + record(2) + record(3)
    assert not journal_file.exists()


def test_a_failed_commit_removes_what_it_staged(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    batches = writer.take_batches(seal=True)
    write_batches(batches)
    cut_back(batches)  # the checkpoint after it failed
    give_back(batches)
    assert list(writer.config.dir.iterdir()) == []
    [published] = commit(writer)
    assert orjson.loads(published.read_bytes())["records"] == [{"rule": "r1", "n": 1}]


def test_recovery_after_a_crash_between_staging_and_checkpoint(tmp_path: Path) -> None:
    """The checkpoint still lists the journal as open: what was staged is forgotten, and the
    journal goes back to its committed length (its lines are read again)."""
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    commit(writer)
    assert writer.active is not None
    durable = writer.active.state
    writer.append(record(2), "r1")
    write_batches(writer.take_batches(seal=True))  # then the crash
    other = make_writer(tmp_path, name="sec-x")  # a report whose name extends this one's
    other.append(record(9), "r1")
    write_batches(other.take_batches(seal=True))
    assert recover_journals(tmp_path / "journals", writer.config, [durable]) == []
    assert writer.active is None and [j.path.read_bytes() for j in writer.sealed] == [record(1)]
    left = sorted(path.name for path in writer.config.dir.iterdir())
    assert len(left) == 1 and left[0].startswith(f"{STAGED_PREFIX}sec-x-"), "not ours to remove"


def test_recovery_after_a_crash_between_checkpoint_and_rename(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    sealed = sealed_then_crash(writer)
    assert recover_journals(tmp_path / "journals", writer.config, [sealed.state]) == []
    restarted = ReportWriter(writer.config, writer.journal_dir, "host1", [sealed.state], 2)
    [published] = commit(restarted)
    assert orjson.loads(published.read_bytes())["records"] == [{"rule": "r1", "n": 1}]


def test_recovery_names_a_sealed_report_removed_by_hand(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    sealed = sealed_then_crash(writer)
    staged_path(sealed.state).unlink()
    assert recover_journals(tmp_path / "journals", writer.config, [sealed.state]) == [sealed.state]


def test_a_reload_changing_dir_and_format_applies_to_journals_sealed_after_it(
    tmp_path: Path,
) -> None:
    writer = make_writer(tmp_path)
    writer.append(record(1), "r1")
    batches = writer.take_batches(seal=True)  # sealed under the old config
    writer.config = ReportConfig.model_validate(
        {"name": "sec", "dir": tmp_path / "new", "format": "ndjson"}
    )  # SIGHUP, while the commit runs
    prepare_dirs({"sec": writer.config}, tmp_path / "journals")
    write_batches(batches)
    settle(batches)
    published, error = publish_sealed(batches)
    assert error is None
    [(_, _, old)] = published
    assert old.parent == tmp_path / "out" and old.suffix == ".json"
    writer.forget_published(batches[0].journal)
    writer.append(record(2), "r1")
    [new] = commit(writer, seal=True)
    assert new.parent == tmp_path / "new" and new.read_bytes() == record(2)


# ---------------------------------------------------------------- the journal tail in the checkpoint


def committed_state(writer: ReportWriter) -> JournalState:
    assert writer.active is not None
    return writer.active.state


@pytest.mark.parametrize("lost", ["the unsynced tail", "the whole file"])
def test_a_power_cut_that_takes_the_unsynced_tail_is_undone_from_the_checkpoint(
    tmp_path: Path, lost: str
) -> None:
    """Small appends are durable through the checkpoint (their journal write is not fsynced):
    whatever a power cut takes of them, recovery writes back from the checkpoint's copy."""
    from logwarden import reports

    writer = make_writer(tmp_path)
    big = b"x" * (reports.INLINE_TAIL_BYTES // 2)
    writer.append(orjson.dumps({"n": 0, "pad": big.decode()}) + b"\n", "r1")
    writer.append(orjson.dumps({"n": 1, "pad": big.decode()}) + b"\n", "r1")
    commit(writer)  # over the limit: the file is fsynced, nothing rides in the checkpoint
    flushed = committed_state(writer)
    assert flushed.tail == b""
    for n in (2, 3):
        writer.append(record(n), "r1")
        commit(writer)
    state = committed_state(writer)
    assert state.tail == record(2) + record(3)
    assert state.length == flushed.length + len(state.tail)
    assert JournalState.from_dict(orjson.loads(orjson.dumps(state.to_dict()))) == state
    journal_file = writer.journal_dir / f"{state.id}.ndjson"
    whole = journal_file.read_bytes()
    if lost == "the whole file":  # its first fsync had not happened: nothing was durable
        journal_file.unlink()
        state = JournalState(
            state.report, state.seq, state.opened, len(state.tail), 2, {}, tail=state.tail
        )
        whole = state.tail
    else:
        os.truncate(journal_file, flushed.length)
    assert recover_journals(tmp_path / "journals", writer.config, [state]) == []
    assert journal_file.read_bytes() == whole


def test_a_tail_past_the_limit_is_fsynced_into_the_journal(tmp_path: Path) -> None:
    from logwarden import reports

    writer = make_writer(tmp_path)
    n = 0
    while committed_state_or_none(writer) is None or committed_state(writer).tail:
        writer.append(record(n), "r1")
        commit(writer)
        n += 1
        assert n * len(record(n)) < 2 * reports.INLINE_TAIL_BYTES  # bounded
    state = committed_state(writer)
    assert state.tail == b"" and state.length == sum(len(record(k)) for k in range(n))


def committed_state_or_none(writer: ReportWriter) -> JournalState | None:
    return writer.active.state if writer.active is not None else None


def test_a_journal_shorter_than_its_fsynced_part_is_a_clear_error(tmp_path: Path) -> None:
    """The tail can be written back; what was fsynced cannot: a journal cut below that (by hand)
    must stop the start with its name, not publish a report with a hole of zeros."""
    from logwarden import reports

    writer = make_writer(tmp_path)
    big = "x" * reports.INLINE_TAIL_BYTES
    writer.append(orjson.dumps({"n": 0, "pad": big}) + b"\n", "r1")
    commit(writer)  # fsynced into the journal
    writer.append(record(1), "r1")
    commit(writer)  # rides in the checkpoint
    state = committed_state(writer)
    assert state.tail == record(1)
    os.truncate(writer.journal_dir / f"{state.id}.ndjson", 10)
    with pytest.raises(ReportDirError, match="shorter than"):
        recover_journals(tmp_path / "journals", writer.config, [state])


def test_every_directory_the_daemon_creates_is_fsynced_into_its_parent(
    tmp_path: Path, fsync_spy: list[Path]
) -> None:
    """A power cut right after the first start must not lose `journals/<report>` (every later
    seal would fail) or a report dir: each new directory's entry is synced in its parent."""
    synced = fsync_spy
    state = tmp_path / "var" / "state"
    lock = lock_state_dir(state)
    try:
        config = ReportConfig.model_validate({"name": "sec", "dir": tmp_path / "out" / "sec"})
        prepare_dirs({"sec": config}, state / "journals")
    finally:
        lock.close()
    for directory in (state, state / "journals" / "sec", tmp_path / "out" / "sec"):
        assert directory.is_dir()
        assert directory.parent in synced, f"{directory} created but its parent never fsynced"
    assert set(synced) >= {tmp_path, tmp_path / "var", state, state / "journals", tmp_path / "out"}


@pytest.mark.parametrize("chunk", [61, 1000, 1 << 20])
def test_a_sealed_report_is_rendered_and_tallied_as_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Sealing renders and tallies a chunk of lines at a time: chunk boundaries in the middle of
    a line, empty lines, lines unlike a record (no time, another field order) and times out of
    order give the very report and index entry that one line at a time gives."""
    from logwarden import reports
    from logwarden.report_index import RecordTally

    monkeypatch.setattr(reports, "READ_CHUNK", chunk)  # lines cut in two at chunk boundaries
    times = ["2026-01-02T00:00:05.000000Z", "2026-01-02T00:00:01.000000Z", "2026-01-02T00:00:09Z"]
    lines = [orjson.dumps({"v": 1, "time": times[n % 3], "rule": "r1", "n": n}) for n in range(40)]
    lines[7] = orjson.dumps({"rule": "r1", "n": 7})  # no time
    lines[21] = orjson.dumps({"n": 21, "time": "2025-12-31T23:59:59Z"})  # time not first
    for form in ("json", "ndjson"):
        writer = make_writer(tmp_path / form, format=form)
        for line in lines[:30]:
            writer.append(line + b"\n", "r1")
        writer.append(b"\n", None)  # an empty line: no record
        commit(writer)
        for line in lines[30:]:
            writer.append(line + b"\n", "r1")
        batches = writer.take_batches(seal=True)
        write_batches(batches)
        [batch] = batches
        entry = batch.journal.index_entry
        settle(batches)
        published, error = publish_sealed(batches)
        assert error is None
        data = published[0][2].read_bytes()
        if form == "ndjson":
            assert data == b"".join(line + b"\n" for line in lines)
        else:
            assert data.endswith(b'"records":[' + b",\n".join(lines) + b"]}\n")
        expected = RecordTally()
        for line in lines:
            expected.add(line)
        assert entry is not None
        assert (entry["records"], entry["first_time"], entry["last_time"]) == (
            40,
            expected.first,
            expected.last,
        )
        assert expected.first == "2025-12-31T23:59:59Z"
        assert expected.last == "2026-01-02T00:00:09Z"
