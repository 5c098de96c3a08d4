"""Larger run of some cells (settings between quick and full)."""
import time
from gpnat.experiments.common import quiet_tensorflow
from gpnat.experiments.ill_conditioning import IllConditioningSettings, run_ill_conditioning
from gpnat.experiments.nonconjugate import NonConjugateSettings, run_nonconjugate, _default_schedules
from gpnat.experiments.report import write_report
from dataclasses import asdict
quiet_tensorflow()
out = "/tmp/larger/out"
t0 = time.perf_counter()
ill = IllConditioningSettings(splits=(0,), num_inducing=100, adam_lrs=(0.01, 0.1), max_iterations=10000,
                              learned=False)
nc = NonConjugateSettings(datasets=("breast_cancer", "wine_classes"), splits=(0, 1, 2), num_inducing=50,
                          iterations=1000, eval_every=50)
sections = {"ill": run_ill_conditioning(ill, out), "nonconjugate": run_nonconjugate(nc, out)}
write_report(out, sections, {"ill": asdict(ill), "nonconjugate": asdict(nc)}, "larger", time.perf_counter() - t0)
print("done", time.perf_counter() - t0)
