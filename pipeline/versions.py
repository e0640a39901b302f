"""Versions of the stack, read from the environment (printed by `make setup`, recorded in run manifests)."""
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ["pyspark", "tensorflow-cpu", "petastorm", "horovod", "numpy", "pyarrow", "pandas", "mlflow"]


def package_versions() -> dict[str, str]:
    """Installed version of each package of the stack, 'not installed' where missing."""
    return {"python": sys.version.split()[0], **{name: package_version(name) for name in PACKAGES}}


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def horovod_frameworks_line() -> str:
    """The 'Available Frameworks' block of `horovodrun --check-build`, on one line."""
    out = subprocess.run([sys.executable, "-m", "horovod.runner.launch", "--check-build"],
                         capture_output=True, text=True).stdout
    lines = out.splitlines()
    start = next((i for i, ln in enumerate(lines) if "Available Frameworks" in ln), None)
    if start is None:
        return "horovod --check-build: " + (out.strip() or "no output")
    block = []
    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        block.append(ln.strip())
    line = "Horovod frameworks: " + ", ".join(block)
    if "[X] PyTorch" in line and not _torch_extension_built():
        # check-build only imports horovod.torch, which succeeds without its compiled extension or torch itself.
        line += " (PyTorch: no extension built, horovod.torch merely imports)"
    return line


def _torch_extension_built() -> bool:
    from importlib.util import find_spec
    spec = find_spec("horovod")
    folder = Path(spec.origin).parent / "torch" if spec and spec.origin else None
    return bool(folder and any(folder.glob("mpi_lib_v2*.so")))


if __name__ == "__main__":
    print(horovod_frameworks_line())
    print("  ".join(f"{k}={v}" for k, v in package_versions().items()))
