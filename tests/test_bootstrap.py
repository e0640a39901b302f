"""`make` stops at once with one clear line when the machine lacks a prerequisite, and the venv it builds is
exactly the pinned set of constraints.txt, with no broken requirement."""
import json
import re
import subprocess

import pytest

from pipeline.config import REPO_ROOT


def _make(*args, env=None):
    return subprocess.run(["make", "--no-print-directory", "-s", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=env, timeout=60)


def test_missing_python_is_one_line():
    proc = _make("check-prereqs", "PYTHON=python3.99")
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines() == ["ERROR: python3.99 not found: install Python 3.11 (with venv and "
                                                "headers)"]


def test_missing_java_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "JAVA_HOME": str(tmp_path / "no-jdk")}
    proc = subprocess.run(["bash", str(REPO_ROOT / ".ci" / "check-java")], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert proc.stdout.strip() == (f"ERROR: JAVA_HOME={tmp_path / 'no-jdk'} has no bin/java: install a JDK 17 "
                                   "(Debian: apt-get install openjdk-17-jdk-headless) or fix JAVA_HOME")


def test_java_present_passes():
    assert subprocess.run(["bash", str(REPO_ROOT / ".ci" / "check-java")]).returncode == 0


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(constraints: str = "constraints.txt") -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a constraints file."""
    pins = {}
    for line in (REPO_ROOT / constraints).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


# The project's venv and the scheduler's, each with its own pins (they cannot share NumPy or protobuf).
VENVS = pytest.mark.parametrize("venv, constraints", [(".venv", "constraints.txt"),
                                                      (".venv-airflow", "constraints-airflow.txt")])


def venv_python(venv: str) -> str:
    return str(REPO_ROOT / venv / "bin" / "python")


@VENVS
def test_venv_has_no_broken_requirements(venv, constraints):
    proc = subprocess.run([venv_python(venv), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "No broken requirements found."), proc.stdout


@VENVS
def test_every_installed_distribution_is_pinned_at_its_installed_version(venv, constraints):
    """A package installed by hand, or an upgrade that moved a transitive one, shows here: run `make constraints`
    (or `make airflow-constraints`) if the change is meant to stay."""
    listed = subprocess.run([venv_python(venv), "-m", "pip", "list", "--format=json", "--exclude-editable"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    installed = {canonical(d["name"]): d["version"] for d in json.loads(listed)}
    assert installed == constraint_pins(constraints)


def test_constraints_pin_the_protobuf_that_tensorflow_2_15_needs():
    """The upgrade that broke TensorFlow: another package pulling in protobuf 5 or later."""
    assert constraint_pins()["protobuf"].startswith("4.25.")
