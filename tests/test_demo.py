"""The headline demo (``make demo``) at a reduced size."""
import numpy as np

from gpnat import demo


def test_demo_one_step_reaches_the_optimum_and_writes_a_plot(tmp_path, capsys):
    r = demo.main(["--out", str(tmp_path), "--adam-steps", "20"])
    out = capsys.readouterr().out
    assert "SGPR optimum" in out and "ELBO after 20 Adam steps" in out
    np.testing.assert_allclose(r["natgrad_one_step"], r["optimum"], rtol=1e-8)
    assert r["adam"] < r["optimum"] - 1.0  # 20 Adam steps are far from it
    assert r["plot"].exists() and r["plot"].stat().st_size > 5000
