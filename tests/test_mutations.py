"""tools/mutations.py refuses a list that no longer matches the code before anything runs."""

import subprocess
import sys

import yaml
from conftest import REPO, assert_one_line_error


def test_stale_or_malformed_entries_are_one_line_exit_2(tmp_path):
    listing = tmp_path / "mutations.yaml"
    metrics = "src/camvidseg/evaluation/metrics.py"
    entries = [
        {"id": "gone", "file": metrics, "find": "code no longer there", "replace": "x"},
        {"id": "old-key", "file": metrics, "find": "tp", "replace": "x", "tests": []},
        {"id": "gone", "file": metrics, "find": "union = gt + pred - tp", "replace": "x"},
    ]
    listing.write_text(yaml.safe_dump(entries))
    command = [sys.executable, REPO / "tools/mutations.py", "--list", listing, "--only", "nope"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert_one_line_error(result, "error: mutations.yaml: gone: snippet found 0 times in ")
    message = result.stderr.strip()
    assert "entry 2: keys ['file', 'find', 'id', 'replace', 'tests']" in message
    assert "id 'gone' used twice" in message and "--only: no mutation 'nope'" in message
    assert not result.stdout  # no test ran

