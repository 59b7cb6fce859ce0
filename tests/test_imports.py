"""What the daemon's start imports: modules only some configs need are imported where they are
needed, since every import is paid by every start (and, in catch-up, before the first line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
[daemon]
state_dir = "state"

[sources.app]
paths = ["logs/*.log"]

[rules.failed]
match = ['Failed password for %{user:user} from %{ip:ip}']

[reports.out]
dir = "reports"
"""

# prometheus_client and the HTTP server and e-mail modules it brings (~15 ms): only a config that
# exports metrics; difflib (~5 ms): only a config or pattern with a typo, to suggest a name
NOT_AT_START = ("prometheus_client", "wsgiref", "http", "difflib")


def test_a_start_without_metrics_or_typos_leaves_out_what_it_does_not_use(tmp_path: Path) -> None:
    config = tmp_path / "logwarden.toml"
    config.write_text(CONFIG)
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import logwarden.cli, logwarden.service\n"
        "from logwarden.rules import load_config\n"
        f"config, rules = load_config(Path({str(config)!r}))\n"
        "assert list(config.rules) == ['failed']\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe, *NOT_AT_START],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[-1] == "[]"  # after any log line of the config load


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        (CONFIG.replace("paths =", "pahts ="), "did you mean 'paths'?"),
        (CONFIG.replace("%{ip:ip}", "%{ipp:ip}"), "did you mean %{ip}?"),
    ],
)
def test_a_typo_still_gets_its_suggestion(tmp_path: Path, text: str, suggestion: str) -> None:
    from logwarden.problems import ConfigError
    from logwarden.rules import load_config

    config = tmp_path / "logwarden.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert suggestion in str(raised.value) or any(
        suggestion in str(problem) for problem in raised.value.problems
    )
