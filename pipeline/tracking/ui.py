"""`make mlflow-ui`: the MLflow UI for the local store, on 127.0.0.1 only.

    python -m pipeline.tracking.ui [--conf FILE] [--profile P] [--set paths.mlflow=...] [--port 5000]

The store and artifact folder come from config as the jobs find them; a tracking server (tracking.uri or
MLFLOW_TRACKING_URI) has its own UI, so this refuses to front one.
"""
from __future__ import annotations

import argparse
import os
import sys

from pipeline.config import DEFAULT_CONF, load_config
from pipeline.errors import PipelineError
from pipeline.layout import Layout

LOOPBACK = "127.0.0.1"


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=str(DEFAULT_CONF), help="config YAML (default: conf/local.yaml)")
    parser.add_argument("--profile", default=None, help="config profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    return parser


def server_command(cfg, port: int) -> list[str]:
    """`mlflow server` on loopback over the local store, artifacts served from its folder."""
    from pipeline.tracking.store import artifact_location, is_server, missing_local_store, tracking_uri
    layout = Layout.from_config(cfg)
    uri = tracking_uri(cfg, layout)
    if is_server(uri):
        raise PipelineError(f"the tracking store is a server ({uri}): open its own UI instead")
    missing = missing_local_store(cfg)
    if missing:
        raise PipelineError(f"no MLflow store at {missing} yet: run the pipeline with tracking on first")
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
            "--default-artifact-root", artifact_location(cfg, layout, uri) or layout.mlflow_artifacts,
            "--host", LOOPBACK, "--port", str(port), "--workers", "1"]


def _main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    try:
        command = server_command(load_config(args.conf, args.profile, args.overrides), args.port)
    except PipelineError as exc:
        print(f"ERROR [mlflow-ui]: {exc}", file=sys.stderr)
        return 1
    print(f"MLflow UI on http://{LOOPBACK}:{args.port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    os.execv(command[0], command)  # the server takes this process's place: stopping it stops the server


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
