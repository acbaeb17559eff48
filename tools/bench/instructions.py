"""Machine instructions a piece of Python costs, counted by valgrind's cachegrind.

CPU time on a shared 2-core machine follows the others' load; an instruction count does not: the
same code, with the hash seed fixed, gives the same count within about 0.5%. `per_unit(code, small,
large, units)` runs `code` (a Python statement with `{n}` for its size) at two sizes and returns the
instructions per unit of the difference, so start-up and warm-up cancel out. Kernel work (the
system calls themselves) is not counted: what it measures is the Python side of a path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def count(code: str) -> int:
    """Instructions of `python -c code`, start-up included."""
    if shutil.which("valgrind") is None:
        raise SystemExit("counting instructions needs valgrind (apt-get install valgrind)")
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, "-c", f"import sys; sys.path[:0] = [{str(ROOT)!r}]\n" + code],
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, cwd=ROOT)
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode or m is None:
        raise SystemExit(f"valgrind run failed:\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def per_unit(code: str, small: int, large: int, units_per_n: float) -> float:
    """Instructions per unit: (count at n=large - count at n=small) / ((large - small) * units_per_n)."""
    a, b = count(code.format(n=small)), count(code.format(n=large))
    return (b - a) / ((large - small) * units_per_n)
