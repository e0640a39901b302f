"""`make` stops at once with one clear line when the machine lacks a prerequisite."""
import subprocess

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
