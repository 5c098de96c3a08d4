"""What every benchmark report records about where and on what code it ran (no TensorFlow import)."""
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> str:
    """The commit, and whether gpnat/ differs from it (the numbers belong to one version of the code)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gpnat"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"git {head or 'unknown'}" + (", gpnat/ has uncommitted changes" if dirty else ", gpnat/ clean")
    except Exception as e:  # no git
        return f"unknown ({type(e).__name__})"


def fmt(x, spec=".3g") -> str:
    return "–" if x is None else format(x, spec)


def report_header(script: str, argv=None) -> dict:
    """The first fields of every report: the command that wrote it, when, and on which processor."""
    args = list(argv if argv is not None else sys.argv[1:])
    return {
        "command": "`" + shlex.join([f"benchmarks/{script}"] + args) + "`",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical (affinity {len(os.sched_getaffinity(0))})",
        "python": platform.python_version(),
    }


def write_report(text: str, output, json_path, payload: dict) -> None:
    """Print a report, then write it (Markdown) to ``output`` and its data (JSON) to ``json_path``."""
    print(text)
    for path, content in ((Path(output), text), (Path(json_path), json.dumps(payload, indent=1))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
