# Prediction: one job per scene and strategy run, as DESIGN.md asks, so a cluster predicts
# many scenes at once. Each job loads the model and streams its scene window by window
# (bounded memory). Locally a job costs about 2-3 s of start-up (Python, torch, the model);
# on SLURM the jobs carry `group: "predict"`, and the SLURM profile bundles them
# (`group-components`) so that thousands of small chips do not become thousands of
# sbatch submissions. `spatialfair predict --image a.tif b.tif ...` still predicts many
# scenes with one model load for scripts and other schedulers.


rule predict:
    input:
        model=f"{RESULTS}/{{dataset}}/{{run}}/model.pt",
        image=lambda w: image_path(w.dataset, w.scene),
        cfg=ancient(CONFIG_FILE),
    output:
        classes=f"{RESULTS}/{{dataset}}/{{run}}/predictions/{{scene}}.tif",
        probs=f"{RESULTS}/{{dataset}}/{{run}}/probabilities/{{scene}}.tif",
    params:
        cfg=lambda w: section("prediction"),
    log:
        "logs/{dataset}/{run}/predict/{scene}.log",
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
        "OMP_NUM_THREADS={threads} spatialfair predict --config {input.cfg} "
        "--model {input.model} --image {input.image} --out-classes {output.classes} "
        "--out-probs {output.probs} > {log} 2>&1"
