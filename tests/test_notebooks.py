"""Every notebook in notebooks/ executes without error at a reduced size.

The notebooks read ``GPNAT_NOTEBOOK_SCALE``; here it is ``"test"`` (tiny data
sizes and iteration counts). The kernel is started with this interpreter
(``sys.executable``), so the notebooks run against the same environment as
the tests, whatever kernelspecs are installed elsewhere. One kernel runs them all
in turn, its namespace reset before each (so TensorFlow is imported once); the
refresh below runs each in a kernel of its own.

The committed notebooks carry the outputs of a full-size run. To refresh them::

    .venv/bin/python tests/test_notebooks.py            # all notebooks, full size, in place
    .venv/bin/python tests/test_notebooks.py notebooks/regression.ipynb
"""
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: executed by tests/test_experiments.py instead, on the cells of the `reproduce` run it makes anyway
#: (the same tiny computation, read back rather than done a second time)
REPRODUCING = NOTEBOOK_DIR / "reproducing_salimbeni2018.ipynb"
#: seconds allowed for one cell at the reduced size: a guard against hangs (the slowest notebook took 115 s in all)
CELL_TIMEOUT = 600
KERNEL_NAME = "python3"


def kernel_manager(kernel_dir: Path):
    """A KernelManager whose ``python3`` kernel runs ``sys.executable -m ipykernel_launcher``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = Path(kernel_dir) / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (gpnat)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    assert specs.get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


#: TensorFlow's native (C++/absl) log lines, which reach the notebook through the kernel's stderr
_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"
    r"|To enable the following instructions: .*)$"
)


def strip_native_logs(nb) -> None:
    """Remove TensorFlow's start-up log lines from stderr outputs (machine-specific noise)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = [line for line in output["text"].splitlines(keepends=True)
                         if not _NATIVE_LOG.match(line.rstrip("\n"))]
                if not "".join(lines).strip():
                    continue
                output["text"] = "".join(lines)
            kept.append(output)
        cell["outputs"] = kept


@contextlib.contextmanager
def notebook_kernel(scale: str, env=None, cwd: Path = NOTEBOOK_DIR):
    """A running ``python3`` kernel (this interpreter) whose environment has GPNAT_NOTEBOOK_SCALE=scale
    and the variables in ``env``, started in ``cwd``; shut down on exit."""
    env = {"GPNAT_NOTEBOOK_SCALE": scale, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if scale == "full":
        env["GPNAT_NOTEBOOK_SCALE"] = None
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():  # the kernel inherits this process's environment
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with tempfile.TemporaryDirectory() as kernel_dir:
            km = kernel_manager(Path(kernel_dir))
            km.start_kernel(cwd=str(cwd))
            try:
                yield km
            finally:  # a kernel left running holds ~1 GB
                km.shutdown_kernel(now=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: run first when a kernel executes another notebook: nothing a notebook defined or drew is left
RESET = "%reset -f\nimport matplotlib.pyplot as _plt\n_plt.close('all')\ndel _plt"


def execute(path: Path, scale: str, timeout: int, write: bool = False, env=None, km=None):
    """Execute a notebook with GPNAT_NOTEBOOK_SCALE=scale (and the variables in ``env``) in a kernel of
    its own; or in ``km``, a :func:`notebook_kernel` started with the same settings, whose namespace
    is reset first (its imported modules stay: importing TensorFlow once saves ~8 s a notebook).
    Returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    shared = km is not None
    with contextlib.nullcontext(km) if shared else notebook_kernel(scale, env, path.parent) as km:
        nb = nbformat.read(path, as_version=4)
        if shared:
            nb.cells.insert(0, nbformat.v4.new_code_cell(RESET))
        client = NotebookClient(nb, km=km, kernel_name=KERNEL_NAME, timeout=timeout,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
        if shared:
            del nb.cells[0]
    if write:
        strip_native_logs(nb)
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)
    return nb


def executes_without_errors(path: Path, env=None, km=None):
    """Execute a notebook at the reduced size (in ``km`` if given: see :func:`execute`) and check that
    no cell output is an error."""
    pytest.importorskip("nbclient", reason="nbclient is in the test extras: pip install -e '.[test]'")
    pytest.importorskip("ipykernel", reason="ipykernel is in the test extras: pip install -e '.[test]'")
    nb = execute(path, scale="test", timeout=CELL_TIMEOUT, env=env, km=km)
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors  # nbclient raises on errors already; this guards allow_errors cells
    return nb


@pytest.fixture(scope="module")
def kernel():
    """One kernel for the notebooks below, each run after a reset of its namespace."""
    pytest.importorskip("ipykernel", reason="ipykernel is in the test extras: pip install -e '.[test]'")
    with notebook_kernel("test") as km:
        yield km


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 4, f"expected the notebooks in {NOTEBOOK_DIR}"
    assert REPRODUCING in NOTEBOOKS


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p != REPRODUCING],
                         ids=[p.stem for p in NOTEBOOKS if p != REPRODUCING])
def test_notebook_executes_at_reduced_size(path, kernel):
    executes_without_errors(path, km=kernel)


def test_committed_notebooks_are_small_and_executed():
    import nbformat

    for path in NOTEBOOKS:
        assert path.stat().st_size < 500_000, f"{path.name} is {path.stat().st_size} bytes"
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.get("execution_count") for c in code if c.source.strip()), (
            f"{path.name} should be committed executed (run: python tests/test_notebooks.py {path})"
        )


if __name__ == "__main__":
    targets = [Path(a).resolve() for a in sys.argv[1:]] or NOTEBOOKS
    for target in targets:
        start = time.perf_counter()
        execute(target, scale="full", timeout=1800, write=True)
        print(f"{target.name}: executed at full size in {time.perf_counter() - start:.0f} s, "
              f"{target.stat().st_size / 1000:.0f} kB")
