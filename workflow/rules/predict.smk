# Prediction: one job per scene and run (the right grain for clusters: no per-tile jobs).


rule predict:
    input:
        model=rules.train.output.model,
        image=lambda w: image_path(w.dataset, w.scene),
        cfg=ancient(CONFIG_FILE),
    output:
        classes=f"{RESULTS}/{{dataset}}/{{run}}/predictions/{{scene}}.tif",
        probs=f"{RESULTS}/{{dataset}}/{{run}}/probabilities/{{scene}}.tif",
    params:
        cfg=lambda w: section("prediction"),
    log:
        "logs/{dataset}/{run}/predict_{scene}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0,
    shell:
        "OMP_NUM_THREADS={threads} spatialfair predict --config {input.cfg} "
        "--model {input.model} --image {input.image} --out-classes {output.classes} "
        "--out-probs {output.probs} > {log} 2>&1"
