# Evaluation on held-out tiles: per-region metrics for every partitioning, significance, fairness
# maps (GeoPackage with embedded QGIS styles, raster COG, PNGs), then all runs side by side.

# One evaluate rule per dataset, because the raster map's file name carries the dataset's
# headline metric (fairness_<metric>.vrt) and all outputs of a rule must share its wildcards.


if not REPLICATED:
    for _ds in DATASETS:
        _metric = _dataset(_ds).headline_metric

        rule:
            name:
                f"evaluate_{_ds}".replace("-", "_")
            input:
                predictions=lambda w, _ds=_ds: results_path("predictions", _ds, w.run),
                index=results_path("tile_index", _ds),
                partitions=results_path("partitions", _ds),
                cfg=ancient(CONFIG_FILE),
            output:
                **fairness_report_outputs(_ds, _metric),
            log:
                f"logs/{_ds}/{{run}}/evaluate.log",
            conda:
                ENV
            threads: 1
            resources:
                mem_mb=4000,
                runtime=60,
            params:
                cfg=evaluation_section("seed", dataset=_ds),
                dataset=_ds,
                tiles=lambda w, input: os.path.dirname(input.index),
                out=lambda w, output: os.path.dirname(output.metrics),
            shell:
                "spatialfair evaluate --config {input.cfg} --dataset {params.dataset} "
                "--tiles {params.tiles} --partitions {input.partitions} "
                "--predictions {input.predictions} --out {params.out} > {log} 2>&1"

else:

    # one job per seed (its folds pooled); with replicates.one_job one per run, every seed
    rule evaluate_seed:
        input:
            predictions=evaluate_seed_predictions,
            index=results_path("tile_index", "{dataset}"),
            partitions=results_path("partitions", "{dataset}"),
            cfg=ancient(CONFIG_FILE),
        output:
            **evaluate_seed_outputs(),
        log:
            job_log("evaluate", "reps/s{seed}/"),
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60 * SEEDS_PER_JOB,
        params:
            cfg=lambda w: evaluation_section("seed", "replicates", dataset=w.dataset),
            command=evaluate_seed_command,
        shell:
            "{params.command} > {log} 2>&1"

    for _ds in DATASETS:

        rule:
            name:
                f"aggregate_{_ds}".replace("-", "_")
            input:
                seeds=lambda w, _ds=_ds: seed_metrics_paths(_ds, w.run),
                store=results_path("store_meta", _ds),
                partitions=results_path("partitions", _ds),
            output:
                **fairness_report_outputs(_ds, _dataset(_ds).headline_metric),
            log:
                f"logs/{_ds}/{{run}}/aggregate.log",
            localrule: True
            conda:
                ENV
            threads: 1
            resources:
                mem_mb=2000,
                runtime=30,
            params:
                run_dir=lambda w, _ds=_ds: results_path("run", _ds, w.run),
                tiles=lambda w, input: os.path.dirname(input.store),
                out=lambda w, output: os.path.dirname(output.metrics),
            shell:
                "spatialfair aggregate --run-dir {params.run_dir} --tiles {params.tiles} "
                "--partitions {input.partitions} --out {params.out} > {log} 2>&1"


rule compare:
    input:
        metrics=compare_inputs,
        cfg=ancient(CONFIG_FILE),
    output:
        csv=report(
            results_path("comparison", "{dataset}", ".csv"),
            caption="../report/comparison_table.rst",
            category="{dataset}",
            subcategory="comparison",
            labels={"dataset": "{dataset}", "figure": "comparison table"},
        ),
        png=report(
            results_path("comparison", "{dataset}", ".png"),
            caption="../report/comparison.rst",
            category="{dataset}",
            subcategory="comparison",
            labels={"dataset": "{dataset}", "figure": "fairness vs accuracy"},
        ),
    log:
        "logs/{dataset}/compare.log",
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        results=lambda w: results_path("dataset", w.dataset),
        runs=lambda w: " ".join(RUNS),
        # the comparison's own settings: a new primary or alpha re-runs it (cfg is ancient)
        cfg=lambda w: section("evaluation", dataset=w.dataset),
    shell:
        "spatialfair compare --config {input.cfg} --dataset {wildcards.dataset} "
        "--results {params.results} --runs {params.runs} "
        "--out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
