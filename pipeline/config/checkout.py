"""Where the checkout is (conf/, data/, profiles), found from the package itself, never from the working
directory."""
from __future__ import annotations

from pathlib import Path


def _checkout() -> Path:
    """The checkout holding conf/ and data/, found from where the package is, never from the working directory:
    the folder above pipeline/, or, imported from dist/pipeline.zip (spark-submit --py-files), the folder above
    dist/. Outside a checkout (a zip elsewhere, a site-packages install) it holds no conf/: pass --conf."""
    above_package = Path(__file__).resolve().parents[2]   # the checkout, or the zip the package sits in
    return above_package.parent.parent if above_package.is_file() else above_package


REPO_ROOT = _checkout()
DEFAULT_CONF = REPO_ROOT / "conf" / "local.yaml"
PROFILES_FOLDER = "profiles"    # beside the config file: conf/local.yaml -> conf/profiles/<name>.yaml
DEFAULT_PROFILE = "full"        # the config file as it is: its overlay may be absent
