# spatialfair workflow: rasters + labels + regions -> tiles -> fair training per strategy ->
# georeferenced predictions -> per-region fairness maps -> strategy comparison.
#
# Run on the built-in demo:   snakemake --workflow-profile workflow/profiles/default
# On a SLURM cluster:         snakemake --workflow-profile workflow/profiles/slurm
# With your own datasets:     snakemake --workflow-profile workflow/profiles/default --configfile my.yaml
#
# The rules only wire stages together; all science lives in the `spatialfair` package.

from snakemake.utils import min_version

# The same lowest version as the `snakemake>=` requirement in pyproject.toml.
min_version("8.11.1")


# The shipped config.yaml (the demo) is used only when no --configfile is given, so that
# `--configfile my.yaml` runs exactly the user's datasets instead of merging them with the demo.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/batching.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/audit.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
    localrule: True


# After a failed run: one line per job that ran out of memory or time (docs/cluster.md).
onerror:
    explain_job_faults(log)
