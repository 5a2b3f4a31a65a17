# Prediction: one job per dataset and strategy run. The model is loaded once and the scenes
# stream through it one after another (window by window, bounded memory); per-scene jobs would
# spend more time starting Python and loading the model than predicting small chips.
# Outputs are the two folders, holding <scene>.tif for every scene of the dataset.


rule predict:
    input:
        model=f"{RESULTS}/{{dataset}}/{{run}}/model.pt",
        images=lambda w: [image_path(w.dataset, s) for s in scenes(w.dataset)],
        cfg=ancient(CONFIG_FILE),
    output:
        classes=directory(f"{RESULTS}/{{dataset}}/{{run}}/predictions"),
        probs=directory(f"{RESULTS}/{{dataset}}/{{run}}/probabilities"),
    params:
        cfg=lambda w: section("prediction"),
        classes=lambda w, output: [f"{output.classes}/{s}.tif" for s in scenes(w.dataset)],
        probs=lambda w, output: [f"{output.probs}/{s}.tif" for s in scenes(w.dataset)],
    log:
        "logs/{dataset}/{run}/predict.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    shell:
        "OMP_NUM_THREADS={threads} spatialfair predict --config {input.cfg} "
        "--model {input.model} --image {input.images} --out-classes {params.classes} "
        "--out-probs {params.probs} > {log} 2>&1"
