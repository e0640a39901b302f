"""`make bench-model4`: model_4's test accuracy over several seeds, checked against its floor, and the ablation.

Each run trains model_4 through the pipeline's train stage (Horovod on Spark, Petastorm shards, the recipe of
conf/local.yaml) in a fresh process (benchmarks/tasks.py train_recipe) and scores the saved model on the
curated test set (10,000 images the training never saw). Not a timed test: the numbers are accuracies, and the
seconds are recorded only to say what a run costs.

    python benchmarks/model4.py                      # 3 seeds of the full recipe; exit 1 if the mean < 0.995
    python benchmarks/model4.py --ablation           # + augmentation off, schedule off (one seed each)
    python benchmarks/model4.py --only ablation      # just the ablation
    python benchmarks/model4.py --profile quick --seeds 1 --floor 0   # a smoke run of the command itself

Results: benchmarks/results/model4-<profile>.json (every run, rewritten after each) and a Markdown table on
stdout; the report's model_4 section reads the JSON (report.recipe_study) when it is there.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # `python benchmarks/model4.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from benchmarks.measure import load_average, machine  # noqa: E402

log = logging.getLogger("benchmarks")
MODEL = "model_4"
FLOOR = 0.995
# The recipe with one lever switched off at a time; "recipe" is conf/local.yaml's model_4 as it is.
VARIANTS = {"recipe": [], "no augmentation": [f"train.models.{MODEL}.augment=false"],
            "no schedule": [f"train.models.{MODEL}.schedule=constant"]}


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", help="config profile (default: full)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the full recipe (train.seed 42, 43, ...)")
    parser.add_argument("--ablation", action="store_true", help="also train with augmentation off, schedule off")
    parser.add_argument("--ablation-seeds", type=int, default=1, help="seeds of each ablation variant (default 1)")
    parser.add_argument("--only", choices=("seeds", "ablation"), help="run one part only")
    parser.add_argument("--floor", type=float, default=FLOOR, help="minimum mean test accuracy (default 0.995)")
    parser.add_argument("--root", default=str(REPO / "output" / "bench" / "model4"), help="scratch folder")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/model4-<profile>.json)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra config override for every run (e.g. train.num_workers=1)")
    return parser


def planned_runs(args) -> list[tuple[str, int]]:
    """(variant, seed) in the order they run: the seeds of the recipe first, then the ablation."""
    runs = []
    if args.only != "ablation":
        runs += [("recipe", 42 + i) for i in range(args.seeds)]
    if args.ablation or args.only == "ablation":
        runs += [(v, 42 + i) for v in VARIANTS if v != "recipe" for i in range(args.ablation_seeds)]
    return runs


def run_one(root: Path, profile: str, variant: str, seed: int, overrides: list[str]) -> dict:
    """One training + test scoring in a fresh process; {"error": ...} when it fails."""
    label = f"{variant.replace(' ', '-')}-seed{seed}"
    out, logfile = root / "logs" / f"{label}.json", root / "logs" / f"{label}.log"
    kwargs = {"root": str(root), "profile": profile, "model": MODEL, "run_id": f"model4-{label}",
              "overrides": ["tracking.enabled=false", f"train.seed={seed}", *VARIANTS[variant], *overrides]}
    log.info("training %s, %s, seed %d (log: %s)", MODEL, variant, seed, logfile)
    with open(logfile, "w") as sink:
        code = subprocess.call([sys.executable, "-m", "benchmarks.tasks", "train_recipe", json.dumps(kwargs), str(out)],
                               cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    if code != 0 or not out.exists():
        return {"variant": variant, "seed": seed, "error": f"exit {code}, see {logfile}"}
    return {"variant": variant, "seed": seed, **json.loads(out.read_text())}


def summary(runs: list[dict]) -> dict[str, dict]:
    """Per variant: test accuracy of each seed, mean, spread (sample standard deviation, min, max), s/epoch."""
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        if "error" not in run:
            by_variant.setdefault(run["variant"], []).append(run)
    out = {}
    for variant, done in by_variant.items():
        accuracies = [r["test_accuracy"] for r in done]
        epoch_seconds = [s for r in done for s in r["epoch_seconds"]]
        out[variant] = {"seeds": [r["seed"] for r in done], "test_accuracy": accuracies,
                        "mean": statistics.fmean(accuracies),
                        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                        "min": min(accuracies), "max": max(accuracies),
                        "kept_epochs": [r["kept_epoch"] for r in done], "epochs": done[0]["epochs"],
                        "augment": done[0]["augment"], "schedule": done[0]["schedule"], "keep": done[0]["keep"],
                        "seconds_per_epoch": statistics.median(epoch_seconds),
                        "training_seconds": statistics.fmean(r["training_seconds"] for r in done),
                        "num_workers": done[0]["num_workers"],
                        "batch_size_per_worker": done[0]["batch_size_per_worker"]}
    return out


def markdown(variants: dict[str, dict], floor: float) -> str:
    lines = ["| variant | augmentation | schedule | kept epoch | seeds | test accuracy per seed | mean | spread (sd) "
             "| s/epoch | training (s) |", "|---|---|---|---|---:|---|---:|---:|---:|---:|"]
    for name, v in variants.items():
        lines.append(f"| {name} | {'on' if v['augment'] else 'off'} | {v['schedule']} | {v['keep']} "
                     f"({', '.join(map(str, v['kept_epochs']))} of {v['epochs']}) | {len(v['seeds'])} | "
                     f"{', '.join(f'{a:.4f}' for a in v['test_accuracy'])} | {v['mean']:.4f} | {v['std']:.4f} | "
                     f"{v['seconds_per_epoch']:.1f} | {v['training_seconds']:.0f} |")
    return "\n".join(lines) + f"\n\nFloor: mean test accuracy of the recipe >= {floor}.\n"


def verdict(variants: dict[str, dict], floor: float, seeds_planned: bool) -> tuple[bool, str]:
    """(passed, one line): the recipe's mean over its seeds against the floor; nothing to check without them."""
    if not seeds_planned:
        return True, "no seeds of the recipe in this run: floor not checked"
    recipe = variants.get("recipe")
    if recipe is None:
        return False, "FAIL: no run of the recipe completed"
    ok = recipe["mean"] >= floor
    return ok, (f"{'PASS' if ok else 'FAIL'}: {MODEL} mean test accuracy {recipe['mean']:.4f} over "
                f"{len(recipe['seeds'])} seed(s) (sd {recipe['std']:.4f}) {'>=' if ok else '<'} floor {floor}")


def _main(argv: list[str]) -> int:
    args = args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    root = Path(args.root).resolve()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"model4-{args.profile}.json")
    results = {"model": MODEL, "profile": args.profile, "floor": args.floor, "started_at": _now(),
               "load_at_start": load_average(), "machine": machine(), "overrides": args.overrides,
               "runs": [], "variants": {}}
    for variant, seed in planned_runs(args):
        results["runs"].append(run_one(root, args.profile, variant, seed, args.overrides))
        results["variants"] = summary(results["runs"])
        results["finished_at"], results["load_at_end"] = _now(), load_average()
        out.write_text(json.dumps(results, indent=1))     # after every run: a stopped command keeps what it had
    print(markdown(results["variants"], args.floor))
    for run in results["runs"]:
        if "error" in run:
            print(f"ERROR {run['variant']} seed {run['seed']}: {run['error']}")
    ok, line = verdict(results["variants"], args.floor, args.only != "ablation")
    print(line)
    return 0 if ok and not any("error" in r for r in results["runs"]) else 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main() -> None:
    sys.exit(_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
