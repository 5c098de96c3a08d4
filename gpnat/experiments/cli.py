"""``gpnat reproduce``: run the experiments of Salimbeni et al. (2018) and write the results.

Examples::

    gpnat reproduce --quick --out results-quick          # all three, reduced (minutes)
    gpnat reproduce --standard --out results-standard    # all nine UCI sets, 3 splits (about 45 minutes on 2 cores)
    gpnat reproduce --out results-full                   # the full run (hours); rerun to resume
    gpnat reproduce --only ill --out results-full        # one experiment
    python -m gpnat.experiments.cli reproduce --quick --out DIR

Finished cells are saved under ``DIR/cells`` as they finish and are not
recomputed by a rerun into the same ``DIR``. ``$GPNAT_REPRODUCE_SCALE``
(``full``, ``standard``, ``quick``, ``tiny``) overrides the scale (``tiny`` is for tests).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

EXPERIMENTS = ("conjugate", "ill", "nonconjugate")


def _settings(scale: str):
    from .conjugate import ConjugateSettings
    from .ill_conditioning import IllConditioningSettings
    from .nonconjugate import NonConjugateSettings

    def pick(cls):
        return cls() if scale == "full" else getattr(cls, scale)()

    return {
        "conjugate": pick(ConjugateSettings),
        "ill": pick(IllConditioningSettings),
        "nonconjugate": pick(NonConjugateSettings),
    }


def _fetch_uci(settings: dict, selected: List[str], data_dir, download: bool, log) -> dict:
    """The UCI files the selected experiments read, found locally or (``download``) downloaded first;
    returns {name: the loader's message} for those that could not be had (their cells are skipped)."""
    from . import datasets

    names = []
    if "conjugate" in selected:
        names += list(settings["conjugate"].datasets)
    if "ill" in selected:
        names.append(settings["ill"].dataset)
    missing = {}
    for name in dict.fromkeys(n for n in names if n in datasets.UCI_DATASETS):
        try:
            datasets.find_uci_file(name, data_dir=data_dir, download=download)
        except datasets.DatasetNotFoundError as error:
            missing[name] = str(error)
            log(f"UCI data set {name} is missing; its cells are skipped. {error}")
    return missing


def reproduce(out_dir, scale: str = "quick", only: Optional[List[str]] = None, data_dir=None,
              log=print, download: bool = True) -> Path:
    """Run the selected experiments at ``scale`` into ``out_dir``; return the Markdown report's path.

    The UCI files are searched as :func:`gpnat.experiments.datasets.find_uci_file` does and, with
    ``download``, downloaded where missing. Sets that cannot be had are skipped, named in the report
    and in ``run_info.json`` (``missing_data``)."""
    from dataclasses import asdict

    import gpflow
    import numpy as np

    from .common import COUNTERS, quiet_tensorflow
    from .conjugate import run_conjugate
    from .ill_conditioning import run_ill_conditioning
    from .nonconjugate import run_nonconjugate
    from .report import machine_description, write_report

    quiet_tensorflow()
    gpflow.config.set_default_float(np.float64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selected = list(only) if only else list(EXPERIMENTS)
    settings = _settings(scale)
    runners = {"conjugate": run_conjugate, "ill": run_ill_conditioning, "nonconjugate": run_nonconjugate}
    missing = _fetch_uci(settings, selected, data_dir, download, log)
    load_start = _load()
    t0 = time.perf_counter()
    sections = {}
    timings = {}
    for name in selected:
        t = time.perf_counter()
        log(f"== {name} ({scale}) ==")
        sections[name] = runners[name](settings[name], out, data_dir=data_dir, log=log)
        timings[name] = time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    commit = _git_commit()
    load_end = _load()
    notes = [f"Code: gpnat at git commit `{commit}`. Machine load (1-minute load average / logical cores) at the "
             f"start and end of this invocation: {load_start['load_1min']:.2f} / {load_start['cores']}, "
             f"{load_end['load_1min']:.2f} / {load_end['cores']}.",
             f"Cells computed in this invocation: {COUNTERS['computed']}; read back from `cells/`: "
             f"{COUNTERS['loaded']}. Seconds per experiment in this invocation: "
             + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."]
    if missing:
        notes.append("**Missing data**: " + ", ".join(sorted(missing)) + " could not be found or downloaded, so "
                     "their cells were skipped (run_info.json holds each loader's message: which file, where it "
                     "was searched for, where to put it).")
    mnist = [c for c in sections.get("nonconjugate", []) if c.get("dataset") == "mnist"]
    if mnist and "fallback" in mnist[0].get("data_source", ""):
        notes.append("**MNIST**: the MNIST file could not be obtained (no network), so `load_mnist` fell back to "
                     "scikit-learn's 8x8 digits (1,540 training / 257 test images, 64 pixels, 10 classes). "
                     "The 'mnist' rows below are that substitute, not MNIST.")
    info_path = out / "run_info.json"
    earlier = []
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text())
            previous = {k: v for k, v in old.items() if k != "earlier_invocations"}
            earlier = old.get("earlier_invocations", []) + [previous]
        except (json.JSONDecodeError, AttributeError):
            earlier = []
    if earlier:
        notes.append("Earlier invocations into this folder: " + "; ".join(
            f"{e.get('scale')} {'+'.join(e.get('experiments', []))} at "
            f"{str(e.get('git_commit', 'an unrecorded commit'))[:12]}: {e.get('elapsed_s', 0):.0f} s, "
            f"{e.get('cells_computed')} cells computed" for e in earlier) + ".")
    path = write_report(out, sections, {k: asdict(settings[k]) for k in selected}, scale, elapsed, notes)
    info_path.write_text(json.dumps(
        {"scale": scale, "experiments": selected, "git_commit": commit, "machine": machine_description(),
         "load_start": load_start, "load_end": load_end, "elapsed_s": elapsed, "timings_s": timings,
         "cells_computed": COUNTERS["computed"], "cells_loaded": COUNTERS["loaded"],
         "missing_data": missing, "earlier_invocations": earlier}, indent=1))
    log(f"wrote {path} ({elapsed:.0f} s)")
    return path


def _git_commit() -> str:
    """The commit of the gpnat source tree that runs (``+dirty`` with uncommitted changes), or ``unknown``."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "gpnat"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _load() -> dict:
    """1-, 5- and 15-minute load averages and the number of logical cores."""
    import os

    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        one = five = fifteen = float("nan")
    return {"load_1min": one, "load_5min": five, "load_15min": fifteen, "cores": os.cpu_count()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="gpnat", description="gpnat command-line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the experiments of Salimbeni, Eleftheriadis & Hensman (2018)")
    rep.add_argument("--out", required=True, help="output directory (cells, CSV, Markdown, PNG); rerun to resume")
    size = rep.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="reduced version of every experiment (minutes)")
    size.add_argument("--standard", action="store_true",
                     help="all nine UCI sets, M=100, 3 splits; non-conjugate sets and ill-conditioning with 3 splits "
                          "(about 45 minutes on 2 cores)")
    rep.add_argument("--only", choices=EXPERIMENTS, action="append",
                     help="run only this experiment (may be repeated)")
    rep.add_argument("--data-dir", default=None,
                     help="directory with the UCI files (default: gpnat.experiments.datasets' search)")
    rep.add_argument("--no-download", action="store_true",
                     help="search for the UCI files locally only (default: download the missing ones)")
    rep.add_argument("--allow-missing", action="store_true",
                     help="exit with status 0 when UCI files are missing (their cells are skipped either way; "
                          "without this flag the exit status is 3)")
    rep.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the test suite
    args = parser.parse_args(argv)

    from .common import scale_from_env

    default = "tiny" if args.tiny else ("quick" if args.quick else ("standard" if args.standard else "full"))
    scale = scale_from_env(default)
    reproduce(args.out, scale=scale, only=args.only, data_dir=args.data_dir,
              log=lambda msg: print(msg, flush=True), download=not args.no_download)
    missing = json.loads((Path(args.out) / "run_info.json").read_text()).get("missing_data", {})
    if missing and not args.allow_missing:
        print(f"gpnat reproduce: the UCI data of {', '.join(sorted(missing))} could not be had, so their cells "
              "were skipped (see the messages above); pass --allow-missing to accept that", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
