# Training: one job per dataset and strategy run. On a GPU node the job trains on the GPU;
# with resources gpu > 1 it starts torchrun with one process per GPU (DDP).


rule train:
    input:
        index=rules.split.output.index,
        cfg=ancient(CONFIG_FILE),
    output:
        model=f"{RESULTS}/{{dataset}}/{{run}}/model.pt",
        log_csv=f"{RESULTS}/{{dataset}}/{{run}}/train_log.csv",
    params:
        cfg=lambda w: section("model", "training", "seed", "tiling", dataset=w.dataset)
        | {"run": RUNS[w.run].__dict__},
        tiles=lambda w, input: os.path.dirname(input.index),
        out=lambda w, output: os.path.dirname(output.model),
        launcher=lambda w, resources: (
            f"torchrun --standalone --nproc-per-node {resources.gpu} -m spatialfair.cli"
            if int(resources.get("gpu", 0)) > 1
            else "spatialfair"
        ),
    log:
        "logs/{dataset}/{run}/train.log",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} train --config {input.cfg} "
        "--dataset {wildcards.dataset} --strategy {wildcards.run} --tiles {params.tiles} "
        "--out {params.out} --resume > {log} 2>&1"
