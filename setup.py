from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="gpnat",
    version="0.1.0",
    description="Gaussian-process models trained with natural gradients, on TensorFlow and gpflow",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gpnat", "gpnat.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26,<2.0",
        "tensorflow>=2.21",
        "tensorflow-probability>=0.25",
        "tf-keras>=2.21",
        "gpflow>=2.11.2",
        "check_shapes>=1.1.1",
        "matplotlib>=3.11",
        "tqdm>=4.70",
    ],
    extras_require={
        # gpnat.experiments.datasets' bundled sets (the demo, the notebooks, `gpnat reproduce`)
        "experiments": ["scikit-learn>=1.9"],
        "test": [
            "scikit-learn>=1.9",  # the experiments extra: the tests, the demo and the notebooks use its data
            "pytest>=9.0",
            # `make test` spreads the tests over the machine's cores (pytest -n auto)
            "pytest-xdist>=3.6",
            "ruff>=0.17",
            "hypothesis>=6.150",
            # tests/test_notebooks.py executes the notebooks
            "nbclient>=0.11",
            "nbformat>=5.11",
            "ipykernel>=7.4",
        ],
        "docs": ["sphinx>=9.0", "myst-parser>=5.2"],
    },
    entry_points={"console_scripts": ["gpnat=gpnat.experiments.cli:main"]},
)
