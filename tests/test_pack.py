"""`make pack`'s archive (scripts/pack_env.py): unpacked elsewhere, its Python imports the stack at the pinned versions
and nothing from the environment it was packed from, the checkout included. The test packs a plain .tar (the same
files venv-pack would gzip for `make pack`): gzipping 1.5 GB and inflating it again proves nothing of ours and cost
most of this test's two minutes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from test_bootstrap import canonical, constraint_pins

from pipeline import driver_jvm
from pipeline.config import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.pack]

STACK = {"tensorflow-cpu": "tensorflow", "pyspark": "pyspark", "petastorm": "petastorm",
         "horovod": "horovod.tensorflow", "mlflow": "mlflow"}

# Run by the unpacked Python: the stack's versions, whether the project package is importable, and every file of
# the packed-from environment this process has loaded or looks in (none may be).
PROBE = """
import importlib, importlib.metadata, importlib.util, json, sys
stack, packed_from = json.loads(sys.argv[1]), sys.argv[2]
modules = {dist: importlib.import_module(module) for dist, module in stack.items()}
mapped = {line.split()[-1] for line in open("/proc/self/maps") if "/" in line}
print(json.dumps({
    "versions": {dist: importlib.metadata.version(dist) for dist in stack},
    "module_versions": {dist: getattr(modules[dist], "__version__", None) or getattr(sys.modules[module.split(".")[0]],
                        "__version__") for dist, module in stack.items()},
    "prefix": sys.prefix,
    "pipeline_importable": importlib.util.find_spec("pipeline") is not None,
    "from_packed_env": sorted(p for p in (*mapped, *sys.path) if p.startswith(packed_from + "/")),
}))
"""


def test_packed_environment_imports_the_pinned_stack_and_not_the_checkout(tmp_path):
    archive, environment = tmp_path / "pipeline-env.tar", tmp_path / "environment"
    packed = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "pack_env.py"), "--venv", sys.prefix,
                             "--output", str(archive)], capture_output=True, text=True, timeout=600)
    assert packed.returncode == 0, packed.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]   # no partial file left beside it
    environment.mkdir()
    try:
        subprocess.run(["tar", "xf", str(archive), "-C", str(environment)], check=True, timeout=600)  # as YARN does
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
        probe = subprocess.run([str(environment / "bin" / "python"), "-c", PROBE, json.dumps(STACK), sys.prefix],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert probe.returncode == 0, probe.stderr[-2000:]
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        # this machine's recording of its Spark driver's classes (pipeline/driver_jvm.py) stays here
        assert not (environment / driver_jvm.ARCHIVE.name).exists()
    finally:
        shutil.rmtree(environment)  # 1.5 GB
    pins = constraint_pins()
    expected = {dist: pins[canonical(dist)] for dist in STACK}
    assert facts["versions"] == expected
    assert facts["module_versions"] == expected
    assert facts["prefix"] == str(environment)
    assert facts["pipeline_importable"] is False   # the editable install is left out: it ships as --py-files
    assert facts["from_packed_env"] == []
