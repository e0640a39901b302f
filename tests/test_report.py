"""Report building blocks: tables format numbers as read, HTML embeds every figure and opens offline."""
import base64
import dataclasses
import io

from PIL import Image

from pipeline.rendering import markdown_to_html
from pipeline.report.sections import table


def test_table_formats_counts_and_ratios():
    md = table(["model", "params", "accuracy"], [["model_1", 693962, 0.98765], ["a|b", 12, 12.5]])
    assert md.splitlines()[2] == "| model_1 | 693,962 | 0.9877 |"
    assert md.splitlines()[3] == "| a\\|b | 12 | 12.5 |"


def test_html_embeds_figures(tmp_path):
    (tmp_path / "figures").mkdir()
    png = io.BytesIO()
    Image.new("L", (40, 30), color=128).save(png, format="PNG")
    (tmp_path / "figures" / "grid.png").write_bytes(png.getvalue())
    html = markdown_to_html("# Title\n\n![a grid](figures/grid.png)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
                            "t", str(tmp_path))
    encoded = html.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(encoded) == png.getvalue()
    assert "<table>" in html and "figures/grid.png" not in html


def _history(epochs: int, workers: int) -> dict:
    rows = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5 + e / 100, "val_loss": 1.1 / e,
             "val_accuracy": 0.45 + e / 100, "seconds": 2.0} for e in range(1, epochs + 1)]
    return {"layers": [{"name": "dense", "type": "Dense", "output_shape": [10], "params": 7850}], "params": 7850,
            "epochs": rows, "epochs_completed": epochs, "num_workers": workers, "batch_size_per_worker": 16,
            "learning_rate": 0.002, "learning_rate_scaled": 0.002 * workers, "warmup_epochs": 1,
            "total_seconds": 2.0 * epochs, "peak_rss_mb_per_worker": [900.0] * workers}


def _metrics(test_accuracy: float) -> dict:
    return {"test_loss": 0.3, "test_accuracy": test_accuracy, "train_val_gap": {"accuracy": 0.05},
            "per_class": [{"label": c, "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 12} for c in range(10)]}


def small_run(models: dict[str, tuple[int, float]], counts: dict[str, int], subset_fraction: float,
              workers: int = 2):
    """RunOutputs of a run with these models ({name: (epochs, test accuracy)}) and curated split counts."""
    from pipeline.report.outputs import RunOutputs
    splits = list(counts)
    labels = {s: {str(c): counts[s] // 10 for c in range(10)} for s in splits}
    raw_counts = {"train": counts["train"] + counts["validation"] + 7, "test": counts["test"] + 3}
    validation = {"status": "passed", "records": raw_counts, "quarantined": {"train": 0, "test": 0},
                  "quarantined_fraction": 0.0, "max_quarantine_fraction": 0.0, "quarantine_reasons": {},
                  "dropped": {"train": 0, "test": 0},
                  "findings": {"blank_images": {"policy": "quarantine", "count": 0, "examples": []}}}
    eda = {"splits": splits, "counts": counts,
           "label_distribution": {s: {"counts": labels[s], "shares": {c: 0.1 for c in labels[s]},
                                      "largest_label": 0, "smallest_label": 9, "imbalance_ratio": 1.0}
                                  for s in splits},
           "pixel_stats": {"train": {"0": {"images": 45, "mean": 0.13, "std": 0.3, "ink_share": 0.19}}},
           "drift": {"largest_share_difference": {"label": 1, "value": 0.001},
                     "largest_mean_intensity_difference": {"label": 2, "value": 0.002},
                     "mean_image_max_pixel_difference": {"train-test": 0.01}},
           "sample": {"split": "train", "seed": 7, "records": [{"record_id": "t:1", "label": 3}] * 4}}
    best = max(models, key=lambda name: models[name][1])
    return RunOutputs(
        raw_manifest={"input": "/in", "format": "idx", "checksums_verified": True, "counts": raw_counts,
                      "sources": [{"name": "t.idx", "split": "train", "role": "images", "bytes": 9,
                                   "sha256": "ab" * 32}],
                      "duplicate_images": {"within_train": 0, "within_test": 0, "test_in_train": 0}},
        validation=validation,
        curated_manifest={"counts": counts, "image_shape": [28, 28, 1], "seed": 42, "subset_fraction": subset_fraction,
                          "normalisation": {"scale": 1 / 255, "output_dtype": "float32"}},
        eda=eda,
        histories={name: _history(epochs, workers) for name, (epochs, _) in models.items()},
        metrics={name: _metrics(accuracy) for name, (_, accuracy) in models.items()},
        comparison={"models": [], "best_model": best},
        best={"model": best, "test_accuracy": models[best][1]},
        predictions={"model": best, "accuracy": models[best][1], "count": counts["test"]},
        run_manifest={})


def test_report_text_follows_the_run_outputs(make_config):
    """Two models, odd counts and a subset: every count in the prose is the run's, none is the study's."""
    from pipeline.layout import Layout
    from pipeline.report.stage import report_markdown
    cfg = make_config("evaluate.target_accuracy=0.9")
    out = small_run({"small": (2, 0.95), "wide": (4, 0.85)}, {"train": 450, "validation": 50, "test": 120},
                    subset_fraction=0.5)
    text = report_markdown(out, cfg, Layout.from_config(cfg, "run-x"))
    assert "2 CNNs (small, wide), trained data-parallel" in text
    assert "learning rate 0.002 for one worker, scaled to 0.004 for 2 workers over a warm-up of 1 epoch" in text
    assert "the 507 valid training images split into train and validation" in text
    assert "the 123 test images never mixed into either" in text
    assert "A stratified subset of 50.00% of every split (test included) was kept" in text
    assert "Every model scored the 120 test images" in text
    assert "small 0.4600 to 0.4700 over its last 2 epochs, wide 0.4700 to 0.4900 over its last 3 epochs" in text
    assert "1 of 2 models reach the 90.00% business target" in text and "the best, small, reaches 95.00%" in text
    assert "Training ran with 2 Horovod worker(s)" in text
    assert "| small | 7,850 | 2 | last epoch (2 of 2) | 4.0000 |" in text  # comparison
    assert "| wide | 7,850 | 4 | last epoch (4 of 4) | 8.0000 |" in text
    assert "small, wide saved their last epoch, as in the study." in text
    for study_number in ("Three", "three", "60,000", "10,000", "54,000", "6,000"):
        assert study_number not in text
    assert "scored the test set again, through Spark (`mapInPandas`: each Python worker" in text  # the manifest's
    in_driver = dataclasses.replace(out, predictions={**out.predictions, "scored_in": "driver"})  # scored_in
    assert ("scored the test set again, read by row group with PyArrow and scored in the job's driver process"
            in report_markdown(in_driver, cfg, Layout.from_config(cfg, "run-x")))


def test_report_text_of_one_model_on_one_worker(make_config):
    from pipeline.layout import Layout
    from pipeline.report.stage import report_markdown
    cfg = make_config()
    out = small_run({"only": (3, 0.99)}, {"train": 90, "validation": 10, "test": 40}, subset_fraction=1.0,
                    workers=1)
    text = report_markdown(out, cfg, Layout.from_config(cfg, "run-y"))
    assert "1 CNN (only), trained data-parallel" in text and "learning rate 0.002 for one worker;" not in text
    assert "Adam, categorical cross-entropy; learning rate 0.002 for one worker." in text
    assert "over the last 3 epochs: only 0.4600 to 0.4800" in text
    assert "subset" not in text and "1 of 1 models reach" in text


STUDY = {"model": "model_4", "profile": "full", "floor": 0.995, "started_at": "2026-11-26T05:39:09Z",
         "variants": {
             "recipe": {"seeds": [42, 43, 44], "test_accuracy": [0.9961, 0.9957, 0.9955], "mean": 0.9958,
                        "std": 0.0003, "kept_epochs": [14, 15, 13], "epochs": 15, "augment": True,
                        "schedule": "cosine", "keep": "best", "seconds_per_epoch": 12.1},
             "no augmentation": {"seeds": [42], "test_accuracy": [0.9931], "mean": 0.9931, "std": 0.0,
                                 "kept_epochs": [9], "epochs": 15, "augment": False, "schedule": "cosine",
                                 "keep": "best", "seconds_per_epoch": 9.5}}}


def recipe_run(study: dict):
    """model_3 as in the study, then model_4 with its recipe (best epoch 2 of 3 kept), and a recipe study."""
    out = small_run({"model_3": (3, 0.992), "model_4": (3, 0.996)}, {"train": 450, "validation": 50, "test": 120},
                    subset_fraction=1.0)
    out.histories["model_4"].update(keep="best", augment=True, schedule="cosine", kept_epoch=2)
    out.histories["model_4"]["layers"] = [{"name": "c", "type": "Conv2D", "output_shape": [24, 24, 32], "params": 800},
                                          {"name": "b", "type": "BatchNormalization", "output_shape": [24, 24, 32],
                                           "params": 128}]
    out.recipe_study = study
    return out


def test_report_tells_what_model_4_changed_and_what_each_lever_bought(make_config):
    from pipeline.layout import Layout
    from pipeline.report.stage import report_markdown
    cfg = make_config()
    text = report_markdown(recipe_run(STUDY), cfg, Layout.from_config(cfg, "run-z"))
    assert ("Recipes: model_3: the study's recipe (no augmentation, constant learning rate after the warm-up, last "
            "epoch kept); model_4: random shifts, rotations and zooms of the training images, cosine learning rate "
            "after the warm-up, best validation epoch kept.") in text
    assert "#### model_4: what changed from model_3, and what it bought" in text
    assert "| convolutions | 0 | 1 |" in text and "| batch normalisation layers | 0 | 1 |" in text
    assert "| test accuracy (this run) | 0.9920 | 0.9960 |" in text
    assert ("| recipe | on | cosine | 3 | 0.9961, 0.9957, 0.9955 | 0.9958 | 0.0003 | best (14, 15, 13 of 15) | 12.1 |"
            in text)
    assert "| no augmentation | off | cosine | 1 | 0.9931 | 0.9931 | 0.0000 | best (9 of 15) | 9.5 |" in text
    assert ("Recipe mean 99.58% over 3 seeds (floor 99.50%: met); each variant against it: no augmentation -0.27 "
            "points."
            in text)
    close = {**STUDY, "variants": {**STUDY["variants"], "no augmentation": {
        **STUDY["variants"]["no augmentation"], "mean": 0.9961, "test_accuracy": [0.9961]}}}
    text = report_markdown(recipe_run(close), cfg, Layout.from_config(cfg, "run-z"))
    assert ("each variant against it: no augmentation +0.03 points (within twice the recipe's seed spread: not told "
            "apart from seed noise).") in text
    unstable = {**STUDY, "variants": {**STUDY["variants"], "no augmentation": {
        **STUDY["variants"]["no augmentation"], "seeds": [42, 43, 44], "test_accuracy": [0.9959, 0.9961, 0.9941],
        "mean": 0.9954, "std": 0.0011, "min": 0.9941}}}
    text_unstable = report_markdown(recipe_run(unstable), cfg, Layout.from_config(cfg, "run-z"))
    assert ("each variant against it: no augmentation -0.04 points (within twice the recipe's seed spread: not told "
            "apart from seed noise), with a seed spread of 0.11 points against the recipe's 0.03 (worst seed "
            "99.41%).") in text_unstable
    # the kept epoch everywhere: per-model table, comparison, limitations, conclusions
    assert "| 7,850 | 3 | 2 | 16 | best validation epoch (2 of 3) | 0.5200 | 0.4700 |" in text
    assert "| model_4 | 7,850 | 3 | best validation epoch (2 of 3) | 6.0000 | 900.0 | 0.4700 | 0.9960 |" in text
    assert ("model_3 saved its last epoch, as in the study; model_4 (epoch 2 of 3) saved the epoch with the best "
            "validation accuracy") in text
    assert "| model_4 | best validation epoch (2 of 3) | 0.4700 | - (beyond the study) | - | 0.9960 | yes |" in text
    assert ("model_4, beyond the study, scores 99.60% on the test set against 99.20% for the study's best model, "
            "model_3 (study: 99.20% validation); over 3 seeds of the full profile (`make bench-model4`) its mean is "
            "99.58% (sd 0.03 points).") in text
    assert "Data augmentation (shifts, rotations)" not in text     # future work done


def test_without_a_recipe_study_the_report_says_how_to_measure_one(make_config):
    from pipeline.layout import Layout
    from pipeline.report.stage import report_markdown
    cfg = make_config()
    text = report_markdown(recipe_run({}), cfg, Layout.from_config(cfg, "run-z"))
    assert ("No seed or ablation measurement of model_4 was found (`report.recipe_study`); `make bench-model4` trains "
            "it with three seeds and each lever switched off.") in text
    assert "over 3 seeds" not in text and "bought by each lever" not in text
