# Evaluation on held-out tiles: per-region metrics for every partitioning, significance, fairness
# maps (GeoPackage with embedded QGIS styles, raster COG, PNGs), then all runs side by side.

# One evaluate rule per dataset, because the raster map's file name carries the dataset's
# headline metric (fairness_<metric>.tif) and all outputs of a rule must share its wildcards.
for _ds in DATASETS:
    _base = f"{RESULTS}/{_ds}"
    _metric = _dataset(_ds).headline_metric

    rule:
        name:
            f"evaluate_{_ds}".replace("-", "_")
        input:
            predictions=lambda w, _ds=_ds: prediction_paths(_ds, w.run, "predictions"),
            index=f"{_base}/tiles/tiles.gpkg",
            partitions=f"{_base}/partitions.gpkg",
            cfg=ancient(CONFIG_FILE),
        output:
            metrics=f"{_base}/{{run}}/fairness/metrics.json",
            by_region=f"{_base}/{{run}}/fairness/by_region.csv",
            gpkg=f"{_base}/{{run}}/fairness/fairness.gpkg",
            raster=f"{_base}/{{run}}/fairness/fairness_{_metric}.tif",
            map=report(
                f"{_base}/{{run}}/fairness/map.png",
                caption="../report/map.rst",
                category=_ds,
                subcategory="{run}",
                labels={"dataset": _ds, "run": "{run}", "figure": "fairness map"},
            ),
            bars=report(
                f"{_base}/{{run}}/fairness/regions.png",
                caption="../report/regions.rst",
                category=_ds,
                subcategory="{run}",
                labels={"dataset": _ds, "run": "{run}", "figure": "per-region bars"},
            ),
        params:
            cfg=section("evaluation", "seed", dataset=_ds),
            dataset=_ds,
            tiles=lambda w, input: os.path.dirname(input.index),
            predictions=lambda w, input: os.path.dirname(input.predictions[0]),
            out=lambda w, output: os.path.dirname(output.metrics),
        log:
            f"logs/{_ds}/{{run}}/evaluate.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        shell:
            "spatialfair evaluate --config {input.cfg} --dataset {params.dataset} "
            "--tiles {params.tiles} --partitions {input.partitions} "
            "--predictions {params.predictions} --out {params.out} > {log} 2>&1"


rule compare:
    input:
        metrics=lambda w: [
            f"{RESULTS}/{w.dataset}/{run}/fairness/metrics.json" for run in RUNS
        ],
        cfg=ancient(CONFIG_FILE),
    output:
        csv=report(
            f"{RESULTS}/{{dataset}}/comparison.csv",
            caption="../report/comparison_table.rst",
            category="{dataset}",
            subcategory="comparison",
            labels={"dataset": "{dataset}", "figure": "comparison table"},
        ),
        png=report(
            f"{RESULTS}/{{dataset}}/comparison.png",
            caption="../report/comparison.rst",
            category="{dataset}",
            subcategory="comparison",
            labels={"dataset": "{dataset}", "figure": "fairness vs accuracy"},
        ),
    params:
        results=lambda w: f"{RESULTS}/{w.dataset}",
        runs=lambda w: " ".join(RUNS),
    log:
        "logs/{dataset}/compare.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "spatialfair compare --config {input.cfg} --dataset {wildcards.dataset} "
        "--results {params.results} --runs {params.runs} "
        "--out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
