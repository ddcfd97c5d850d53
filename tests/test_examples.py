"""The worked custom-pass example runs, and docs/writing-a-pass.md quotes it faithfully."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_pass.py"
DOC = ROOT / "docs" / "writing-a-pass.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_python_block_of_the_doc_is_quoted_from_the_example():
    source = EXAMPLE.read_text()
    blocks = _blocks("python")
    assert len(blocks) >= 5
    for block in blocks:
        assert block in source, f"docs/writing-a-pass.md quotes code the example lacks:\n{block}"


def test_the_example_runs_and_prints_what_the_doc_shows():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("property test passed")
    (shown,) = _blocks("text")
    graph = shown.split("\n\n")[0]
    assert graph in done.stdout
    explained = [line for line in shown.splitlines() if line.startswith("explain:")]
    assert explained and all(line in done.stdout for line in explained)
    changes = "neutral-mul x1, neutral-add x1"
    assert changes in shown and changes in done.stdout
