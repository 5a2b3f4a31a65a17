# Audit datasets: a dataset with `predictions:` (a map made elsewhere) is scored against its
# labels per region, without tiling or training, into results/<dataset>/audit/ (the same
# files as a run's fairness/ folder). all_outputs() in common.smk asks for audit_outputs(ds)
# instead of the training outputs for these datasets.


# One rule per audit dataset: the raster map's name carries the dataset's headline metric.
for _ds in [d for d in DATASETS if is_audit(d)]:
    _out = audit_outputs(_ds)

    rule:
        name:
            f"audit_{_ds}".replace("-", "_")
        input:
            unpack(lambda w, _ds=_ds: audit_inputs(_ds)),
            cfg=ancient(CONFIG_FILE),
        output:
            metrics=_out[0],
            by_region=_out[1],
            gpkg=_out[2],
            raster=_out[3],
            map=report(
                _out[4],
                caption="../report/map.rst",
                category=_ds,
                subcategory="audit",
                labels={"dataset": _ds, "run": "audit", "figure": "fairness map"},
            ),
            bars=report(
                _out[5],
                caption="../report/regions.rst",
                category=_ds,
                subcategory="audit",
                labels={"dataset": _ds, "run": "audit", "figure": "per-region bars"},
            ),
        log:
            f"logs/{_ds}/audit.log",
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            cfg=section("evaluation", "partitions", "seed", dataset=_ds),
            dataset=_ds,
            out=lambda w, output: os.path.dirname(output.metrics),
        shell:
            "spatialfair audit --config {input.cfg} --dataset {params.dataset} "
            "--out {params.out} > {log} 2>&1"
