"""`make bench`: every stage next to the simplest single-process alternative, on the same machine, in one
invocation; results JSON, Markdown table and scaling plot in benchmarks/results/.

Each measurement runs in a fresh process (benchmarks/tasks.py) so TensorFlow, Horovod and the Spark JVM start
clean and memory is sampled per stage. Modes: `full` (the reported numbers: 45 minutes on 2 cores, then the
parity over seeds, about 2 hours more) and `quick` (tiny sizes, one epoch on the quick profile's 10% subset, one
seed of model_1's parity, a few minutes). A failed task is recorded and
the rest goes on, so a partial run still reports.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # `python benchmarks/run.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from benchmarks import generate_idx, generate_images, report  # noqa: E402
from benchmarks.measure import load_average, machine  # noqa: E402
from pipeline.config import DataConfig  # noqa: E402

log = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Plan:
    profile: str                        # config profile of the training, reader and prediction benchmarks
    data_repeats: int                   # ingest + prepare repeats at the bundled 70,000 (medians of these)
    bundled_data: bool                  # measure ingest + prepare on the bundled 70,000 too
    generated_sizes: tuple[int, ...]    # N of the generated sets, each measured once per side
    epochs: dict[str, dict[str, int]] = field(default_factory=dict)   # model -> side -> epochs
    reader_samples: int = 60_000
    repeats: int = 3                    # cheap measurements: reader, tf.data, prediction over the test set
    predict_models: tuple[str, ...] = ("model_1", "model_3")
    predict_files: int = 50_000         # scanned-style PNG files in the folder `jobs/predict.py --input` scores
    daily_sizes: tuple[int, ...] = (200, 5_000)   # images of the landed days jobs/score_batch.py scores
    budget_minutes: float = 45.0        # what the budgeted sections (generated sizes) may take
    # Parity: each model's own recipe (the profile's epochs) trained by the pipeline and in one process, per seed.
    parity_models: tuple[str, ...] = ("model_1", "model_2", "model_3", "model_4")
    parity_seeds: tuple[int, ...] = (42, 43, 44)


PLANS = {
    # Generated sizes run in order while their projected time fits the budget (the JSON notes what was skipped).
    # Generated sets are written once (GENERATION_SECONDS_PER_IMAGE): later runs reuse the files.
    "full": Plan(profile="full", data_repeats=3, bundled_data=True,
                 generated_sizes=(210_000, 2_000_000),
                 epochs={model: {"pipeline_default": 2, "pipeline_2_workers": 2, "pipeline_1_worker": 2, "numpy_fit": 2}
                         for model in ("model_1", "model_3")}),
    "quick": Plan(profile="quick", data_repeats=1, bundled_data=False, generated_sizes=(7_000, 21_000),
                  epochs={model: {"pipeline_default": 1, "pipeline_2_workers": 1, "pipeline_1_worker": 1,
                                  "numpy_fit": 1} for model in ("model_1", "model_3")},
                  reader_samples=2_000, repeats=2, predict_files=2_000, daily_sizes=(200,), budget_minutes=10.0,
                  parity_models=("model_1",), parity_seeds=(42,)),
}
SEED = 0
GENERATION_SECONDS_PER_IMAGE = 0.04 / 1000   # 2,000,000 images in 77 s here (2026-12-07)
# In the order a full run measures them.
SECTIONS = ("data", "training", "input", "prediction", "daily", "generated", "end_to_end", "parity")
# Workers, TF threads each (0, 0: the default config, one rank per executor with its cores as threads).
WORKER_THREADS = {"pipeline_default": (0, 0), "pipeline_2_workers": (2, 1), "pipeline_1_worker": (1, 2)}


class Bench:
    """One invocation: runs tasks in subprocesses, keeps the results dict, rewrites the outputs as it goes."""

    def __init__(self, mode: str, root: Path, out_dir: Path, sections: tuple[str, ...] = SECTIONS) -> None:
        self.mode, self.plan, self.root, self.out_dir = mode, PLANS[mode], root, out_dir
        self.sections = sections
        self.started = time.time()
        self.results: dict = {"mode": mode, "started_at": _now(), "load_at_start": load_average(),
                              "budget_minutes": self.plan.budget_minutes, "plan": self.plan.__dict__,
                              "machine": machine(), "training": {}, "input_pipeline": {}, "data": [],
                              "prediction": {}, "end_to_end": {}, "parity": {}, "notes": [], "errors": []}
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def elapsed_minutes(self) -> float:
        return (time.time() - self.started) / 60

    def task(self, name: str, label: str, **kwargs) -> dict | None:
        """benchmarks.tasks NAME in a fresh process; None (and an error recorded) when it fails."""
        stem = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-")
        out, logfile = self.root / "logs" / f"{stem}.json", self.root / "logs" / f"{stem}.log"
        out.unlink(missing_ok=True)
        log.info("[%5.1f min] %s", self.elapsed_minutes(), label)
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(logfile, "w") as sink:
            code = subprocess.run([sys.executable, "-m", "benchmarks.tasks", name, json.dumps(kwargs), str(out)],
                                  cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT).returncode
        if code != 0 or not out.exists():
            tail = logfile.read_text().strip().splitlines()[-3:]
            self.results["errors"].append({"task": label, "error": " | ".join(tail), "log": str(logfile)})
            log.error("%s failed (exit %s); log: %s", label, code, logfile)
            return None
        return json.loads(out.read_text())

    def save(self) -> dict[str, str]:
        self.results.update(finished_at=_now(), wall_seconds=round(time.time() - self.started, 1),
                            load_at_end=load_average())
        # A partial run (--only) never overwrites the full run's results.
        suffix = "" if self.sections == SECTIONS else "-only-" + "-".join(self.sections)
        return report.write_all(self.results, self.out_dir, f"bench-{self.mode}{suffix}")


def bench_data_size(bench: Bench, n: int, source: str, input_dir: str, repeats: int) -> dict:
    """3: ingest + prepare (stage) and the NumPy + PyArrow conversion of the same files."""
    entry = {"n": n, "source": source, "input_dir": input_dir}
    entry["stage"] = bench.task("data_stages", f"data-{n}", root=str(bench.root), profile="full",
                                input_dir=input_dir, repeats=repeats)
    entry["baseline"] = bench.task("baseline_convert", f"convert-{n}", root=str(bench.root), input_dir=input_dir,
                                   repeats=repeats, row_group_rows=DataConfig().row_group_rows)
    bench.results["data"].append(entry)
    bench.save()
    return entry


def bench_training(bench: Bench) -> None:
    """1: per model, model.fit on NumPy, then the pipeline in its default config, on 2 workers x 1 thread and on
    1 worker x 2 threads, same curated data (the first pipeline run prepares it when the data section did not run).
    A configuration the default already resolved to is not rerun."""
    plan = bench.plan
    for model, sides in plan.epochs.items():
        result = bench.results["training"].setdefault(model, {})
        for side, epochs in sides.items():
            if side == "numpy_fit":
                result[side] = bench.task("train_numpy", f"train-{model}-numpy", root=str(bench.root),
                                          profile=plan.profile, model=model, epochs=epochs)
            elif _resolved(result.get("pipeline_default")) == WORKER_THREADS[side] and epochs <= sides.get(
                    "pipeline_default", 0):
                result[side] = {**result["pipeline_default"], "same_run_as": "pipeline_default"}
            else:
                workers, threads = WORKER_THREADS[side]
                result[side] = bench.task("train_pipeline", f"train-{model}-{side}", root=str(bench.root),
                                          profile=plan.profile, model=model, workers=workers, epochs=epochs,
                                          tf_threads=threads, run_id=f"bench-{plan.profile}-{side}")
            bench.save()


def _resolved(record: dict | None) -> tuple[int, int] | None:
    """(workers, TF threads) a pipeline run actually used."""
    return (record["num_workers"], record["tf_threads_per_worker"]) if record and "num_workers" in record else None


def bench_input_pipeline(bench: Bench) -> None:
    """2: one Petastorm reader as a worker opens it, and tf.data from NumPy."""
    plan, section = bench.plan, bench.results["input_pipeline"]
    section["reader"] = bench.task("reader_throughput", "reader", root=str(bench.root), profile=plan.profile,
                                   samples=plan.reader_samples, repeats=plan.repeats)
    section["tfdata_numpy"] = bench.task("tfdata_numpy", "tfdata-numpy", root=str(bench.root),
                                         profile=plan.profile, samples=plan.reader_samples, repeats=plan.repeats)
    bench.save()


def trained_model(bench: Bench, model: str) -> str | None:
    """The 2-worker model of this run's training benchmark, else of an earlier run under the same root (so that
    `--only prediction` measures with the model a full run trained); None when there is neither."""
    trained = (bench.results["training"].get(model) or {}).get("pipeline_2_workers") or {}
    if trained.get("model_path"):
        return trained["model_path"]
    from benchmarks.tasks import _layout, bench_config
    earlier = _layout(bench_config(str(bench.root), bench.plan.profile), f"bench-{bench.plan.profile}-2w")
    path = earlier.model_file(model)
    return path if Path(path.removeprefix("file://")).exists() else None


def scoring_model(bench: Bench, model: str) -> dict | None:
    """{"model_path", "trained"}: the training benchmark's `model`, else the same network untrained (same work per
    image), so that `--only prediction` or `--only daily` measure without a training run."""
    return bench.task("scoring_model", f"model-{model}", root=str(bench.root),
                      model_path=trained_model(bench, model), model=model)


def bench_prediction(bench: Bench, name: str, model: str, parquet: str | None, profile: str, repeats: int) -> None:
    """4: the prediction stage vs one process reading the same Parquet and calling model.predict, with the
    benchmark's model (scoring_model)."""
    trained = scoring_model(bench, model)
    if not trained:
        return
    if not trained["trained"]:
        name += " (untrained network)"
    stage = bench.task("predict_stage", f"predict-{name}", root=str(bench.root), profile=profile,
                       model_path=trained["model_path"], input_path=parquet, repeats=repeats,
                       run_id=f"bench-{profile}-2w")
    numpy = bench.task("predict_parquet_numpy", f"predict-{name}-numpy", root=str(bench.root), profile=profile,
                       model_path=trained["model_path"], parquet_path=parquet, repeats=repeats, batch_size=1024)
    bench.results["prediction"][name] = {"model": model, "trained": trained["trained"],
                                         "input": parquet or "curated test set", "stage": stage, "numpy": numpy}
    bench.save()


def bench_prediction_folder(bench: Bench, model: str = "model_1") -> None:
    """4b: `jobs/predict.py --input <folder of PNG files>` vs PIL + model.predict in one process, same files."""
    plan = bench.plan
    trained = scoring_model(bench, model)
    if not trained:
        return
    folder = bench.root / "images" / f"png{plan.predict_files}"
    if not generate_images.is_complete(folder, plan.predict_files):
        log.info("[%5.1f min] generating %d PNG files", bench.elapsed_minutes(), plan.predict_files)
        generate_images.generate(REPO / "data" / "mnist", folder, plan.predict_files, SEED)
    name = f"folder of {plan.predict_files:,} PNG files, {model}"
    name += "" if trained["trained"] else " (untrained network)"
    job = bench.task("predict_folder_job", f"predict-png{plan.predict_files}", root=str(bench.root),
                     profile=plan.profile, model_path=trained["model_path"], folder=str(folder),
                     run_id=f"bench-{plan.profile}-2w")
    pil = bench.task("predict_folder_pil", f"predict-png{plan.predict_files}-pil", root=str(bench.root),
                     model_path=trained["model_path"], folder=str(folder), batch_size=1024)
    bench.results.setdefault("prediction_files", {})[name] = {"model": model, "files": plan.predict_files,
                                                             "input": str(folder), "stage": job, "baseline": pil}
    bench.save()


def bench_daily(bench: Bench, model: str = "model_1") -> None:
    """4c: the daily scoring job on a small landed day vs one process doing the same work from a cold start, at
    each of the plan's day sizes; the training benchmark's model, else the same network untrained."""
    chosen = scoring_model(bench, model)
    if not chosen:
        return
    for index, count in enumerate(bench.plan.daily_sizes):
        ds = f"2026-11-{20 + index}"   # any day: it is landed afresh (deterministic bytes) before it is scored
        job = bench.task("daily_job", f"daily-{count}", root=str(bench.root), profile=bench.plan.profile, ds=ds,
                         count=count, model_path=chosen["model_path"], repeats=bench.plan.repeats + 1)
        single = bench.task("daily_single", f"daily-{count}-single", root=str(bench.root),
                            landing=job["landing"], model_path=chosen["model_path"], repeats=bench.plan.repeats,
                            job_predictions=job["predictions"]) if job else None
        bench.results.setdefault("daily", {})[str(count)] = {"images": count, "model": model,
                                                            "trained": chosen["trained"], "job": job,
                                                            "single": single}
        bench.save()


def bench_generated(bench: Bench) -> dict | None:
    """3 at growing N, each only when its projected time fits the budget; the largest measured entry."""
    largest = None
    for n in bench.plan.generated_sizes:
        folder = bench.root / "generated" / f"n{n}"
        on_disk = generate_idx.is_complete(folder, n)
        projected = _projected_minutes(bench.results["data"], n, generate=not on_disk)
        remaining = bench.plan.budget_minutes - bench.elapsed_minutes()
        if projected is not None and projected > remaining:
            bench.results["notes"].append(
                f"N={n:,} skipped: projected {projected:.1f} min (linear in N from the last size) exceeds the "
                f"{remaining:.1f} min left of the {bench.plan.budget_minutes:.0f}-minute budget")
            continue
        if not on_disk:
            log.info("[%5.1f min] generating %d images", bench.elapsed_minutes(), n)
            info = generate_idx.generate(REPO / "data" / "mnist", folder, n, SEED)
            bench.results.setdefault("generation", []).append(info)
        entry = bench_data_size(bench, n, "generated", str(folder), 1)
        largest = entry if entry.get("stage") else largest
    return largest


def _projected_minutes(sizes: list[dict], n: int, generate: bool = True) -> float | None:
    """Minutes both sides (and the generation, when its files are not there yet) would take at N, scaled linearly
    from the last measured size, plus the prediction over its test split (about a seventh of N, estimated at the
    same rate) and 20% margin."""
    measured = [s for s in sizes if (s.get("stage") or {}).get("median_seconds")]
    if not measured:
        return None
    last = measured[-1]
    per_image = (last["stage"]["median_seconds"] + ((last.get("baseline") or {}).get("median_seconds") or 0)
                 ) / last["n"] + (GENERATION_SECONDS_PER_IMAGE if generate else 0)
    return 1.2 * per_image * n * (1 + 1 / 7) / 60


def bench_end_to_end(bench: Bench) -> None:
    """5: `make run` (the plan's profile, fresh outputs) and the same steps as one notebook process, timed as whole
    processes one after the other."""
    for side in ("pipeline", "notebook"):
        bench.results["end_to_end"][side] = bench.task("end_to_end", f"end-to-end-{side}", root=str(bench.root),
                                                       profile=bench.plan.profile, side=side)
        bench.save()


def bench_parity(bench: Bench) -> None:
    """6b: per model and seed, the model's whole recipe trained by the pipeline (its default config, a fresh
    process) and by one process as a notebook fits it, both scored on the curated test split. Seed by seed, so
    that a stopped run keeps every pair it finished."""
    plan = bench.plan
    for model in plan.parity_models:
        for seed in plan.parity_seeds:
            entry = bench.results["parity"].setdefault(model, {"pipeline": {}, "notebook": {}})
            label = f"parity-{model}-seed{seed}"
            entry["pipeline"][str(seed)] = bench.task(
                "train_recipe", f"{label}-pipeline", root=str(bench.root), profile=plan.profile, model=model,
                run_id=label, overrides=["tracking.enabled=false", f"train.seed={seed}"])
            entry["notebook"][str(seed)] = bench.task("train_recipe_numpy", f"{label}-notebook",
                                                      root=str(bench.root), profile=plan.profile, model=model,
                                                      seed=seed)
            bench.save()


def run(mode: str, root: Path, out_dir: Path, sections: tuple[str, ...] = SECTIONS) -> dict[str, str]:
    bench = Bench(mode, root, out_dir, sections)
    plan = bench.plan
    if plan.bundled_data and "data" in sections:
        bench_data_size(bench, 70_000, "bundled MNIST (gzip IDX)", str(REPO / "data" / "mnist"), plan.data_repeats)
    if "training" in sections:
        bench_training(bench)
    if "input" in sections:
        bench_input_pipeline(bench)
    if "prediction" in sections:
        for model in plan.predict_models:
            bench_prediction(bench, f"test set, {model}", model, None, plan.profile, plan.repeats)
        bench_prediction_folder(bench)
    if "daily" in sections:
        bench_daily(bench)
    largest = bench_generated(bench) if "generated" in sections else None
    if largest is not None and "prediction" in sections:
        test_split = largest["stage"]["curated_test"]
        bench_prediction(bench, f"generated N={largest['n']:,} test split, model_1", "model_1", test_split,
                         plan.profile, 1)
    if "end_to_end" in sections:
        bench_end_to_end(bench)
    if "parity" in sections:
        bench_parity(bench)
    paths = bench.save()
    log.info("done in %.1f min: %s", bench.elapsed_minutes(), ", ".join(paths.values()))
    print(report.markdown(json.loads(Path(paths["json"]).read_text())))
    return paths


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(PLANS), default="full")
    parser.add_argument("--root", default=str(REPO / "output" / "bench"),
                        help="scratch folder for data, models and logs (git-ignored)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where the results go")
    parser.add_argument("--only", type=_sections, default=SECTIONS, metavar="SECTION[,SECTION]",
                        help=f"measure only these sections ({', '.join(SECTIONS)}); the results go to "
                             "bench-<mode>-only-<sections>.*, never over a full run's")
    return parser


def _sections(text: str) -> tuple[str, ...]:
    wanted = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"unknown section '{unknown[0] if unknown else text}' "
                                         f"(known: {', '.join(SECTIONS)})")
    return tuple(s for s in SECTIONS if s in wanted)


def _main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    root = Path(args.root) / args.mode
    run(args.mode, root, Path(args.out), args.only)
    return 0


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
