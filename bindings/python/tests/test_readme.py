"""The README's Python example, run as written (section "Python"), against the sealpost
broker with the walkthrough's certificates; only its port 8883 is replaced by a free one."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, SealpostBroker


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "one Python example in the README's Python section"
    return blocks[0]


def test_readme_example_runs_as_written(pki):
    pki.publisher("sensor-1", "sensors/#")
    pki.subscriber("alice")
    broker = SealpostBroker(pki)
    try:
        code = readme_example()
        assert "8883" in code
        done = subprocess.run(
            [sys.executable, "-c", code.replace("8883", str(broker.port))],
            capture_output=True,
            text=True,
            cwd=pki.root,
            timeout=60,
        )
    finally:
        broker.stop()
    assert done.returncode == 0, done.stderr
    # What the example's comment says it prints.
    expected = re.search(r"print\(.*\)  # (.*)", code).group(1)
    assert done.stdout == expected + "\n"
