# Validation, tiling, partitionings and spatial splits (the validated config file they read
# is written by common.smk when the workflow is read).
# - validate: one job per dataset checks every raster, the label values and the regions file
#   before any expensive work (`spatialfair validate`);
# - tile_batch: one job per scene (tiling.scenes_per_job: 1), so a cluster tiles scenes in
#   parallel, or per batch of scenes; each streams its scenes window by window into its own
#   folder tiles/parts/<batch>/ (temporary);
# - tile: one job per dataset gathers the parts into the tile store (tile index, store.json
#   last; chips hard-linked, not copied);
# - partition and split: one job per dataset.


rule validate:
    input:
        unpack(lambda w: dataset_inputs(w.dataset)),
        cfg=ancient(CONFIG_FILE),
    output:
        touch(str(LAYOUT.tiles("{dataset}") / "validated.ok")),
    log:
        "logs/{dataset}/validate.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        cfg=lambda w: section("tiling", "model", dataset=w.dataset),
    shell:
        "spatialfair validate --config {input.cfg} --dataset {wildcards.dataset} > {log} 2>&1"


rule tile_batch:
    input:
        images=lambda w: [image_path(w.dataset, s) for s in tile_batches(w.dataset)[w.batch]],
        labels=lambda w: [label_path(w.dataset, s) for s in tile_batches(w.dataset)[w.batch]],
        validated=rules.validate.output[0],
        cfg=ancient(CONFIG_FILE),
    output:
        parts=temp(directory(str(LAYOUT.tile_parts("{dataset}") / "{batch}"))),
    log:
        "logs/{dataset}/tile/{batch}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=lambda w: section("tiling", dataset=w.dataset),
        scenes=lambda w: tile_batches(w.dataset)[w.batch],
        out=lambda w: results_path("tiles", w.dataset),
    shell:
        "spatialfair tile --config {input.cfg} --dataset {wildcards.dataset} "
        "--scene {params.scenes:q} --parts {output.parts} --out {params.out} > {log} 2>&1"


rule tile:
    input:
        # every batch's folder of scene parts: chips, index columns, part.json
        parts=lambda w: [
            str(LAYOUT.tile_parts(w.dataset) / batch) for batch in tile_batches(w.dataset)
        ],
        cfg=ancient(CONFIG_FILE),
    output:
        store=results_path("store_meta", "{dataset}"),
        index=results_path("tile_grid", "{dataset}"),
    log:
        "logs/{dataset}/tile.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=lambda w: section("tiling", dataset=w.dataset),
        out=lambda w, output: os.path.dirname(output.store),
    shell:
        "spatialfair tile --config {input.cfg} --dataset {wildcards.dataset} --gather "
        "--out {params.out} > {log} 2>&1"


rule partition:
    input:
        store=rules.tile.output.store,
        index=rules.tile.output.index,
        regions=lambda w: regions_input(w.dataset),
        cfg=ancient(CONFIG_FILE),
    output:
        gpkg=results_path("partitions", "{dataset}"),
        regions=str(LAYOUT.tiles("{dataset}") / "regions.done"),
    log:
        "logs/{dataset}/partition.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=lambda w: section("partitions", "seed", dataset=w.dataset)
        | {"training_partitioning": config["training"]["partitioning"]},
        tiles=lambda w, input: os.path.dirname(input.store),
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
        index=results_path("tile_index", "{dataset}"),
    log:
        "logs/{dataset}/split.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=lambda w: section("split", "replicates", dataset=w.dataset),
        tiles=lambda w, input: os.path.dirname(input.store),
    shell:
        "spatialfair split --config {input.cfg} --dataset {wildcards.dataset} "
        "--tiles {params.tiles} --partitions {input.partitions} > {log} 2>&1"
