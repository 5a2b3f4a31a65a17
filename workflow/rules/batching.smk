# One job per replicate, or (replicates.one_job) one job per strategy run and stage: the train,
# predict and evaluate_seed rules take their outputs, inputs and commands from here. A run's
# jobs then train its replicates with `spatialfair train --replicates`, and predict and
# evaluate them with `spatialfair batch` (one process for every replicate or seed: start-up
# paid once); each replicate's files are those its own job writes.

import shlex

# How many replicates (predict) or seeds (evaluate) one job handles: time limits scale with it.
REPS_PER_JOB = len(REPS) if ONE_JOB else 1
SEEDS_PER_JOB = len(SEEDS) if ONE_JOB else 1


def replicates_trained():
    """The replicates section as training depends on it (one_job only groups the jobs)."""
    return {k: v for k, v in config["replicates"].items() if k != "one_job"}


def train_outputs():
    """Model and log of one replicate, or (one_job) of every replicate of the run."""
    if not ONE_JOB:
        return dict(
            model=results_path("model", "{dataset}", "{run}", REP),
            log_csv=results_path("train_log", "{dataset}", "{run}", REP),
        )
    return dict(
        models=[results_path("model", "{dataset}", "{run}", rep) for rep in REPS],
        log_csvs=[results_path("train_log", "{dataset}", "{run}", rep) for rep in REPS],
    )


def replicate_args(w):
    """What a training job trains: --seed/--split-column of its replicate, --replicates of
    every replicate (replicates.one_job), nothing for an unreplicated run."""
    if ONE_JOB:
        return "--replicates " + " ".join(REPS)
    if not REPLICATED:
        return ""
    rep = REPS[w.rep]
    return f"--seed {rep.seed} --split-column {rep.column}"


def job_log(stage, per_replicate):
    """A job's log: per replicate (or per seed), or (one_job) one per run and stage."""
    return f"logs/{{dataset}}/{{run}}/{'' if ONE_JOB else per_replicate}{stage}.log"


def command_line(lines):
    """`spatialfair <line>` for one command line, `spatialfair batch '<line>' ...` for more."""
    if len(lines) == 1:
        return f"spatialfair {lines[0]}"
    return "spatialfair batch " + " ".join(shlex.quote(line) for line in lines)


# ------------------------------------------------------------------------- predict
def predict_outputs():
    """Class and probability folders of one replicate, or (one_job) of every replicate."""
    reps = list(REPS) if ONE_JOB else [REP]
    folders = {
        key: [directory(results_path(kind, "{dataset}", "{run}", rep)) for rep in reps]
        for key, kind in (("classes", "predictions"), ("probs", "probabilities"))
    }
    return folders if ONE_JOB else {key: paths[0] for key, paths in folders.items()}


def predict_models(w):
    """The model(s) a predict job uses."""
    reps = list(REPS) if ONE_JOB else [w.get("rep")]
    return [results_path("model", w.dataset, w.run, rep) for rep in reps]


def predict_command(w, input, output):
    """Predict each model's held-out scenes of the store (a replicate: its fold's)."""
    tiles = os.path.dirname(input.index)
    reps = list(REPS) if ONE_JOB else [w.get("rep")]
    classes = output.classes if ONE_JOB else [output.classes]
    probs = output.probs if ONE_JOB else [output.probs]
    lines = []
    for rep, model, cls, prob in zip(reps, input.model, classes, probs):
        held_out = f"--held-out-column {REPS[rep].column} " if rep else ""
        resume = os.path.join(os.path.dirname(cls), ".resume")
        lines.append(
            f"predict --config {input.cfg} --model {model} --from-store {tiles} {held_out}"
            f"--out-classes-dir {cls} --out-probs-dir {prob} --resume-dir {resume}"
        )
    return command_line(lines)


# ------------------------------------------------------------------------- evaluate_seed
def evaluate_seed_outputs():
    """metrics.json and by_region.csv of one seed, or (one_job) of every seed of the run."""
    seeds = SEEDS if ONE_JOB else ["{seed}"]
    files = {
        key: [str(LAYOUT.fairness("{dataset}", "{run}", seed) / name) for seed in seeds]
        for key, name in (("metrics", "metrics.json"), ("by_region", "by_region.csv"))
    }
    return files if ONE_JOB else {key: paths[0] for key, paths in files.items()}


def job_seeds(w):
    return SEEDS if ONE_JOB else [int(w.seed)]


def evaluate_seed_predictions(w):
    """The prediction folders of every fold of the job's seed(s)."""
    seeds = job_seeds(w)
    return [
        results_path("predictions", w.dataset, w.run, r.id)
        for r in REPS.values()
        if r.seed in seeds
    ]


def evaluate_seed_command(w, input, output):
    """Evaluate each seed of the job, its folds pooled (--fold COLUMN FOLDER per fold)."""
    tiles = os.path.dirname(input.index)
    outs = output.metrics if ONE_JOB else [output.metrics]
    lines = []
    for seed, metrics in zip(job_seeds(w), outs):
        folds = " ".join(
            f"--fold {r.column} {results_path('predictions', w.dataset, w.run, r.id)}"
            for r in REPS.values()
            if r.seed == seed
        )
        lines.append(
            f"evaluate --config {input.cfg} --dataset {w.dataset} --tiles {tiles} "
            f"--partitions {input.partitions} {folds} --seed {seed} --run {w.run} --no-maps "
            f"--out {os.path.dirname(metrics)}"
        )
    return command_line(lines)
