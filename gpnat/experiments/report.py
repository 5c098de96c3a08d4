"""Results of the experiments as CSV files, a Markdown report and PNG figures.

Everything here reads the finished cells (``<out>/cells/...``) and writes:

* ``conjugate_traces.csv``, ``conjugate_summary.csv``, ``conjugate_<dataset>.png``;
* ``ill_fixed.csv``, ``ill_learned.csv``, ``ill_conditioning.png``;
* ``nonconjugate.csv``, ``nonconjugate_summary.csv``, ``nonconjugate_<dataset>.png``;
* ``results.md``: the tables, the figures and the settings used.

Derived quantities: "iterations to reach Adam-only's final ELBO" is the first
iteration at which a natural-gradient run's full-data ELBO is at least the
final full-data ELBO of the Adam-only run on the same data set, split and
batch mode (per iteration for full-batch runs, at the evaluation checkpoints
for minibatch runs); the matching seconds are read from that run's own clock
(``History.time`` at the end of that iteration, one-off tracing excluded), the
clock that also gives every run's total training seconds.
"""
from __future__ import annotations

import csv
import math
import platform
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["write_report", "machine_description", "published_comparison", "PUBLISHED_SVGP",
           "CONJUGATE_TRACE_COLUMNS", "NONCONJUGATE_COLUMNS",
           "ILL_FIXED_COLUMNS"]

CONJUGATE_TRACE_COLUMNS = ["dataset", "method", "split", "iteration", "time", "elbo", "test_loglik", "test_rmse"]
CONJUGATE_SUMMARY_COLUMNS = [
    "dataset", "method", "description", "batch_size", "splits", "final_elbo_mean", "final_elbo_std",
    "test_loglik_mean", "test_loglik_std", "test_rmse_mean", "test_rmse_std", "seconds_per_iteration",
    "train_seconds", "iterations_to_adam_final", "seconds_to_adam_final", "diverged",
]
ILL_FIXED_COLUMNS = [
    "dataset", "noise_variance", "method", "split", "optimum", "reached", "iterations_to_tolerance",
    "seconds_to_tolerance", "final_gap", "final_relative_gap", "iterations_run", "seconds_per_iteration",
    "diverged",
]
ILL_LEARNED_COLUMNS = [
    "dataset", "noise_variance", "method", "split", "iterations", "final_elbo",
    "optimum_at_final_hyperparameters", "final_gap", "iterations_to_best_minus_1", "seconds_per_iteration",
    "diverged",
]
NONCONJUGATE_COLUMNS = [
    "dataset", "likelihood", "data_source", "method", "parametrisation", "schedule", "split", "batch_size",
    "final_elbo", "test_loglik", "test_error", "test_rmse", "diverged", "diverged_at", "total_rejections",
    "iterations_with_rejections", "iterations_to_adam_final", "seconds_to_adam_final",
    "seconds_per_iteration", "iterations_run",
]
NONCONJUGATE_SUMMARY_COLUMNS = [
    "dataset", "method", "runs", "final_elbo_mean", "test_loglik_mean", "test_metric_mean",
    "iterations_to_adam_final_median", "seconds_to_adam_final_median", "train_seconds", "reached_adam_final",
    "diverged", "runs_with_rejections", "total_rejections", "seconds_per_iteration",
]


# --------------------------------------------------------------------- helpers
def _f(x) -> float:
    return float("nan") if x is None else float(x)


def _mean(xs) -> float:
    xs = [_f(x) for x in xs]
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def _std(xs) -> float:
    xs = [_f(x) for x in xs]
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.std(xs)) if len(xs) > 1 else (0.0 if xs else float("nan"))


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def _md_table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def machine_description() -> str:
    model, cores = "unknown CPU", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("processor"):
                cores += 1
    except OSError:
        pass
    import gpflow
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{model}, {cores} logical cores, {'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, gpflow {gpflow.__version__}")


def _reach(cell: dict, target: Optional[float]) -> Optional[int]:
    """Iterations (updates) after which the full-data ELBO is first ≥ target; None if never."""
    if target is None or cell.get("diverged") and not cell.get("trace"):
        return None
    if cell.get("batch_size") in (None, "") and cell.get("elbo"):
        for it, e in zip(cell["elbo_iterations"], cell["elbo"]):
            # elbo at iteration `it` is the value before that iteration's update: it - 1 updates done
            if e is not None and e >= target:
                return it - 1
        last = cell["trace"][-1] if cell.get("trace") else None
        if last and last.get("elbo") is not None and last["elbo"] >= target:
            return last["iteration"]
        return None
    for row in cell.get("trace", []):
        if row.get("elbo") is not None and row["elbo"] >= target:
            return row["iteration"]
    return None


def _seconds(cell: dict, iterations: Optional[int]) -> Optional[float]:
    """Training seconds (tracing excluded) at the end of ``iterations`` updates, on the run's own clock."""
    if iterations is None:
        return None
    for row in cell.get("trace", []):
        if row["iteration"] == iterations:
            return row["time"]
    if iterations == 0:
        return 0.0
    its, times = cell.get("elbo_iterations"), cell.get("elbo_time")
    if its and times:  # History.time at the end of that iteration, interpolated between stored ones
        return float(np.interp(iterations, its, times))
    return None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def NullFormatter():
    from matplotlib.ticker import NullFormatter as _NullFormatter

    return _NullFormatter()


# ------------------------------------------------------------------ conjugate
#: SVGP results of the bayesian_benchmarks suite (github.com/secondmind-labs/bayesian_benchmarks),
#: regression, split 2, targets normalised: (test log-likelihood, RMSE). Its smaller sets are SGPR.
PUBLISHED_SVGP = {
    "boston": (-0.256, 0.318), "concrete": (-0.312, 0.351), "energy": (1.106, 0.077),
    "kin8nm": (-0.353, 0.326), "naval": (2.330, 0.021), "power": (-0.008, 0.244),
    "protein": (-1.133, 0.751), "wine": (-1.124, 0.758), "yacht": (2.006, 0.032),
}


def published_comparison(cells: List[dict]) -> str:
    """Test log-likelihood and RMSE in normalised units beside :data:`PUBLISHED_SVGP`.

    A cell's metrics are in original units; with the split's target scale
    ``y_std``, log-likelihood + log(y_std) and RMSE / y_std are the normalised ones.
    """
    rows = []
    for dataset in sorted({c["dataset"] for c in cells if c["dataset"] in PUBLISHED_SVGP}):
        for method in sorted({c["method"] for c in cells if c["dataset"] == dataset}):
            cs = [c for c in cells if c["dataset"] == dataset and c["method"] == method
                  and c.get("y_std") and c["final"].get("test_loglik") is not None]
            if not cs:
                continue
            ll = [c["final"]["test_loglik"] + math.log(c["y_std"]) for c in cs]
            rmse = [c["final"]["test_rmse"] / c["y_std"] for c in cs]
            pub_ll, pub_rmse = PUBLISHED_SVGP[dataset]
            rows.append((dataset, method, len(cs), f"{_fmt(_mean(ll))} ± {_fmt(_std(ll), 2)}", pub_ll,
                         f"{_fmt(_mean(rmse))} ± {_fmt(_std(rmse), 2)}", pub_rmse))
    if not rows:
        return ""
    return ("\nTest log-likelihood and RMSE with normalised targets (mean ± std over splits), beside the published "
            "SVGP numbers of the bayesian_benchmarks suite (split 2; SGPR on its smaller sets):\n\n"
            + _md_table(["data set", "method", "splits", "test log-lik", "published", "test RMSE", "published"],
                        rows) + "\n")


def _adam_reference(method: str) -> str:
    return "adam_minibatch" if "minibatch" in method else "adam_full"


def conjugate_report(cells: List[dict], out: Path) -> str:
    if not cells:
        return "No conjugate-regression cells were run (UCI files missing or experiment not selected).\n"
    traces = []
    for c in cells:
        for row in c["trace"]:
            traces.append(dict(dataset=c["dataset"], method=c["method"], split=c["split"], **row))
    _write_csv(out / "conjugate_traces.csv", CONJUGATE_TRACE_COLUMNS, traces)

    by = defaultdict(list)
    for c in cells:
        by[(c["dataset"], c["method"])].append(c)
    adam_final = {(c["dataset"], c["method"], c["split"]): c["final"].get("elbo") for c in cells
                  if c["method"].startswith("adam")}
    summary = []
    for (dataset, method), cs in by.items():
        reach_it, reach_s = [], []
        if method.startswith("natgrad"):
            for c in cs:
                target = adam_final.get((dataset, _adam_reference(method), c["split"]))
                it = _reach(c, target)
                reach_it.append(it)
                reach_s.append(_seconds(c, it))
        summary.append(dict(
            dataset=dataset, method=method, description=cs[0]["description"], batch_size=cs[0]["batch_size"],
            splits=len(cs),
            final_elbo_mean=_mean(c["final"].get("elbo") for c in cs),
            final_elbo_std=_std(c["final"].get("elbo") for c in cs),
            test_loglik_mean=_mean(c["final"].get("test_loglik") for c in cs),
            test_loglik_std=_std(c["final"].get("test_loglik") for c in cs),
            test_rmse_mean=_mean(c["final"].get("test_rmse") for c in cs),
            test_rmse_std=_std(c["final"].get("test_rmse") for c in cs),
            seconds_per_iteration=_mean(c["seconds_per_iteration"] for c in cs),
            train_seconds=_mean(c["train_s"] for c in cs),
            iterations_to_adam_final=(_mean(reach_it) if reach_it and None not in reach_it else None),
            seconds_to_adam_final=(_mean(reach_s) if reach_s and None not in reach_s else None),
            diverged=sum(bool(c["diverged"]) for c in cs),
        ))
    summary.sort(key=lambda r: (r["dataset"], r["method"]))
    _write_csv(out / "conjugate_summary.csv", CONJUGATE_SUMMARY_COLUMNS, summary)

    plt = _plt()
    figures = []
    for dataset in sorted({c["dataset"] for c in cells}):
        fig, axes = plt.subplots(2, 3, figsize=(11, 6))
        for method in sorted({c["method"] for c in cells if c["dataset"] == dataset}):
            cs = by[(dataset, method)]
            n = min(len(c["trace"]) for c in cs)
            its = np.array([r["iteration"] for r in cs[0]["trace"][:n]])
            times = np.mean([[r["time"] for r in c["trace"][:n]] for c in cs], axis=0)
            for j, key in enumerate(["elbo", "test_loglik", "test_rmse"]):
                vals = np.array([[_f(r.get(key)) for r in c["trace"][:n]] for c in cs])
                m, s = np.nanmean(vals, axis=0), np.nanstd(vals, axis=0)
                for i, x in enumerate([its, times]):
                    ax = axes[i, j]
                    line, = ax.plot(x[1:], m[1:], label=method)
                    ax.fill_between(x[1:], (m - s)[1:], (m + s)[1:], color=line.get_color(), alpha=0.2)
        for j, name in enumerate(["ELBO (training set)", "test log-likelihood / point", "test RMSE"]):
            axes[0, j].set_title(name)
            axes[0, j].set_xlabel("iteration")
            axes[1, j].set_xlabel("training wall-clock (s)")
            for i in range(2):
                axes[i, j].set_xscale("log")
                axes[i, j].xaxis.set_minor_formatter(NullFormatter())
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"Conjugate regression, {dataset}: mean ± std over {len(cs)} split(s)")
        fig.tight_layout()
        name = f"conjugate_{dataset}.png"
        fig.savefig(out / name, dpi=60)
        plt.close(fig)
        figures.append(name)

    rows = [(r["dataset"], r["method"], r["splits"], f"{_fmt(r['final_elbo_mean'])} ± {_fmt(r['final_elbo_std'], 2)}",
             f"{_fmt(r['test_loglik_mean'])} ± {_fmt(r['test_loglik_std'], 2)}",
             f"{_fmt(r['test_rmse_mean'])} ± {_fmt(r['test_rmse_std'], 2)}",
             r["seconds_per_iteration"] * 1e3 if r["seconds_per_iteration"] is not None else None,
             r["train_seconds"], r["iterations_to_adam_final"], r["seconds_to_adam_final"]) for r in summary]
    text = _md_table(["data set", "method", "splits", "final ELBO", "test log-lik", "test RMSE",
                      "ms / iteration", "training seconds", "iterations to Adam's final ELBO",
                      "seconds to Adam's final ELBO"], rows)
    text += "\n" + published_comparison(cells)
    text += "\n\n" + "\n".join(f"![{f}]({f})" for f in figures) + "\n"
    return text


# ---------------------------------------------------------------- ill-conditioning
def ill_report(cells: List[dict], out: Path) -> str:
    if not cells:
        return "No ill-conditioning cells were run.\n"
    fixed = [c for c in cells if c["variant"] == "fixed"]
    learned = [c for c in cells if c["variant"] == "learned"]
    _write_csv(out / "ill_fixed.csv", ILL_FIXED_COLUMNS, fixed)

    best = defaultdict(lambda: -math.inf)
    for c in learned:
        if c.get("final_elbo") is not None:
            key = (c["noise_variance"], c["split"])
            best[key] = max(best[key], c["final_elbo"])
    learned_rows = []
    for c in learned:
        it = _reach(c, best[(c["noise_variance"], c["split"])] - c["tolerance"])
        learned_rows.append(dict(c, iterations=c["iterations_run"], iterations_to_best_minus_1=it))
    _write_csv(out / "ill_learned.csv", ILL_LEARNED_COLUMNS, learned_rows)

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    methods = sorted({c["method"] for c in fixed})
    noises = sorted({c["noise_variance"] for c in fixed}, reverse=True)
    for method in methods:
        for k, key in enumerate(["iterations_to_tolerance", "seconds_to_tolerance"]):
            xs, ys, xs_fail, ys_fail = [], [], [], []
            for noise in noises:
                cs = [c for c in fixed if c["method"] == method and c["noise_variance"] == noise]
                vals = [c[key] for c in cs]
                if cs and all(v is not None for v in vals):
                    xs.append(noise)
                    ys.append(max(_mean(vals), 1e-4))
                elif cs:  # not reached: draw at the budget spent
                    xs_fail.append(noise)
                    ys_fail.append(_mean(c["iterations_run"] if k == 0 else c["train_s"] for c in cs))
            line, = axes[k].plot(xs, ys, "o-", label=method)
            if xs_fail:
                axes[k].plot(xs_fail, ys_fail, "x", ms=10, color=line.get_color(),
                             label=f"{method}: not within {fixed[0]['tolerance']:g} nat in every split "
                                   "(drawn at the budget spent)")
    for method in methods:
        if not method.startswith("adam"):
            continue
        for noise in noises:
            cs = [c for c in fixed
                  if c["method"] == method and c["noise_variance"] == noise and c["split"] == fixed[0]["split"]]
            if cs and cs[0]["elbo"]:
                optima = [cs[0]["optimum"]] * len(cs[0]["elbo"])
                gap = np.array([c_opt - _f(e) for c_opt, e in zip(optima, cs[0]["elbo"])])
                axes[2].plot(cs[0]["elbo_iterations"], np.maximum(gap, 1e-3), label=f"{method}, σ²={noise:g}")
    axes[0].set_ylabel("iterations to within 1 nat of the optimum")
    axes[1].set_ylabel("training seconds to within 1 nat")
    for ax in axes[:2]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("likelihood variance σ²")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].axhline(1.0, color="k", lw=0.5)
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("optimum − ELBO (nats)")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Ill-conditioning ({fixed[0]['dataset']}, fixed hyperparameters, M = {fixed[0]['num_inducing']})")
    fig.tight_layout()
    fig.savefig(out / "ill_conditioning.png", dpi=70)
    plt.close(fig)

    rows = []
    for noise in noises:
        for method in methods:
            cs = [c for c in fixed if c["method"] == method and c["noise_variance"] == noise]
            if not cs:
                continue
            reached = sum(bool(c["reached"]) for c in cs)
            its = [c["iterations_to_tolerance"] for c in cs if c["reached"]]
            secs = [c["seconds_to_tolerance"] for c in cs if c["reached"]]
            rows.append((noise, method, _mean(c["optimum"] for c in cs), f"{reached}/{len(cs)}",
                         _mean(its) if its else None, _mean(secs) if secs else None,
                         _mean(c["final_gap"] for c in cs), max(c["iterations_run"] for c in cs)))
    text = _md_table(["σ²", "method", "optimum (SGPR bound)", "within 1 nat", "iterations (mean of reached)",
                      "seconds", "final gap (nats)", "iterations run"], rows)
    if learned_rows:
        lrows = []
        for noise in sorted({c["noise_variance"] for c in learned_rows}, reverse=True):
            for method in sorted({c["method"] for c in learned_rows}):
                cs = [c for c in learned_rows if c["method"] == method and c["noise_variance"] == noise]
                its = [c["iterations_to_best_minus_1"] for c in cs]
                lrows.append((noise, method, cs[0]["iterations"], _mean(c["final_elbo"] for c in cs),
                              _mean(c["final_gap"] for c in cs),
                              _mean(its) if None not in its
                              else f"{sum(i is not None for i in its)}/{len(its)} reached"))
        text += ("\n\nLearned kernel hyperparameters and inducing inputs (σ² held fixed): final ELBO, gap to SGPR's "
                 "bound at the final hyperparameters, and iterations to come within 1 nat of the best final ELBO "
                 "of either method.\n\n")
        text += _md_table(["σ²", "method", "iterations", "final ELBO", "gap to SGPR bound at final hyperparameters",
                           "iterations to best − 1 nat"], lrows)
    text += "\n\n![ill_conditioning.png](ill_conditioning.png)\n"
    return text


# -------------------------------------------------------------- non-conjugate
def _test_metric(c: dict) -> Optional[float]:
    f = c.get("final", {})
    return f.get("test_error", f.get("test_rmse"))


def nonconjugate_report(cells: List[dict], out: Path) -> str:
    if not cells:
        return "No non-conjugate cells were run.\n"
    adam_final = {(c["dataset"], c["split"]): c["final"].get("elbo") for c in cells if c["kind"] == "adam"
                  and not c["diverged"]}
    rows = []
    for c in cells:
        f = c.get("final", {})
        it = None
        if c["kind"] == "natgrad":
            it = _reach(c, adam_final.get((c["dataset"], c["split"])))
        rows.append(dict(
            c, schedule=" ".join(str(s) for s in c["schedule"]), final_elbo=f.get("elbo"),
            test_loglik=f.get("test_loglik"), test_error=f.get("test_error"), test_rmse=f.get("test_rmse"),
            iterations_to_adam_final=it, seconds_to_adam_final=_seconds(c, it),
        ))
    _write_csv(out / "nonconjugate.csv", NONCONJUGATE_COLUMNS, rows)

    summary = []
    by = defaultdict(list)
    for r in rows:
        by[(r["dataset"], r["method"])].append(r)
    for (dataset, method), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "adam", kv[0][1])):
        ok = [r for r in rs if not r["diverged"]]
        its = [r["iterations_to_adam_final"] for r in rs if r["iterations_to_adam_final"] is not None]
        summary.append(dict(
            dataset=dataset, method=method, runs=len(rs),
            final_elbo_mean=_mean(r["final_elbo"] for r in ok) if ok else None,
            test_loglik_mean=_mean(r["test_loglik"] for r in ok) if ok else None,
            test_metric_mean=_mean(_test_metric(r) for r in ok) if ok else None,
            iterations_to_adam_final_median=float(np.median(its)) if its else None,
            seconds_to_adam_final_median=(float(np.median([r["seconds_to_adam_final"] for r in rs
                                                           if r["seconds_to_adam_final"] is not None]))
                                          if its else None),
            train_seconds=_mean(r["train_s"] for r in rs),
            reached_adam_final=(f"{len(its)}/{len(rs)}" if rs[0]["kind"] == "natgrad" else "ref."),
            diverged=f"{sum(bool(r['diverged']) for r in rs)}/{len(rs)}",
            runs_with_rejections=f"{sum(r['total_rejections'] > 0 for r in rs)}/{len(rs)}",
            total_rejections=sum(r["total_rejections"] for r in rs),
            seconds_per_iteration=_mean(r["seconds_per_iteration"] for r in rs),
        ))
    _write_csv(out / "nonconjugate_summary.csv", NONCONJUGATE_SUMMARY_COLUMNS, summary)

    plt = _plt()
    figures = []
    text = ""
    for dataset in sorted({c["dataset"] for c in cells}):
        first_split = min(x["split"] for x in cells if x["dataset"] == dataset)
        dcells = [c for c in cells if c["dataset"] == dataset and c["split"] == first_split]
        fig, ax = plt.subplots(figsize=(8, 5))
        adam = [c for c in dcells if c["kind"] == "adam"]
        lo = None
        if adam and adam[0]["trace"]:
            vals = [_f(r["elbo"]) for r in adam[0]["trace"]]
            lo = np.nanmin(vals[1:]) if len(vals) > 1 else vals[0]
        hi = -math.inf
        styles = {"natural": "-", "expectation": "--", "mean_cholesky": ":", "": "-"}
        for c in sorted(dcells, key=lambda c: c["method"]):
            x = [r["iteration"] for r in c["trace"]]
            y = [_f(r["elbo"]) for r in c["trace"]]
            hi = max(hi, np.nanmax(y) if y else -math.inf)
            label = c["method"] + (f" (diverged @ {c['diverged_at']})" if c["diverged"] else "")
            ax.plot(x, y, styles.get(c["parametrisation"], "-"), lw=2.5 if c["kind"] == "adam" else 1.2,
                    color="k" if c["kind"] == "adam" else None, label=label, marker="x" if c["diverged"] else None)
        if lo is not None and math.isfinite(hi):
            ax.set_ylim(lo - 0.05 * abs(lo), hi + 0.02 * abs(hi) + 1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("ELBO (full training set)")
        src = dcells[0].get("data_source", dataset)
        ax.set_title(f"{dataset} ({dcells[0]['likelihood']}; data: {src[:40]}), split {dcells[0]['split']}", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        name = f"nonconjugate_{dataset}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        figures.append(name)

        srows = [(s["method"], s["runs"], s["final_elbo_mean"], s["test_loglik_mean"], s["test_metric_mean"],
                  s["iterations_to_adam_final_median"], s["seconds_to_adam_final_median"], s["train_seconds"],
                  s["reached_adam_final"], s["diverged"],
                  s["runs_with_rejections"], s["total_rejections"],
                  None if s["seconds_per_iteration"] is None or not math.isfinite(s["seconds_per_iteration"])
                  else s["seconds_per_iteration"] * 1e3)
                 for s in summary if s["dataset"] == dataset]
        metric = "test error" if dcells[0]["likelihood"] in ("bernoulli", "multiclass") else "test RMSE"
        text += f"\n### {dataset} ({dcells[0]['likelihood']}, N_train = {dcells[0]['n_train']}, " \
                f"batch = {dcells[0]['batch_size'] or 'full'}, data: {src})\n\n"
        text += _md_table(["method", "runs", "final ELBO (non-diverged)", "test log-lik", metric,
                           "iterations to Adam's final ELBO (median)", "seconds to it (median)",
                           "training seconds", "reached", "diverged",
                           "runs with rejected steps", "rejected proposals", "ms / iteration"], srows)
        text += f"\n\n![{name}]({name})\n"
    return text


# ------------------------------------------------------------------------ all
def write_report(out_dir, sections: Dict[str, List[dict]], settings: Dict[str, object], scale: str,
                 elapsed_s: Optional[float] = None, notes: Sequence[str] = ()) -> Path:
    """Write CSVs, PNGs and ``results.md`` for the given cells; return the Markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for cell in (c for cs in sections.values() for c in cs):
        if cell.get("iterations_run", 2) < 2:  # one iteration: its time is mostly tracing, no per-iteration cost
            cell["seconds_per_iteration"] = None
    parts = [f"# Reproduction of Salimbeni, Eleftheriadis & Hensman (2018): results ({scale} run)\n",
             f"Machine: {machine_description()}.\n"]
    if elapsed_s is not None:
        parts.append(f"Wall-clock time of this invocation: {elapsed_s:.0f} s (cells read back from an earlier run "
                     "cost nothing).\n")
    parts.extend(f"{n}\n" for n in notes)
    parts.append("Times are training seconds only: evaluation at checkpoints and the one-off tracing of the "
                 "compiled iteration are excluded.\n")
    if "conjugate" in sections:
        parts.append("## 1. Conjugate regression\n")
        parts.append(conjugate_report(sections["conjugate"], out))
    if "ill" in sections:
        parts.append("## 2. Ill-conditioning\n")
        parts.append(ill_report(sections["ill"], out))
    if "nonconjugate" in sections:
        parts.append("## 3. Non-conjugate likelihoods: parametrisations and γ schedules\n")
        parts.append(nonconjugate_report(sections["nonconjugate"], out))
    parts.append("## Settings\n")
    import json

    for name, s in settings.items():
        parts.append(f"**{name}**\n\n```json\n{json.dumps(s, indent=1, default=str)}\n```\n")
    path = out / "results.md"
    path.write_text("\n".join(parts))
    return path
