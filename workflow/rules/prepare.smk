# Tiling, partitionings and spatial splits: one job each per dataset (the validated config
# file they read is written by common.smk when the workflow is read).
# Tiling streams scene by scene, window by window, so one job scales to many scenes without
# one job per tile.


rule tile:
    input:
        unpack(lambda w: dataset_inputs(w.dataset)),
        cfg=ancient(CONFIG_FILE),
    output:
        store=f"{RESULTS}/{{dataset}}/tiles/store.json",
        index=f"{RESULTS}/{{dataset}}/tiles/tile_grid.gpkg",
    params:
        cfg=lambda w: section("tiling", dataset=w.dataset),
        out=lambda w, output: os.path.dirname(output.store),
    log:
        "logs/{dataset}/tile.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "spatialfair tile --config {input.cfg} --dataset {wildcards.dataset} "
        "--out {params.out} > {log} 2>&1"


rule partition:
    input:
        store=rules.tile.output.store,
        index=rules.tile.output.index,
        regions=lambda w: regions_input(w.dataset),
        cfg=ancient(CONFIG_FILE),
    output:
        gpkg=f"{RESULTS}/{{dataset}}/partitions.gpkg",
        regions=f"{RESULTS}/{{dataset}}/tiles/regions.done",
    params:
        cfg=lambda w: section("partitions", "seed", dataset=w.dataset)
        | {"training_partitioning": config["training"]["partitioning"]},
        tiles=lambda w, input: os.path.dirname(input.store),
    log:
        "logs/{dataset}/partition.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "spatialfair partition --config {input.cfg} --dataset {wildcards.dataset} "
        "--tiles {params.tiles} --out {output.gpkg} > {log} 2>&1 && touch {output.regions}"


rule split:
    input:
        store=rules.tile.output.store,
        partitions=rules.partition.output.gpkg,
        regions=rules.partition.output.regions,
        cfg=ancient(CONFIG_FILE),
    output:
        index=f"{RESULTS}/{{dataset}}/tiles/tiles.gpkg",
    params:
        cfg=lambda w: section("split", "replicates", dataset=w.dataset),
        tiles=lambda w, input: os.path.dirname(input.store),
    log:
        "logs/{dataset}/split.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "spatialfair split --config {input.cfg} --dataset {wildcards.dataset} "
        "--tiles {params.tiles} --partitions {input.partitions} > {log} 2>&1"
