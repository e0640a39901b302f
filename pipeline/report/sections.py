"""The report's sections, each a function of the loaded run outputs returning Markdown.

Numbers only ever come from `RunOutputs`; the prose around them says what they mean.
"""
from __future__ import annotations

from pipeline.config import ModelConfig, PipelineConfig
from pipeline.kept_epoch import describe_kept, keep_rule, kept_record
from pipeline.layout import Layout
from pipeline.report.outputs import RunOutputs
from pipeline.stages import STAGES


def table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def figure(key: str, caption: str) -> str:
    return f"![{caption}]({Layout.report_figure_link(key)})\n\n*{caption}*"


def counted(n: int, noun: str) -> str:
    """'1 epoch', '3 epochs', '60,000 images'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def models_section(out: RunOutputs, cfg: PipelineConfig) -> str:
    parts = ["## 3. Models",
             f"{counted(len(out.histories), 'CNN')} ({', '.join(out.histories)}), trained data-parallel with Horovod "
             "on Spark (each rank reading its own Petastorm shard of the curated Parquet), Adam, categorical "
             f"cross-entropy; {learning_rates(out)}. {recipes_text(out)}"]
    names = list(out.histories)
    for index, (name, hist) in enumerate(out.histories.items()):
        kept = kept_record(hist)
        gap = out.metrics[name].get("train_val_gap", {})
        layers = table(["layer", "type", "output shape", "parameters"],
                       [[la["name"], la["type"], "x".join(map(str, la.get("output_shape") or [])), la["params"]]
                        for la in hist["layers"]])
        peak = max(hist.get("peak_rss_mb_per_worker") or [0])
        parts += [f"### {name}", layers,
                  table(["parameters", "epochs", "workers", "batch per worker", "kept", "train accuracy",
                         "validation accuracy", "train - validation gap", "training time (s)",
                         "peak memory per worker (MB)"],
                        [[hist["params"], hist["epochs_completed"], hist["num_workers"],
                          hist["batch_size_per_worker"], describe_kept(hist), kept["accuracy"], kept["val_accuracy"],
                          gap.get("accuracy", kept["accuracy"] - kept["val_accuracy"]), hist["total_seconds"],
                          round(peak, 1)]]),
                  table(["epoch", "train loss", "train accuracy", "validation loss", "validation accuracy",
                         "seconds"],
                        [[e["epoch"], e["loss"], e["accuracy"], e["val_loss"], e["val_accuracy"], e["seconds"]]
                         for e in hist["epochs"]]),
                  figure(f"{name}_curves", f"{name}: loss and accuracy per epoch, train vs validation")]
        if has_recipe(hist) and index > 0:
            parts += recipe_parts(out, name, names[index - 1])
    parts += ["### Comparison", comparison_table(out)]
    return "\n\n".join(parts)


def has_recipe(hist: dict) -> bool:
    """True when the model trained with more than the study's recipe (augmentation, a schedule, best epoch)."""
    study = ModelConfig(epochs=1)
    return bool(hist.get("augment")) or (hist.get("schedule") or study.schedule) != study.schedule \
        or keep_rule(hist) != study.keep


def recipes_text(out: RunOutputs) -> str:
    """Which models trained with which recipe: the study's, or augmentation / schedule / best epoch."""
    plain = [name for name, hist in out.histories.items() if not has_recipe(hist)]
    texts = [f"{', '.join(plain)}: the study's recipe (no augmentation, constant learning rate after the warm-up, "
             "last epoch kept)"] if plain else []
    for name, hist in out.histories.items():
        if has_recipe(hist):
            texts.append(f"{name}: {recipe_of(hist)}")
    return "Recipes: " + "; ".join(texts) + "."


def recipe_of(hist: dict) -> str:
    return ", ".join([
        "random shifts, rotations and zooms of the training images" if hist.get("augment") else "no augmentation",
        "cosine learning rate after the warm-up" if hist.get("schedule") == "cosine" else "constant learning rate",
        "best validation epoch kept" if keep_rule(hist) == "best" else "last epoch kept"])


def _spread_against(variant: dict, recipe: dict) -> str:
    """A variant's seed spread when it is more than twice the recipe's: a lever can buy stability, not the mean."""
    if len(variant["seeds"]) < 2 or len(recipe["seeds"]) < 2 or variant["std"] <= 2 * recipe["std"]:
        return ""
    return (f", with a seed spread of {100 * variant['std']:.2f} points against the recipe's "
            f"{100 * recipe['std']:.2f} (worst seed {pct(variant['min'])})")


def _model_facts(out: RunOutputs, name: str) -> list:
    hist = out.histories[name]
    types = [layer["type"] for layer in hist["layers"]]
    return [hist["params"], types.count("Conv2D"), types.count("BatchNormalization"), hist["epochs_completed"],
            hist["batch_size_per_worker"], f"{hist['learning_rate']:g}", recipe_of(hist),
            out.metrics[name]["test_accuracy"]]


def recipe_parts(out: RunOutputs, name: str, previous: str) -> list[str]:
    """What changed from the model before it, side by side, and what each change bought: the seeds and the
    ablation measured by benchmarks/model4.py when that file is there (never numbers typed here)."""
    labels = ["parameters", "convolutions", "batch normalisation layers", "epochs", "batch per worker",
              "learning rate (one worker)", "recipe", "test accuracy (this run)"]
    columns = [_model_facts(out, model) for model in (previous, name)]
    rows = [[label, *values] for label, *values in zip(labels, *columns, strict=True)]
    parts = [f"#### {name}: what changed from {previous}, and what it bought", table(["", previous, name], rows)]
    study = out.recipe_study
    if study.get("model") != name or not study.get("variants"):
        return parts + [f"No seed or ablation measurement of {name} was found (`report.recipe_study`); "
                        "`make bench-model4` trains it with three seeds and each lever switched off."]
    variants = study["variants"]
    table_rows = [[variant, "on" if v["augment"] else "off", v["schedule"], len(v["seeds"]),
                   ", ".join(f"{a:.4f}" for a in v["test_accuracy"]), v["mean"], v["std"],
                   f"{v['keep']} ({', '.join(map(str, v['kept_epochs']))} of {v['epochs']})",
                   f"{v['seconds_per_epoch']:.1f}"] for variant, v in variants.items()]
    parts += [f"Measured by `make bench-model4` ({study.get('profile', '?')} profile, started "
              f"{study.get('started_at', '?')}): test accuracy of {name} trained by this pipeline with each seed, and "
              "with one lever switched at a time (the difference from the recipe's mean is what switching it "
              "changed).",
              table(["variant", "augmentation", "schedule", "seeds", "test accuracy per seed", "mean", "spread (sd)",
                     "kept epoch", "s/epoch"], table_rows)]
    recipe = variants.get("recipe")
    if recipe:
        against = [f"{variant} {100 * (v['mean'] - recipe['mean']):+.2f} points"
                   + (" (within twice the recipe's seed spread: not told apart from seed noise)"
                      if abs(recipe["mean"] - v["mean"]) < 2 * recipe["std"] else "")
                   + _spread_against(v, recipe)
                   for variant, v in variants.items() if variant != "recipe"]
        parts.append(f"Recipe mean {pct(recipe['mean'])} over {counted(len(recipe['seeds']), 'seed')} (floor "
                     f"{pct(study.get('floor', 0))}: {'met' if recipe['mean'] >= study.get('floor', 0) else 'NOT met'})"
                     + (f"; each variant against it: {', '.join(against)}." if against else "."))
    return parts


def learning_rates(out: RunOutputs) -> str:
    """The learning rate as each model's history records it; models that trained with the same one share a line."""
    models_by_text: dict[str, list[str]] = {}
    for name, hist in out.histories.items():
        text = f"learning rate {hist['learning_rate']:g} for one worker"
        if hist["num_workers"] > 1:
            text += f", scaled to {hist['learning_rate_scaled']:g} for {hist['num_workers']} workers"
            if hist["warmup_epochs"]:
                text += f" over a warm-up of {counted(hist['warmup_epochs'], 'epoch')}"
        models_by_text.setdefault(text, []).append(name)
    if len(models_by_text) == 1:
        return next(iter(models_by_text))
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in models_by_text.items())


def comparison_table(out: RunOutputs) -> str:
    rows = []
    for name, hist in out.histories.items():
        m = out.metrics[name]
        rows.append([name, hist["params"], hist["epochs_completed"], describe_kept(hist), hist["total_seconds"],
                     round(max(hist.get("peak_rss_mb_per_worker") or [0]), 1), kept_record(hist)["val_accuracy"],
                     m["test_accuracy"]])
    return table(["model", "parameters", "epochs", "kept", "training time (s)", "peak memory per worker (MB)",
                  "validation accuracy", "test accuracy"], rows)


def prediction_section(out: RunOutputs, cfg: PipelineConfig) -> str:
    best = out.best["model"]
    target = cfg.evaluate.target_accuracy
    met = out.best["test_accuracy"] >= target
    rows = [[name, m["test_loss"], m["test_accuracy"], "yes" if m["test_accuracy"] >= target else "no"]
            for name, m in out.metrics.items()]
    per_class = table(["label", "precision", "recall", "F1", "support"],
                      [[c["label"], c["precision"], c["recall"], c["f1"], c["support"]]
                       for c in out.metrics[best]["per_class"]])
    predicted = out.predictions
    return "\n\n".join([
        "## 4. Prediction",
        f"Every model scored the {_test_count(out):,} test images it never saw during training or model selection.",
        table(["model", "test loss", "test accuracy", f"meets the {pct(target)} target"], rows),
        f"**Best model: {best}**, test accuracy {pct(out.best['test_accuracy'])}: the {pct(target)} business target "
        f"is **{'met' if met else 'NOT met'}**.",
        f"### {best}: per-class precision, recall and F1", per_class,
        figure(f"{best}_confusion", f"{best}: confusion matrix on the test set (rows: true label, columns: predicted)"),
        figure(f"{best}_misclassified", f"{best}: misclassified test images, true and predicted label, confidence"),
        "### Batch prediction",
        f"The predict job scored the test set again, {SCORED_IN[predicted.get('scored_in', 'executors')]}, with "
        f"model `{predicted.get('model', best)}`: accuracy "
        f"{pct(predicted['accuracy'])} over {predicted.get('count', _test_count(out)):,} images. "
        "`python jobs/predict.py --input <folder of PNG/JPEG>` scores new images the same way.",
    ])


def tracking_section(out: RunOutputs, cfg: PipelineConfig) -> str:
    """MLflow runs, registered versions and the promotion decision, from tracking.json and promotion.json."""
    tensorboard = ("Rank 0 wrote TensorBoard logs for every model under `train/<model>/tensorboard/` in the run "
                   "folder: `make tensorboard` (or `tensorboard --logdir <run folder>/train`) shows the curves.")
    if not cfg.tracking.enabled:
        return "\n\n".join(["## 5. Tracking and registry",
                             "Tracking was off (`tracking.enabled: false`): nothing was logged to MLflow and no model "
                             "was registered; every figure of this report comes from the run folder alone.",
                             tensorboard])
    record, decision = out.tracking, out.promotion
    models = record.get("models", {})
    rows = [[name, f"`{entry.get('run_id', '-')}`", entry.get("version", "-"), entry.get("test_accuracy", "-")]
            for name, entry in models.items()]
    name = record.get("registered_model", cfg.tracking.registered_model)
    parts = ["## 5. Tracking and registry",
             f"Every model's training is one MLflow run, logged live by rank 0 as it trained (per-epoch metrics "
             f"with their times, learning rate, system metrics) and completed by the driver (parameters, the data "
             f"as dataset inputs, history, curves, test metrics and figures, the model under its own name), nested "
             f"under this pipeline run's MLflow run "
             f"`{record.get('pipeline_run_id', '-')}` (experiment `{cfg.tracking.experiment}`, store "
             f"`{record.get('tracking_uri', '-')}`), which also holds this report. Each model is a version of the "
             f"registered model `{name}`.",
             table(["model", "MLflow run", "registered version", "test accuracy"], rows)]
    if decision:
        parts += [promotion_text(decision), table(
            ["", "version", "test accuracy"],
            [["challenger (this run's best)", decision["challenger_version"], decision["challenger_accuracy"]],
             ["champion before this run", decision.get("champion_version") or "none",
              "-" if decision.get("champion_accuracy") is None else decision["champion_accuracy"]]])]
    parts += [f"The rule: the challenger becomes `champion` when its test accuracy is at least the target "
              f"({pct(cfg.evaluate.target_accuracy)}) and beats the champion's, on the same test set, by at least "
              f"`tracking.promotion_margin` ({cfg.tracking.promotion_margin:g}); the first model to meet the target is "
              "promoted. The weekly retraining applies the same rule, and also requires the challenger not to be worse "
              "than the champion on the newest labelled batches by more than their sampling error. Score with the "
              f"champion: `python jobs/predict.py --model models:/{name}@champion` (every "
              "prediction row records the version in `model_version`); serve it over HTTP with `make serve`, which "
              "takes image files, 0-255 pixels or [0, 1] floats.", tensorboard]
    return "\n\n".join(parts)


def promotion_text(decision: dict) -> str:
    outcome = "**promoted to champion**" if decision["promoted"] else "**not promoted**: the champion stays"
    scored = (f" (the champion was scored on this run's {decision['test_count']:,} test images)"
              if decision.get("champion_scored_on_this_test_set") and decision.get("test_count") else "")
    return (f"Promotion decision: the challenger, {decision.get('challenger_model', 'the best model')} (version "
            f"{decision['challenger_version']}), was {outcome}: {decision['reason']}{scored}.")


def _test_count(out: RunOutputs) -> int:
    return int(out.curated_manifest["counts"]["test"])


def structure_section(layout: Layout) -> str:
    rows = [[stage.name, f"`{stage.job}`", stage.summary, stage.reads, f"`{stage.writes(layout)}`"]
            for stage in STAGES]
    return "\n\n".join([
        "## 6. Pipeline structure",
        "Each stage is registered once in `pipeline/stages.py` and runs as a thin `spark-submit`-able job in `jobs/`. "
        "`make run` runs them all in order through `jobs/run_pipeline.py`; a stage whose output is already complete "
        "for the same inputs and config is skipped (`--force` redoes everything, `--from STAGE` redoes a stage and "
        "every stage that reads what it writes).",
        table(["stage", "job", "what it does", "reads", "writes"], rows),
        "Run one stage alone, e.g.:\n\n```\n.venv/bin/python jobs/train.py --conf conf/local.yaml --model model_3\n"
        "spark-submit --py-files dist/pipeline.zip jobs/evaluate.py --conf conf/cluster.yaml\n```",
    ])


def libraries_section(out: RunOutputs) -> str:
    versions = out.run_manifest.get("versions", {})
    machine = out.run_manifest.get("machine", {})
    return "\n\n".join([
        "## 7. Libraries and versions",
        "Read from the environment the run executed in:",
        table(["package", "version"], [[k, v] for k, v in versions.items()]),
        f"Machine: {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, {machine.get('platform')}; "
        f"git commit `{out.run_manifest.get('git_commit', 'unknown')}`.",
    ])


def limitations_section(out: RunOutputs) -> str:
    workers = {h["num_workers"] for h in out.histories.values()}
    return "\n\n".join([
        "## 8. Known limitations and future work",
        "Known limitations:",
        "\n".join([
            f"- Training ran with {', '.join(map(str, sorted(workers)))} Horovod worker(s) in one Spark application; "
            "on a single machine data parallelism cannot beat one process using all cores, so the distributed set-up "
            "pays off only when the data or the cluster grows (see `benchmarks/`).",
            "- Each rank reads a Petastorm shard made of whole row groups, so ranks see slightly different numbers of "
            "rows; a fixed number of steps per epoch on every rank keeps them in lock-step, at the cost of some "
            "records being seen once more or once less per epoch.",
            f"- {_kept_rules(out)} Validation accuracy still moves between the last epochs "
            f"({_late_validation_spread(out)}), so another seed can land a few tenths of a point either side of the "
            "figures below.",
            "- Horovod's elastic mode is not used: if an executor dies mid-training the job fails, and a rerun "
            "resumes from the last completed epoch's checkpoint.",
            "- Predicting ordinary photos of digits relies on MNIST-style preprocessing (invert if light background, "
            "crop, fit into 20x20, centre by centre of mass); very noisy photos need better segmentation.",
        ]),
        "Future work:",
        "\n".join([
            *([] if any(h.get("augment") for h in out.histories.values()) else
              ["- Data augmentation (shifts, rotations) and a learning-rate schedule for the deeper models."]),
            "- Hyper-parameter search over Spark (one trial per executor) instead of the study's fixed settings.",
            "- Elastic training (Horovod's elastic mode), so that a lost executor shrinks the job instead of ending "
            "it.",
        ]),
    ])


def _kept_rules(out: RunOutputs) -> str:
    """Which epoch each model saved: the study's rule (last) and any model keeping its best validation epoch."""
    last = [n for n, h in out.histories.items() if keep_rule(h) == "last"]
    best = [f"{n} (epoch {kept_record(h).get('epoch')} of {h['epochs_completed']})"
            for n, h in out.histories.items() if keep_rule(h) == "best"]
    own = "its" if len(last) == 1 else "their"
    texts = [f"{', '.join(last)} saved {own} last epoch, as in the study"] if last else []
    texts += [f"{', '.join(best)} saved the epoch with the best validation accuracy, chosen on the validation split "
              "and so never on the test images"] if best else []
    return "; ".join(texts) + "."


def _late_validation_spread(out: RunOutputs, last: int = 3) -> str:
    """'over the last 3 epochs: model_1 0.9837 to 0.9847, ...': the range of validation accuracy over each model's
    last epochs (its last 2 when it trained only 2)."""
    spans = []
    for name, history in out.histories.items():
        values = [e["val_accuracy"] for e in history.get("epochs", [])[-last:] if e.get("val_accuracy") is not None]
        if values:
            spans.append((len(values), f"{name} {min(values):.4f} to {max(values):.4f}"))
    if not spans:
        return "no epochs recorded"
    lengths = {n for n, _ in spans}
    if len(lengths) == 1:
        return f"over the last {counted(lengths.pop(), 'epoch')}: " + ", ".join(text for _, text in spans)
    return ", ".join(f"{text} over its last {counted(n, 'epoch')}" for n, text in spans)


def conclusions_section(out: RunOutputs, cfg: PipelineConfig) -> str:
    target = cfg.evaluate.target_accuracy
    rows = []
    for name, hist in out.histories.items():
        val = kept_record(hist)["val_accuracy"]
        ref = cfg.report.reference_val_accuracy.get(name)
        rows.append([name, describe_kept(hist), val, ref if ref is not None else "- (beyond the study)",
                     f"{100 * (val - ref):+.2f} points" if ref is not None else "-", out.metrics[name]["test_accuracy"],
                     "yes" if out.metrics[name]["test_accuracy"] >= target else "no"])
    met = sum(1 for m in out.metrics.values() if m["test_accuracy"] >= target)
    return "\n\n".join([
        "## 9. Conclusions",
        table(["model", "kept", "validation accuracy", "original study", "difference", "test accuracy",
               f"test >= {pct(target)}"], rows),
        f"{met} of {len(out.metrics)} models reach the {pct(target)} business target on unseen data; the best, "
        f"{out.best['model']}, reaches {pct(out.best['test_accuracy'])} test accuracy.",
        *beyond_study(out, cfg),
    ])


def beyond_study(out: RunOutputs, cfg: PipelineConfig) -> list[str]:
    """The models the study had no figure for, against the study's best, with the seeds' mean when measured."""
    studied = {n: v for n, v in cfg.report.reference_val_accuracy.items() if n in out.metrics}
    new = [n for n in out.metrics if n not in cfg.report.reference_val_accuracy]
    if not studied or not new:
        return []
    top = max(studied, key=lambda n: studied[n])
    texts = []
    for name in new:
        text = (f"{name}, beyond the study, scores {pct(out.metrics[name]['test_accuracy'])} on the test set against "
                f"{pct(out.metrics[top]['test_accuracy'])} for the study's best model, {top} (study: "
                f"{pct(studied[top])} validation)")
        recipe = out.recipe_study.get("variants", {}).get("recipe") if out.recipe_study.get("model") == name else None
        if recipe:
            text += (f"; over {counted(len(recipe['seeds']), 'seed')} of the {out.recipe_study.get('profile', '?')} "
                     f"profile (`make bench-model4`) its mean is {pct(recipe['mean'])} (sd {100 * recipe['std']:.2f} "
                     "points)")
        texts.append(text + ".")
    return texts


def references_section() -> str:
    return "\n\n".join([
        "## 10. References and acknowledgements",
        "\n".join([
            "- Y. LeCun, C. Cortes and C. J. C. Burges, *The MNIST database of handwritten digits* "
            "(CC BY-SA 3.0); the copy bundled in `data/mnist/` is the original IDX files.",
            "- Apache Spark (PySpark), Apache Arrow / Parquet.",
            "- Uber's Petastorm (Parquet to TensorFlow input) and Horovod (A. Sergeev and M. Del Balso, "
            "*Horovod: fast and easy distributed deep learning in TensorFlow*, 2018).",
            "- TensorFlow and Keras; NumPy, pandas, Matplotlib, Pillow.",
        ]),
    ])


def data_section(out: RunOutputs) -> str:
    raw, val, cur = out.raw_manifest, out.validation, out.curated_manifest
    files = table(["file", "split", "role", "bytes", "SHA-256"],
                  [[s["name"], s["split"], s["role"], s["bytes"], f"`{s['sha256'][:16]}...`"]
                   for s in raw["sources"]])
    dup = raw["duplicate_images"]
    counts = table(["split", "images"], [[split, n] for split, n in cur["counts"].items()])
    reasons = val.get("quarantine_reasons") or {}
    return "\n\n".join([
        "## 1. Data collection",
        f"Source: `{raw['input']}`, format `{raw['format']}`, checksums "
        f"{'verified against SHA256SUMS' if raw.get('checksums_verified') else 'recorded (no SHA256SUMS to verify)'}.",
        files,
        f"Validation **{val['status']}**: {sum(val['records'].values()):,} records read "
        f"({', '.join(f'{s} {n:,}' for s, n in val['records'].items())}), "
        f"{sum(val['quarantined'].values()):,} quarantined ({pct(val['quarantined_fraction'])}; tolerance "
        f"{pct(val['max_quarantine_fraction'])})" + (f", reasons: {reasons}" if reasons else "") + ". "
        f"Exact duplicate images: {dup['within_train']:,} within train, {dup['within_test']:,} within test, "
        f"{dup['test_in_train']:,} test images also in train.",
        *suspect_images(val),
        prepared_text(raw, cur),
        counts,
    ])


def prepared_text(raw: dict, cur: dict) -> str:
    """What prepare did, from the raw and curated manifests: normalisation, shape, split and subset."""
    scale = cur["normalisation"]["scale"]
    subset = cur.get("subset_fraction", 1.0)
    kept = (f" A stratified subset of {pct(subset)} of every split (test included) was kept, with the same seed."
            if subset < 1 else "")
    return (f"Prepared for training: pixels scaled by {scale:.6f} (1/{1 / scale:.0f}) to "
            f"{cur['normalisation']['output_dtype']} in [0, 1], shaped {'x'.join(map(str, cur['image_shape']))}; "
            f"the {raw['counts']['train']:,} valid training images split into train and validation by a seeded hash "
            f"of the record id (seed {cur['seed']}), stratified by label; the {raw['counts']['test']:,} test images "
            f"never mixed into either.{kept} Per-label counts are in the next section.")


# Where the predict job read and scored Parquet (its manifest's `scored_in`; pipeline.scoring.score_parquet).
SCORED_IN = {"driver": "read by row group with PyArrow and scored in the job's driver process, which loads the model "
                       "once (inputs of at most `predict.driver_max_images` images; larger ones go to the executors)",
             "executors": "through Spark (`mapInPandas`: each Python worker reads its Parquet row groups with PyArrow "
                          "and loads the model once)"}
SUSPECT_IMAGES = {"blank_images": "blank images (every pixel 0)",
                  "test_images_in_train": "training images that are also test images"}
POLICY_ACTIONS = {"fail": "ingest stopped", "warn": "kept, logged as a warning",
                  "quarantine": "moved to the quarantine table", "drop": "removed (counted, kept nowhere)"}


def suspect_images(validation: dict) -> list[str]:
    """Ingest's suspect-image findings and what their data.* policy did with them."""
    findings = validation["findings"]
    rows = [[SUSPECT_IMAGES.get(key, key), f"`data.{key}: {found['policy']}`", found["count"],
             POLICY_ACTIONS.get(found["policy"], found["policy"]) if found["count"] else "-",
             ", ".join(f"`{record}`" for record in found["examples"]) or "-"]
            for key, found in findings.items()]
    dropped = sum(validation["dropped"].values())
    return ["Suspect images pass the record checks but should not reach training; when an image is in both splits "
            "the training copy is the one handled, the test split stays the untouched benchmark."
            + (f" {dropped:,} records were dropped." if dropped else ""),
            table(["finding", "policy", "records", "what happened", "examples"], rows)]


def eda_section(out: RunOutputs) -> str:
    eda = out.eda
    dist = eda["label_distribution"]
    splits = [s for s in eda["splits"] if s in dist]
    labels = sorted(dist[splits[0]]["counts"], key=int)
    distribution = table(["label", *[f"{s} count" for s in splits], *[f"{s} share" for s in splits]],
                         [[label, *[dist[s]["counts"].get(label, 0) for s in splits],
                           *[pct(dist[s]["shares"].get(label, 0.0)) for s in splits]] for label in labels])
    balance = table(["split", "images", "largest class", "smallest class", "imbalance ratio (largest / smallest)"],
                    [[s, eda["counts"][s], dist[s]["largest_label"], dist[s]["smallest_label"],
                      dist[s]["imbalance_ratio"]] for s in splits])
    stats = eda["pixel_stats"]["train"]
    pixel_rows = [[label, row["images"], row["mean"], row["std"], pct(row["ink_share"])]
                  for label, row in sorted(stats.items(), key=lambda kv: (not kv[0].isdigit(), kv[0]))]
    drift = eda["drift"]
    share, mean = drift["largest_share_difference"], drift["largest_mean_intensity_difference"]
    sample = eda["sample"]
    return "\n\n".join([
        "## 2. Exploratory data analysis",
        "Computed with Spark aggregations over the curated splits (only aggregates and the sampled rows reach the "
        "driver).",
        "### Label distribution", distribution, balance,
        figure("label_distribution", "Label distribution per split"),
        f"### Sample images\n\n{len(sample['records'])} random {sample['split']} images drawn with seed "
        f"{sample['seed']}, each titled with its label.",
        figure("sample_grid", f"Random labelled {sample['split']} images"),
        "### Pixel statistics (train split, pixel values in [0, 1])",
        table(["label", "images", "mean", "std", "ink share (non-zero pixels)"], pixel_rows),
        figure("pixel_histogram", "Pixel-intensity histogram"),
        figure("mean_images", "Mean image of each digit (train split)"),
        "### Drift between train, validation and test",
        f"Largest difference in a class's share between splits: label {share['label']}, "
        f"{100 * share['value']:.3f} percentage points; largest difference in a class's mean intensity: label "
        f"{mean['label']}, {mean['value']:.4f}; largest per-pixel difference between split mean images: "
        + ", ".join(f"{pair} {v:.4f}" for pair, v in drift["mean_image_max_pixel_difference"].items()) + ".",
    ])
