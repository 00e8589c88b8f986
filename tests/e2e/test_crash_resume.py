"""SIGKILL a process in the middle of its tasks, run it again with the same run id: every
task's side effect is there exactly once, except at most the one task in flight at the kill."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from papayya import papayya

dsn, run_id, out = sys.argv[1], sys.argv[2], sys.argv[3]
client = papayya(dsn)
run = client.run("crashy", run_id=run_id)
for i in range(10):
    def work(i=i):
        with open(out, "a") as f:
            f.write(f"{i}\\n")
        time.sleep(0.03)
        return i
    run.task(f"task-{i}", work)()
run.complete("done")
print("COMPLETED", flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(dsn: str, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(SCRIPT)
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for trial in range(2):
        out = tmp_path / f"side-effects-{trial}.txt"
        run_id = f"crash-{trial}"
        kills = 0
        for _ in range(12):
            killing = kills < 3
            proc = subprocess.Popen(
                [sys.executable, str(script), dsn, run_id, str(out)],
                stdout=subprocess.DEVNULL if killing else subprocess.PIPE,
                env=env,
            )
            if killing:
                time.sleep(rng.uniform(0.6, 1.2))  # start-up, then somewhere in the tasks
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait()
                continue
            stdout, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0 and b"COMPLETED" in stdout
            break
        lines = [int(x) for x in out.read_text().split()]
        assert sorted(set(lines)) == list(range(10)), lines
        repeated = [i for i in set(lines) if lines.count(i) > 1]
        # Each kill may repeat the one task in flight; nothing else runs twice.
        assert all(lines.count(i) == 2 for i in repeated) and len(repeated) <= kills, lines
