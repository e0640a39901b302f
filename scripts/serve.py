"""`make serve`: the champion (or any registered version) behind MLflow's scoring server, on 127.0.0.1 only.

    python scripts/serve.py [--conf FILE] [--profile P] [--set ...] [--model models:/<name>@champion] [--port 5001]

`mlflow models serve` runs in this environment (--env-manager local), with this environment's bin first on PATH
(it starts uvicorn by name), in a process group of its own: Ctrl-C or SIGTERM here stops the CLI and its uvicorn
workers together (stopping the CLI alone left a worker holding the port). POST to /invocations what
pipeline.tracking.served_model accepts; see docs/serving.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from daemons import group_members, wait_until

from pipeline.config import DEFAULT_CONF, PipelineConfig, load_config
from pipeline.errors import PipelineError
from pipeline.tracking.ui import LOOPBACK

DEFAULT_PORT = 5001
STOP_GRACE_SECONDS = 20


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=str(DEFAULT_CONF), help="config YAML (default: conf/local.yaml)")
    parser.add_argument("--profile", default=None, help="config profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--model", default=None,
                        help="registry URI (default: models:/<tracking.registered_model>@champion)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {LOOPBACK} (default {DEFAULT_PORT})")
    return parser


def served_version(cfg: PipelineConfig, model: str | None) -> tuple[str, str]:
    """(fixed registry URI, store URI) of the version to serve: it exists, its model.keras passes the pipeline's
    checks, and its pyfunc flavor is the served model (versions registered before it answer raw pixels wrongly)."""
    import mlflow

    from pipeline.tracking import served_model
    from pipeline.tracking.registry import CHAMPION, resolve_model_uri
    from pipeline.tracking.store import connect, missing_local_store, store_errors
    missing = missing_local_store(cfg)
    if missing:
        raise PipelineError(f"no MLflow store at {missing} yet: run the pipeline first (make run), which "
                            "registers the models it trains")
    store = connect(cfg)
    uri = model or f"models:/{cfg.tracking.registered_model}@{CHAMPION}"
    found = resolve_model_uri(cfg, uri)
    fixed = f"models:/{found.name}/{found.version}"
    with store_errors(store.uri, f"reading {fixed}"):
        loader = mlflow.models.get_model_info(fixed).flavors.get("python_function", {}).get("loader_module")
    if loader != served_model.__name__:
        raise PipelineError(f"{uri} is version {found.version}, registered before the served model existed (its "
                            f"pyfunc loader is {loader}): train again to register one to serve, e.g. "
                            "make run ARGS=\"--from train\"")
    return fixed, store.uri


def server_command(model_uri: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "--model-uri", model_uri, "--env-manager", "local",
            "--host", LOOPBACK, "--port", str(port), "--workers", "1"]


def server_environment(store_uri: str) -> dict[str, str]:
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": store_uri, "MLFLOW_REGISTRY_URI": store_uri, "CUDA_VISIBLE_DEVICES": "",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def serve(model_uri: str, store_uri: str, port: int) -> int:
    """Run the scoring server until it exits or this process is told to stop; then stop its whole group."""
    server = subprocess.Popen(server_command(model_uri, port), env=server_environment(store_uri),
                              start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with it ignored, and Python then keeps ignoring it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _stop_group(server: subprocess.Popen) -> int:
    """SIGTERM to the server's group (the CLI and every uvicorn worker), SIGKILL to what is left after the grace
    period; returns once no process of the group is alive, so the port is free."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        wait_until(lambda: server.poll() is not None and not group_members({server.pid}), STOP_GRACE_SECONDS)
    return 0


def _main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    try:
        model_uri, store_uri = served_version(load_config(args.conf, args.profile, args.overrides), args.model)
    except PipelineError as exc:
        print(f"ERROR [serve]: {exc}", file=sys.stderr)
        return 1
    print(f"serving {model_uri} on http://{LOOPBACK}:{args.port}/invocations (Ctrl-C stops it)", file=sys.stderr,
          flush=True)
    return serve(model_uri, store_uri, args.port)


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
