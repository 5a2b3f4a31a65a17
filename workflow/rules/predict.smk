# Prediction. Each job loads the model once and streams its scenes window by window (bounded
# memory). Start-up (Python, torch, the model: 2-3 s) is paid once per job, not per scene:
# - one run: one job per batch of `prediction.scenes_per_job` scenes (a rule per dataset and
#   batch, since a rule's outputs are fixed patterns); a re-run after an interruption skips
#   the batch's finished scenes (kept in <run>/.resume/ until the batch is done);
# - replicates: one job per replicate, predicting only the scenes that hold its fold's test
#   tiles (the only ones its evaluation reads) into a folder.


def scene_batches(ds_name):
    """The dataset's scenes in batches of prediction.scenes_per_job."""
    names = scenes(ds_name)
    size = int(config["prediction"]["scenes_per_job"])
    return [names[i : i + size] for i in range(0, len(names), size)]


def predict_command(extra):
    return (
        "OMP_NUM_THREADS={threads} spatialfair predict --config {input.cfg} "
        "--model {input.model} " + extra + " > {log} 2>&1"
    )


if not REPLICATED:
    for _ds in DATASETS:
        for _b, _batch in enumerate(scene_batches(_ds)):

            rule:
                name:
                    f"predict_{_ds}_{_b}".replace("-", "_")
                input:
                    model=f"{RESULTS}/{_ds}/{{run}}/model.pt",
                    images=[image_path(_ds, s) for s in _batch],
                    cfg=ancient(CONFIG_FILE),
                output:
                    classes=[f"{RESULTS}/{_ds}/{{run}}/predictions/{s}.tif" for s in _batch],
                    probs=[f"{RESULTS}/{_ds}/{{run}}/probabilities/{s}.tif" for s in _batch],
                params:
                    cfg=lambda w: section("prediction"),
                    resume=f"{RESULTS}/{_ds}/{{run}}/.resume/b{_b}",
                log:
                    f"logs/{_ds}/{{run}}/predict/batch{_b}.log",
                group:
                    "predict"
                conda:
                    ENV
                threads: 2
                resources:
                    mem_mb=4000,
                    runtime=120,
                    gpu=0,
                shell:
                    predict_command(
                        "--image {input.images} --out-classes {output.classes} "
                        "--out-probs {output.probs} --resume-dir {params.resume}"
                    )

else:

    rule predict:
        input:
            model=f"{RESULTS}/{{dataset}}/{{run}}/reps/{{rep}}/model.pt",
            index=f"{RESULTS}/{{dataset}}/tiles/tiles.gpkg",
            cfg=ancient(CONFIG_FILE),
        output:
            classes=directory(f"{RESULTS}/{{dataset}}/{{run}}/reps/{{rep}}/predictions"),
            probs=directory(f"{RESULTS}/{{dataset}}/{{run}}/reps/{{rep}}/probabilities"),
        params:
            cfg=lambda w: section("prediction"),
            column=lambda w: REPS[w.rep].column,
            tiles=lambda w, input: os.path.dirname(input.index),
            resume=f"{RESULTS}/{{dataset}}/{{run}}/reps/{{rep}}/.resume",
        log:
            "logs/{dataset}/{run}/reps/{rep}/predict.log",
        group:
            "predict"
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=120,
            gpu=0,
        shell:
            predict_command(
                "--held-out {params.tiles} {params.column} "
                "--out-classes-dir {output.classes} --out-probs-dir {output.probs} "
                "--resume-dir {params.resume}"
            )
