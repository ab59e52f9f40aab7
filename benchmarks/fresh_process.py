"""What the benchmarks that measure each variant in a fresh interpreter share: running one variant there
(no allocator cache or compiled graph carries over from another) and appending results as JSON lines."""
from __future__ import annotations

import json
import subprocess
import sys


def fresh_process_result(script: str, argv: list[str]) -> dict:
    """Run `python script *argv` in a new interpreter; the JSON object on its last stdout line. A failed
    run raises RuntimeError with its last stderr line."""
    done = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def append_jsonl(path: str, rows: list[dict]) -> None:
    """Append each row as one JSON line to `path`."""
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
