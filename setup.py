"""Distributed MNIST classification pipeline on Apache Spark, Petastorm and Horovod."""
import re
from pathlib import Path

from setuptools import find_packages, setup

RUNTIME = ["tensorflow-cpu", "pyspark", "petastorm", "horovod", "numpy", "pyarrow", "pandas",
           "matplotlib", "pillow", "pyyaml", "psutil", "markdown", "mlflow"]
DEV = ["pytest", "pytest-timeout", "ruff", "venv-pack"]


def canonical(name: str) -> str:
    """PEP 503 name: constraints.txt is written by `pip freeze`, which spells names as their authors do (PyYAML)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(names: list[str]) -> list[str]:
    """Requirement strings for `names`, with the versions from constraints.txt (the one place pins live)."""
    pins = {}
    for line in Path(__file__).with_name("constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonical(name.strip())] = version.strip()
    extras = {"horovod": "horovod[spark]"}
    return [f"{extras.get(n, n)}=={pins[canonical(n)]}" for n in names]


setup(
    name="mnist-spark-pipeline",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*"]),
    install_requires=pinned(RUNTIME),
    extras_require={"dev": pinned(DEV)},
)
