# Prediction: one job per strategy run (and per replicate; with replicates.one_job one per
# run, its replicates in one process), so start-up (Python, torch, the model: 2-3 s) is paid
# once per job, not per scene, and every job asks the scheduler for one job's resources. The job streams each scene window by window (bounded memory); a re-run after
# an interruption skips the scenes it finished (kept in .resume/ until the job is done).
# A replicate predicts only the scenes holding its fold's test tiles, the only ones its
# evaluation reads.


rule predict:
    input:
        model=predict_models,
        index=results_path("tile_index", "{dataset}"),
        images=lambda w: dataset_inputs(w.dataset)["images"],
        cfg=ancient(CONFIG_FILE),
    output:
        **predict_outputs(),
    log:
        job_log("predict", LOG_REP),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120 * REPS_PER_JOB,
        gpu=0,
    params:
        cfg=lambda w: section("prediction"),
        command=predict_command,
    shell:
        "OMP_NUM_THREADS={threads} {params.command} > {log} 2>&1"


# Mapping: the unlabelled scenes of a dataset (`map_images`), predicted by each run's model
# (with replicates, the `map_replicate` one) into <run>/map/ and <run>/map_probabilities/.
# One job per run, like predict; the job checks every scene (bands, nodata, CRS) against the
# training images before it loads the model. Nothing downstream reads the maps.


rule predict_map:
    input:
        model=lambda w: results_path("model", w.dataset, w.run, map_rep(w.dataset)),
        images=lambda w: map_images(w.dataset),
        cfg=ancient(CONFIG_FILE),
    output:
        classes=directory(results_path("map", "{dataset}", "{run}")),
        probs=directory(results_path("map_probabilities", "{dataset}", "{run}")),
    log:
        "logs/{dataset}/{run}/predict_map.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    params:
        cfg=lambda w: section("prediction") | {"map": map_section(w.dataset)},
        resume=lambda w, output: os.path.join(os.path.dirname(output.classes), ".resume-map"),
    shell:
        "OMP_NUM_THREADS={threads} spatialfair predict --config {input.cfg} "
        "--model {input.model} --map {wildcards.dataset} "
        "--out-classes-dir {output.classes} --out-probs-dir {output.probs} "
        "--resume-dir {params.resume} > {log} 2>&1"
