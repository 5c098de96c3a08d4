"""The experiments of gpnat.experiments and the `gpnat reproduce` command, at toy sizes.

One `reproduce --tiny` run (a subprocess: 91 s alone on two slow cores, 140 s
beside another test process) is shared by most tests, and by the reproduction
notebook, which reads its cells back; the rest call the experiment functions
directly on tiny problems.
"""
import csv
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gpnat.experiments import common, report
from gpnat.experiments.common import COUNTERS, Method, cell_path, load_problem, run_cell, train_with_trace
from gpnat.experiments.conjugate import ConjugateSettings, conjugate_methods
from gpnat.experiments.ill_conditioning import IllConditioningSettings
from gpnat.experiments.nonconjugate import NonConjugateSettings, run_nonconjugate

HAVE_BOSTON = common.uci_available("boston")
needs_uci = pytest.mark.skipif(
    not HAVE_BOSTON,
    reason="UCI file bostonHousing.txt not found (set GPNAT_DATA_DIR or put it in shared/data/uci)",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`python -m gpnat.experiments.cli reproduce --quick --out DIR` at the tiny scale, run once."""
    out = tmp_path_factory.mktemp("reproduce")
    env = dict(os.environ, GPNAT_REPRODUCE_SCALE="tiny", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "gpnat.experiments.cli", "reproduce", "--quick", "--out", str(out),
         "--no-download", "--allow-missing"],  # no network in the tests; without the UCI file, its cells skip
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _cells(out, experiment):
    return common.load_cells(out, experiment)


# --------------------------------------------------------------------------- CLI
def test_reproduce_writes_well_formed_results(tiny_run):
    info = json.loads((tiny_run / "run_info.json").read_text())
    assert info["scale"] == "tiny" and info["cells_computed"] > 0 and info["cells_loaded"] == 0

    columns, rows = _read_csv(tiny_run / "nonconjugate.csv")
    assert columns == report.NONCONJUGATE_COLUMNS
    settings = NonConjugateSettings.tiny()
    per_split = 1 + len(settings.parametrisations) * len(settings.schedules)
    expected = len(settings.datasets) * len(settings.splits) * per_split
    assert len(rows) == expected
    assert {r["dataset"] for r in rows} == set(settings.datasets)
    for r in rows:
        assert r["diverged"] in ("True", "False")
        if r["diverged"] == "False":
            assert np.isfinite(float(r["final_elbo"]))
            assert 0.0 <= float(r["test_error"]) <= 1.0

    columns, rows = _read_csv(tiny_run / "ill_fixed.csv")
    assert columns == report.ILL_FIXED_COLUMNS
    s = IllConditioningSettings.tiny()
    assert len(rows) == len(s.noise_variances) * (len(s.adam_lrs) + 1) * len(s.splits)

    md = (tiny_run / "results.md").read_text()
    for heading in ("## 1. Conjugate regression", "## 2. Ill-conditioning", "## 3. Non-conjugate"):
        assert heading in md
    assert "| σ² | method |" in md and "|---|" in md
    assert "Machine:" in md and "## Settings" in md
    for png in ["ill_conditioning.png"] + [f"nonconjugate_{d}.png" for d in settings.datasets]:
        data = (tiny_run / png).read_bytes()
        assert data[:8] == PNG_MAGIC and 1000 < len(data) < 300_000
        assert f"]({png})" in md


@pytest.mark.parametrize("flags, status", [([], 3), (["--allow-missing"], 0)], ids=["missing", "allowed"])
def test_missing_uci_data_is_fetched_then_named_and_fails_the_command(tmp_path, monkeypatch, capsys, flags, status):
    """`gpnat reproduce` tries to download a UCI file it cannot find; a set it cannot have is skipped,
    named with the loader's message (the log, results.md, run_info.json), and the exit status is 3
    unless --allow-missing (it used to print "skipped" and exit 0)."""
    from gpnat.experiments import cli, datasets

    asked = []

    def find_uci_file(name, data_dir=None, download=True):
        asked.append((name, download))
        raise datasets.DatasetNotFoundError(f"{name}: bostonHousing.txt was not found in the searched folders",
                                            missing_file="bostonHousing.txt", searched_dirs=[], url="")

    monkeypatch.setattr(datasets, "find_uci_file", find_uci_file)
    monkeypatch.delenv("GPNAT_REPRODUCE_SCALE", raising=False)
    out = tmp_path / "out"
    assert cli.main(["reproduce", "--tiny", "--only", "conjugate", "--out", str(out), *flags]) == status
    assert asked[0] == ("boston", True)  # downloading was tried first
    printed = capsys.readouterr()
    assert "UCI data set boston is missing; its cells are skipped. boston: bostonHousing.txt was not found" \
        in printed.out
    assert ("pass --allow-missing" in printed.err) == (status == 3)
    assert "**Missing data**: boston could not be found or downloaded" in (out / "results.md").read_text()
    assert "boston" in json.loads((out / "run_info.json").read_text())["missing_data"]


def test_two_sizes_at_once_are_refused(tmp_path, capsys):
    from gpnat.experiments import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["reproduce", "--quick", "--standard", "--out", str(tmp_path)])
    assert exited.value.code == 2
    assert "argument --standard: not allowed with argument --quick" in capsys.readouterr().err


def test_rerun_reads_cells_back_instead_of_recomputing(tiny_run, monkeypatch):
    from gpnat.experiments.cli import reproduce

    cells = sorted((tiny_run / "cells").rglob("*.json"))
    assert cells
    before = {p: p.stat().st_mtime_ns for p in cells}
    monkeypatch.setitem(COUNTERS, "computed", 0)
    monkeypatch.setitem(COUNTERS, "loaded", 0)
    reproduce(tiny_run, scale="tiny", log=lambda msg: None)
    assert COUNTERS["computed"] == 0
    assert COUNTERS["loaded"] == len(cells)
    assert {p: p.stat().st_mtime_ns for p in sorted((tiny_run / "cells").rglob("*.json"))} == before
    info = json.loads((tiny_run / "run_info.json").read_text())
    assert info["cells_computed"] == 0


def test_the_reproducing_notebook_shows_the_tiny_run(tiny_run, tmp_path):
    """notebooks/reproducing_salimbeni2018.ipynb at the reduced size runs `reproduce` at the tiny scale,
    as the CLI run above did; pointed at a copy of that run's folder, it reads every cell back and
    draws the report from them (tests/test_notebooks.py runs the other notebooks)."""
    from .test_notebooks import REPRODUCING, executes_without_errors

    out = tmp_path / "reproduce"
    shutil.copytree(tiny_run, out)
    cells = sorted((out / "cells").rglob("*.json"))
    nb = executes_without_errors(REPRODUCING, env={"GPNAT_REPRODUCE_OUT": str(out)})
    info = json.loads((out / "run_info.json").read_text())
    assert info["scale"] == "tiny" and info["cells_computed"] == 0 and info["cells_loaded"] == len(cells)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "scale: tiny" in printed and "wrote results.md" in printed


def test_ill_conditioning_natgrad_reaches_the_sgpr_optimum_and_adam_does_not(tiny_run):
    fixed = [c for c in _cells(tiny_run, "ill") if c["variant"] == "fixed"]
    assert fixed
    for c in fixed:
        if c["method"] == "natgrad_gamma1":
            # one γ = 1 step in natural parameters lands on SGPR's collapsed bound
            assert c["final_relative_gap"] < 1e-6, c["final_relative_gap"]
            assert c["reached"] and c["iterations_to_tolerance"] == 1
    hardest = min(c["noise_variance"] for c in fixed)
    adam = [c for c in fixed if c["method"].startswith("adam") and c["noise_variance"] == hardest]
    natgrad = [c for c in fixed if c["method"] == "natgrad_gamma1" and c["noise_variance"] == hardest]
    for a, n in zip(adam, natgrad):
        assert not a["reached"]  # 150 Adam steps are far from enough at σ² = 1e-4
        assert a["final_gap"] > 1.0 and a["final_gap"] > 1e3 * abs(n["final_gap"])


@needs_uci
def test_conjugate_cells_and_files(tiny_run):
    cells = _cells(tiny_run, "conjugate")
    methods = {c["method"] for c in cells}
    assert methods == {"adam_full", "natgrad_full", "adam_minibatch", "natgrad_minibatch"}
    by = {c["method"]: c for c in cells}
    assert by["natgrad_full"]["final"]["elbo"] > by["adam_full"]["final"]["elbo"]
    for c in cells:
        assert c["dataset"] == "boston" and not c["diverged"]
        rmse = c["final"]["test_rmse"]
        assert 1.0 < rmse < 15.0  # original units ($1000s); the target's std is about 9
        assert [r["iteration"] for r in c["trace"]] == [0, 10, 20, 30]
        times = [r["time"] for r in c["trace"]]
        assert times == sorted(times)
    columns, rows = _read_csv(tiny_run / "conjugate_traces.csv")
    assert columns == report.CONJUGATE_TRACE_COLUMNS and len(rows) == 4 * 4
    columns, rows = _read_csv(tiny_run / "conjugate_summary.csv")
    assert "iterations_to_adam_final" in columns and len(rows) == 4
    assert (tiny_run / "conjugate_boston.png").read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------- functions
def test_nonconjugate_function_runs_and_counts_divergence(tmp_path, monkeypatch):
    settings = NonConjugateSettings(
        datasets=("poisson_synthetic",), splits=(3,), num_inducing=10, iterations=15, eval_every=5,
        parametrisations=("expectation",), schedules={"const1": ("constant", 1.0)}, n_synthetic=200,
    )
    monkeypatch.setitem(COUNTERS, "computed", 0)
    records = run_nonconjugate(settings, tmp_path, log=lambda msg: None)
    assert COUNTERS["computed"] == 2 and [r["method"] for r in records] == ["adam", "expectation-const1"]
    adam, ng = records
    assert adam["kind"] == "adam" and not adam["diverged"] and adam["iterations_run"] == 15
    assert adam["gamma_first"] is None and adam["total_rejections"] == 0
    assert np.isfinite(adam["final"]["test_loglik"]) and adam["final"]["test_rmse"] > 0
    # γ = 1 in expectation parameters leaves the valid set from the prior: every proposal is rejected
    assert ng["diverged"] and ng["diverged_at"] >= 1
    assert ng["total_rejections"] >= 8
    assert "no valid natural-gradient step" in ng["error"]
    # the model keeps its last valid state, which is evaluated
    assert np.isfinite(ng["final"]["elbo"])


def test_run_cell_saves_once_and_reads_back(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"value": float("nan"), "x": np.float64(2.0), "n": np.int64(3)}

    monkeypatch.setitem(COUNTERS, "computed", 0)
    monkeypatch.setitem(COUNTERS, "loaded", 0)
    path = cell_path(tmp_path, "exp", "data set/1", "method", "split0")
    first = run_cell(path, compute)
    second = run_cell(path, compute)
    assert calls == [1] and COUNTERS == {"computed": 1, "loaded": 1}
    assert first == second and first["value"] is None and first["x"] == 2.0 and first["n"] == 3
    assert path.name == "data_set_1__method__split0.json"
    assert json.loads(path.read_text())["n"] == 3
    assert not list(path.parent.glob(".*.tmp"))


def test_settings_have_standard_quick_and_tiny_variants():
    from gpnat.experiments.cli import _settings

    for cls in (ConjugateSettings, IllConditioningSettings, NonConjugateSettings):
        full, standard, quick, tiny = cls(), cls.standard(), cls.quick(), cls.tiny()
        for s in (full, standard, quick, tiny):
            json.dumps(dataclasses.asdict(s))
        budget = "iterations" if hasattr(full, "iterations") else "max_iterations"
        assert getattr(tiny, budget) <= getattr(quick, budget) < getattr(standard, budget) <= getattr(full, budget)
        assert len(standard.splits) >= 3
    # the standard scale: all nine UCI sets, M=100, at most 5,000 iterations, minibatch 256 on the large sets
    std = ConjugateSettings.standard()
    assert len(std.datasets) == 9 and std.num_inducing == 100 and std.iterations <= 5000
    assert std.batch_size == 256 and std.full_batch_max_n <= std.minibatch_min_n
    assert {m.name for m in conjugate_methods(std, "yacht", 277)} == {"adam_full", "natgrad_full"}
    assert {m.name for m in conjugate_methods(std, "protein", 41157)} == {"adam_minibatch", "natgrad_minibatch"}
    assert set(_settings("standard")) == {"conjugate", "ill", "nonconjugate"}
    # the paper's settings in the full run
    full = ConjugateSettings()
    assert full.batch_size == 256 and full.adam_lr == 0.01 and full.loglinear_steps["naval"] == 40
    nc = NonConjugateSettings()
    assert nc.batch_sizes["mnist"] == 1024 and nc.mnist_loglinear == ("loglinear", 1e-6, 2e-2, 2000)
    assert set(nc.parametrisations) == {"natural", "expectation", "mean_cholesky"}
    assert set(_settings("quick")) == {"conjugate", "ill", "nonconjugate"}


def test_load_problem_standardises_with_training_statistics():
    p = load_problem("studentt_synthetic", split=1, n_synthetic=300)
    assert p.X_train.shape == (240, 2) and p.X_test.shape == (60, 2)
    np.testing.assert_allclose(p.X_train.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(p.X_train.std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p.Y_train.mean(), 0.0, atol=1e-12)
    assert abs(p.X_test.mean()) > 1e-6  # test data use the training statistics, not their own
    c = load_problem("poisson_synthetic", split=0, n_synthetic=100)
    assert np.all(c.Y_train == np.round(c.Y_train)) and c.likelihood == "poisson"  # counts stay counts
    w = load_problem("wine_classes", split=0)
    assert w.num_latent_gps == 3 and set(np.unique(w.Y_train)) == {0.0, 1.0, 2.0}
    assert load_problem("banana", 0, n_synthetic=50).X_train.shape == (40, 2)


def test_train_with_trace_excludes_evaluation_time():
    p = load_problem("toy_regression", split=0, n_synthetic=60)
    method = Method("ng", "natgrad", "natural", ("constant", 1.0), adam_lr=0.01)
    model = common.make_svgp(p, method, M=6, seed=0)
    rec = train_with_trace(model, p, method, iterations=12, eval_every=4)
    assert [r["iteration"] for r in rec["trace"]] == [0, 4, 8, 12]
    assert rec["elbo_iterations"] == list(range(1, 13)) and len(rec["elbo"]) == 12
    assert rec["compile_s"] > 0 and rec["seconds_per_iteration"] > 0
    # training seconds only: far below the evaluation-including wall-clock of the cell
    assert rec["trace"][-1]["time"] < 12 * rec["seconds_per_iteration"] * 5
    assert rec["gamma_first"] == 1.0 and not rec["diverged"]


def test_published_comparison_converts_to_normalised_units():
    # a cell in original units with target scale y_std: log-lik + log(y_std), RMSE / y_std
    y_std = 9.0
    cell = {"dataset": "boston", "method": "natgrad_full", "y_std": y_std,
            "final": {"test_loglik": -0.25 - math.log(y_std), "test_rmse": 0.3 * y_std}}
    text = report.published_comparison([cell, dict(cell, dataset="not-published")])
    row = [line for line in text.splitlines() if line.startswith("| boston")]
    assert len(row) == 1 and "not-published" not in text
    cols = [c.strip() for c in row[0].strip("|").split("|")]
    assert cols[:3] == ["boston", "natgrad_full", "1"]
    assert cols[3].startswith("-0.25") and float(cols[4]) == report.PUBLISHED_SVGP["boston"][0]
    assert cols[5].startswith("0.3") and float(cols[6]) == report.PUBLISHED_SVGP["boston"][1]


def test_the_experiments_stop_at_divergence_not_at_a_noisy_minibatch():
    import tensorflow as tf

    from gpnat.recovery import NO_RECOVERY, Guard

    def code(policy, loss):
        guard = Guard(policy, [])
        guard.update(tf.constant(True), tf.constant(100.0, tf.float64), tf.constant(False))  # reference 100
        return int(guard.acceptable(tf.constant(loss, tf.float64), []))

    # a minibatch loss 3x its running average: a "collapse" for train's default test, not divergence
    assert code(NO_RECOVERY, 300.0) == 2 and code(common.DIVERGENCE_ONLY, 300.0) == 0
    assert code(common.DIVERGENCE_ONLY, 1e300) == 0
    assert code(common.DIVERGENCE_ONLY, float("nan")) == 1 and code(common.DIVERGENCE_ONLY, float("inf")) == 1
    assert common.DIVERGENCE_ONLY.max_consecutive == 1  # the first bad iteration ends the run


def test_one_clock_separates_tracing_from_the_per_iteration_cost():
    # first call: one iteration + tracing (3.0 s); later calls spread evenly: 0.1 s per iteration
    per_it, tracing = common._clock([3.0, 3.1, 3.2, 3.3])
    assert per_it == pytest.approx(0.1) and tracing == pytest.approx(2.9)
    per_it, tracing = common._clock([5.0])  # a run that stopped after one iteration
    assert math.isnan(per_it) and tracing == 5.0
