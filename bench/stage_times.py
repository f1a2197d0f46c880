"""Seconds per DVC stage of one command, read from its "Running stage" lines.

    python bench/stage_times.py dvc repro          # in a fresh clone: README (a) stage by stage

Runs the command, passes nothing to it but the arguments, and prints each stage's wall time (from
its "Running stage" line to the next one, so a stage includes DVC's own work after it) and the total.
"""

import re
import subprocess
import sys
import time

STAGE = re.compile(r"Running stage '([^']+)'")


def main(command: list[str]) -> int:
    start = last = time.perf_counter()
    name, rows = "(dvc start)", []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        sys.stdout.write(line)
        match = STAGE.search(line)
        if match:
            now = time.perf_counter()
            rows.append((name, now - last))
            name, last = match.group(1), now
    proc.wait()
    end = time.perf_counter()
    rows.append((name, end - last))
    print("\nseconds  stage")
    for stage, seconds in rows:
        print(f"{seconds:7.1f}  {stage}")
    print(f"{end - start:7.1f}  total (exit code {proc.returncode})")
    return proc.returncode


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
