"""Which sources run: a file source with `fallback_for` stands in for a journal source that
cannot read its journal, and only then.

The case it is for: sshd logs to the journal, and on a host with rsyslog the same lines are
copied into /var/log/auth.log. Reading both would report every event twice; reading only the
journal misses hosts where the journal cannot be read (no journald in a container, the daemon
not in group `systemd-journal`); reading only the file misses every host without rsyslog. So the
shipped config names both and marks the file source `fallback_for = "<journal source>"`: exactly
one of the pair runs, decided at start and at each reload (SIGHUP) and logged.

Rejected: de-duplicating events that arrive by both ways (by time, host and text). The two
copies differ in timestamp precision and escaping, arrive at different moments, and a window
long enough to pair them reliably is a window of state to keep and to commit.
"""

from __future__ import annotations

from logwarden.config import Config
from logwarden.journal import journal_readable
from logwarden.log import get_logger

log = get_logger(__name__)


def select_sources(config: Config) -> Config:
    """The config with one source of each fallback pair left out (blocking: it looks at the
    journal's files); the choice is logged."""
    readable: dict[str, bool] = {}
    dropped: set[str] = set()
    for name, source in config.sources.items():
        target = source.fallback_for
        if target is None or target not in config.sources:
            continue
        if target not in readable:
            journal = config.sources[target].journal
            readable[target] = journal_readable(None if journal is None else journal.directory)
        if readable[target]:
            dropped.add(name)
            log.info(
                "journal readable: using the journal source, not its file fallback",
                source=target,
                fallback=name,
            )
        else:
            dropped.add(target)
            log.warning(
                "journal not readable (no journalctl, no journal files, or not in group "
                "systemd-journal): using the file fallback instead of the journal source",
                source=target,
                fallback=name,
            )
    if not dropped:
        return config
    active = {name: source for name, source in config.sources.items() if name not in dropped}
    return config.model_copy(update={"sources": active})


def files_only(config: Config) -> Config:
    """The config as the file tailers see it: its file sources only."""
    return config.model_copy(update={"sources": config.file_sources})
