"""The two-slot checkpoint: the newest whole slot wins, a torn save falls back to the one before."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import orjson
import pytest

from logwarden import checkpoint as checkpoint_module
from logwarden.checkpoint import (
    SLOT_NAMES,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    load,
)
from logwarden.journal_entries import JournalPosition
from logwarden.reports import JournalState
from logwarden.resume import CopyRead


def state(seq: int, sources: int = 1) -> Checkpoint:
    """A checkpoint told apart by `seq`, its size by `sources`."""
    return Checkpoint(
        journals=(JournalState("sec", seq, "2026-11-24T13:19:38.120512Z", 10 * seq, seq),),
        next_seq={"sec": seq + 1},
        sources=frozenset(f"source-{n}" for n in range(sources)),
    )


def saved(state_dir: Path, *checkpoints: Checkpoint) -> None:
    store = CheckpointStore(state_dir)
    for checkpoint in checkpoints:
        store.save(checkpoint)
    store.close()


def test_first_start_has_no_checkpoint_and_saves_alternate(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.restored is None and load(tmp_path) is None
    for seq in range(1, 6):
        store.save(state(seq))
        assert load(tmp_path) == state(seq)
    store.close()
    again = CheckpointStore(tmp_path)
    assert again.restored == state(5)
    again.save(state(6))  # overwrites the older slot, so the newest stays whole
    assert load(tmp_path) == state(6)
    again.close()
    slots = [orjson.loads((tmp_path / name).read_bytes()) for name in SLOT_NAMES]
    assert sorted(slot["generation"] for slot in slots) == [5, 6]


def test_the_rotation_boundary_and_the_copies_read_through_survive_a_restart(
    tmp_path: Path,
) -> None:
    checkpoint = Checkpoint(
        rotated_after_ns=1_795_650_557_967_662_045,
        copies_read=(CopyRead(2049, 131075, 4096, 1_795_650_557_990_000_000),),
    )
    saved(tmp_path, checkpoint)
    assert load(tmp_path) == checkpoint


def test_a_slot_is_valid_json_also_after_a_shorter_save(tmp_path: Path) -> None:
    saved(tmp_path, state(1, sources=50), state(2, sources=50), state(3), state(4))
    for name in SLOT_NAMES:
        document = orjson.loads((tmp_path / name).read_bytes())  # what `jq` would read
        assert document["checkpoint"]["version"] == 5
    assert load(tmp_path) == state(4)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_torn_save_falls_back_to_the_previous_checkpoint(tmp_path: Path, damage: str) -> None:
    saved(tmp_path, state(1), state(2), state(3))
    newest = max(
        SLOT_NAMES, key=lambda name: orjson.loads((tmp_path / name).read_bytes())["generation"]
    )
    data = bytearray((tmp_path / newest).read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0x01
    (tmp_path / newest).write_bytes(bytes(data))
    assert load(tmp_path) == state(2)
    store = CheckpointStore(tmp_path)
    assert store.restored == state(2)
    store.save(state(4))  # goes to the damaged slot: the good one is kept
    store.close()
    assert load(tmp_path) == state(4)


def test_a_torn_first_save_is_a_first_start(tmp_path: Path) -> None:
    saved(tmp_path, state(1))
    [first] = [name for name in SLOT_NAMES if (tmp_path / name).stat().st_size]
    data = (tmp_path / first).read_bytes()
    (tmp_path / first).write_bytes(data[: len(data) // 3])
    assert load(tmp_path) is None


def test_both_slots_damaged_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    saved(tmp_path, state(1), state(2))
    for name in SLOT_NAMES:
        (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="both damaged"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="both damaged"):
        CheckpointStore(tmp_path)


def with_version(tmp_path: Path, version: int, without: tuple[str, ...] = ()) -> None:
    """Rewrite the one saved slot as if a daemon writing `version` had saved it (without the
    keys that version did not know)."""
    [name] = [name for name in SLOT_NAMES if (tmp_path / name).stat().st_size]
    slot = (tmp_path / name).read_bytes()
    body_start = slot.index(b'"checkpoint":') + len(b'"checkpoint":')
    document = orjson.loads(slot[body_start : slot.rindex(b"}")])
    document["version"] = version
    for key in without:
        del document[key]
    body = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    header = b'{"generation":1,"crc32":"%08x","length":%d,"checkpoint":' % (
        zlib.crc32(body),
        len(body),
    )
    (tmp_path / name).write_bytes(header + body + b"}\n")


def test_a_checkpoint_of_another_version_is_refused(tmp_path: Path) -> None:
    saved(tmp_path, state(1))
    with_version(tmp_path, 9)
    with pytest.raises(CheckpointError, match="version 9"):
        load(tmp_path)


def test_a_version_2_checkpoint_is_read(tmp_path: Path) -> None:
    """Version 3 only added journal tails; what version 2 wrote (no tails) is read as it is."""
    saved(tmp_path, state(1))
    with_version(tmp_path, 2)
    assert load(tmp_path) == state(1)


def test_a_version_3_checkpoint_is_read_without_cursors(tmp_path: Path) -> None:
    """Version 4 added journal sources' cursors; version 3 (none) is read as having none."""
    saved(tmp_path, state(1))
    with_version(tmp_path, 3)
    assert load(tmp_path) == state(1)
    assert load(tmp_path).cursors == {}  # type: ignore[union-attr]


def test_journal_cursors_survive_a_save(tmp_path: Path) -> None:
    cursors = {
        "sshd": JournalPosition("s=ab;i=4;b=cd;m=1;t=2;x=3", None),
        "copy": JournalPosition("s=ef;i=9;b=cd;m=1;t=2;x=3", "/srv/journal"),
    }
    saved(tmp_path, dataclasses.replace(state(1), cursors=cursors))
    assert load(tmp_path).cursors == cursors  # type: ignore[union-attr]


def test_a_daemon_that_knows_only_version_4_refuses_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading 5 as 4 would drop the held suppression records and the threshold windows."""
    saved(tmp_path, state(1))
    monkeypatch.setattr(checkpoint_module, "READABLE_VERSIONS", (2, 3, 4))
    with pytest.raises(CheckpointError, match="version 5"):
        load(tmp_path)


def test_a_version_4_checkpoint_is_migrated_without_rule_state(tmp_path: Path) -> None:
    """Version 5 added rule state; a version 4 checkpoint (none) starts with empty windows."""
    saved(tmp_path, dataclasses.replace(state(1), rule_state={"v": 1, "thresholds": {}}))
    with_version(tmp_path, 4, without=("rule_state",))
    restored = load(tmp_path)
    assert restored == state(1)
    assert restored.rule_state is None


def test_rule_state_survives_a_save_also_as_a_fragment(tmp_path: Path) -> None:
    """The daemon hands the state over serialised once (an orjson.Fragment): it reads back whole."""
    rule_state = {
        "v": 1,
        "thresholds": {"v": 2, "rules": {"ssh": [[["1.2.3.4"], [1.5], True, []]]}},
    }
    saved(
        tmp_path,
        dataclasses.replace(state(1), rule_state=orjson.Fragment(orjson.dumps(rule_state))),
    )
    assert load(tmp_path).rule_state == rule_state  # type: ignore[union-attr]


SAVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from logwarden.checkpoint import Checkpoint, CheckpointStore
    from logwarden.reports import JournalState

    store = CheckpointStore(Path(sys.argv[1]))
    seq = store.restored.next_seq["sec"] if store.restored else 1
    print("ready", flush=True)
    while True:
        store.save(Checkpoint(
            journals=(JournalState("sec", seq, "2026-11-24T13:19:38.120512Z", seq, seq),),
            next_seq={"sec": seq + 1},
            sources=frozenset(f"source-{n}" for n in range(seq % 97)),  # sizes vary
        ))
        seq += 1
    """
)


def test_sigkill_while_saving_never_loses_the_checkpoint(tmp_path: Path) -> None:
    """A real process saving as fast as it can, killed at random moments: every restart finds a
    whole checkpoint, never older than the one before the kill."""
    rng = random.Random(7)
    last = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "daemon")}
    for _ in range(12):
        process = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.01, 0.15))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        restored = load(tmp_path)
        assert restored is not None
        seq = restored.next_seq["sec"]
        assert seq >= last
        [journal] = restored.journals
        assert journal.seq == seq - 1 and len(restored.sources) == journal.seq % 97
        last = seq
    assert last > 12, "the saver made progress"
