"""What every benchmark report records about where and on what code it ran (no TensorFlow import)."""
import platform
import subprocess
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
