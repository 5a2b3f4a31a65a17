# Training: one job per dataset, strategy run and replicate (seed, fold). On a GPU node the
# job trains on the GPU; with resources gpu > 1 it starts torchrun with one process per GPU.
# torch uses the job's threads (OMP_NUM_THREADS and --threads); each job writes
# train_profile.json beside its model (where its wall time went, docs/training.md).
# With replicates.one_job a job trains all replicates of its run, one after another in one
# process (same results; start-up paid once); its time limit grows with their number.
# Trainings go first (priority): they are the long jobs, and a long one started last would
# leave the other cores idle at the end of a run.


rule train:
    input:
        index=rules.split.output.index,
        cfg=ancient(CONFIG_FILE),
    output:
        **train_outputs(),
    log:
        job_log("train", LOG_REP),
    priority: 1
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240 * REPS_PER_JOB,
        gpu=0,
    params:
        cfg=lambda w: section("model", "training", "seed", "tiling", dataset=w.dataset)
        | {"run": RUNS[w.run].__dict__, "replicates": replicates_trained()},
        replicate=replicate_args,
        tiles=lambda w, input: os.path.dirname(input.index),
        out=lambda w: results_path("replicate", w.dataset, w.run, None if ONE_JOB else w.get("rep")),
        launcher=lambda w, resources: (
            f"torchrun --standalone --nproc-per-node {resources.gpu} -m spatialfair.cli"
            if int(resources.get("gpu", 0)) > 1
            else "spatialfair"
        ),
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train --config {input.cfg} "
        "--dataset {wildcards.dataset} --strategy {wildcards.run} --tiles {params.tiles} "
        "--out {params.out} {params.replicate} --threads {threads} --resume > {log} 2>&1"
