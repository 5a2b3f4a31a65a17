# Built-in demo data: for every dataset block with `demo: flood|crop`, a rule generates the
# scenes, labels and regions file into the dataset's folder when they are absent.
# Deterministic (seeded by the config's `seed`), so a re-run gives the same scenes.

for _ds in DATASETS:
    _task = config["datasets"][_ds].get("demo")
    if not _task:
        continue
    _dir = demo_dir(_ds)

    rule:
        name:
            f"demo_{_ds}"
        output:
            images=[f"{_dir}/images/{s}.tif" for s in scenes(_ds)],
            labels=[f"{_dir}/labels/{s}.tif" for s in scenes(_ds)],
            regions=f"{_dir}/regions.gpkg",
        log:
            f"logs/demo/{_ds}.log",
        localrule: True
        conda:
            ENV
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            task=_task,
            out=lambda w, output: os.path.dirname(output.regions),
            seed=config["seed"],
            size=config["datasets"][_ds]["demo_size"],
            n_test=config["datasets"][_ds]["demo_test_scenes"],
        shell:
            "spatialfair demo {params.task} --out {params.out} --seed {params.seed} "
            "--size {params.size} --test-scenes {params.n_test} > {log} 2>&1"
