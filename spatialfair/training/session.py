"""One training run: the model, its strategy, the phases and epochs, and what a strategy sees.

:class:`Session` puts the pieces of the other modules together: it builds the model and the
strategy, enters the strategy's phases (:class:`~.optim.PhaseOptimiser`), runs the epochs,
scores each one (:class:`~.selection.Selection`), checkpoints it
(:class:`~.checkpoint.Checkpoints`) and writes the bundle. :class:`View` is the
:class:`~spatialfair.fairness.base.SessionView` a strategy gets when one of its phases starts.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..distributed import DistContext, Reducer, barrier
from ..models import build_model, count_parameters, unwrap
from .bundle import write_bundle
from .checkpoint import LOG, MODEL, Checkpoints, fingerprint, set_rng_state, write_log
from .loaders import RunData
from .optim import PhaseOptimiser, mixed_precision, seed_everything
from .plan import Plan, build_strategy
from .profile import Profile
from .selection import Selection, Validator, not_validated, tile_errors, validated_epochs

log = logging.getLogger("spatialfair.train")


def phase_at(phases: list[tuple[str, int]], epoch: int) -> tuple[int, int]:
    """(phase index, first epoch of that phase) of the 0-based global ``epoch``."""
    begin = 0
    for i, (_, n) in enumerate(phases):
        if epoch < begin + n:
            return i, begin
        begin += n
    return len(phases) - 1, begin - phases[-1][1]


class Session:
    """One training run: data, model, strategy, and the state a checkpoint carries.

    The strategy owns its phases (``Strategy.phases``) and what happens in them: which
    parameters train, the sampler, whether epochs are selected, and a one-off transition
    (``Strategy.on_phase_start``, given a :class:`View` of this session). Epochs are numbered
    across phases; a phase's transition runs when the phase is entered, also after a resume,
    so resumed and uninterrupted runs stay identical.
    """

    def __init__(
        self,
        plan: Plan,
        out_dir: Path,
        device: torch.device,
        ctx: DistContext,
        profile: Profile | None = None,
    ) -> None:
        self.plan, self.out_dir, self.device, self.ctx = plan, out_dir, device, ctx
        self.profile = prof = profile if profile is not None else Profile(device)
        self.reduce = Reducer(ctx.world_size) if ctx.distributed else None
        self.epochs = int(plan.tcfg.epochs)
        with prof.phase("build"):
            self.data = RunData(plan, device, ctx)
            self._build_model()
        self.selection = Selection(plan.ds.headline_metric)
        self.validator = Validator(plan, self.data.val_loader, device, self.autocast, self.reduce)
        self.checkpoints = Checkpoints(out_dir, self._fingerprint, ctx.is_main)
        prof.count(epochs=self.total, world_size=ctx.world_size, **self.data.facts())
        if ctx.is_main:
            log.info(
                "%s/%s: %s on %s, %d parameters, %d train / %d val tiles, %d regions (%s), "
                "%d epochs %s",
                plan.ds.name,
                plan.run.name,
                type(self.model).__name__,
                device,
                count_parameters(self.model),
                len(self.data.train_ds),
                len(self.data.val_ds),
                plan.num_regions,
                plan.partitioning,
                self.total,
                self.phases,
            )

    def _build_model(self) -> None:
        """The seeded network (and its initial weights), mixed precision and the strategy."""
        plan, device = self.plan, self.device
        seed_everything(plan.seed)
        self.model = build_model(plan.mcfg, len(plan.store.bands), plan.ds.num_classes).to(device)
        self.init_state = copy.deepcopy(self.model.state_dict())
        self.autocast, self.scaler, self.amp_dtype = mixed_precision(device, bool(plan.tcfg.amp))
        self.strategy = build_strategy(plan, self.epochs, self.data.steps_per_epoch)
        self.phases = self.strategy.phases(self.epochs)
        self.total = sum(n for _, n in self.phases)

    def _fingerprint(self) -> str:
        plan = self.plan
        return fingerprint(plan.settings, plan.run, plan.store, plan.seed, plan.split_column)

    # ------------------------------------------------------------------ phases
    def enter_phase(self, index: int, fresh: bool) -> None:
        """Set up phase ``index``; ``fresh``: let the strategy run its transition first."""
        kind, n = self.phases[index]
        if fresh and index > 0:
            with self.profile.phase("strategy"):
                self.strategy.on_phase_start(kind, View(self))
        params = self.strategy.trainable_parameters(kind, self.model)
        self.kind, self.phase_begin = kind, sum(m for _, m in self.phases[:index])
        tcfg = self.plan.tcfg
        self.phase_validated = validated_epochs(
            n, int(tcfg.validate_every), float(tcfg.validate_after)
        )
        self.optim = PhaseOptimiser(
            self.model,
            params,
            self.device,
            distributed=self.ctx.distributed,
            lr=float(tcfg.lr),
            weight_decay=float(tcfg.weight_decay),
            total_steps=n * self.data.steps_per_epoch,
            scaler=self.scaler,
            grad_clip=tcfg.grad_clip,
        )
        self.train_loader = self.data.train_loader(
            self.strategy.sampler_weights(kind, self.data.train_ds)
        )

    # ------------------------------------------------------------------ loop
    def run(self, resume: bool, stop_after_epoch: int | None) -> Path:
        """Train from scratch or the checkpoint; the bundle's path (the checkpoint's if stopped)."""
        with self.profile.phase("checkpoint"):
            start, ckpt = self._restore(resume)
        last = self.total if stop_after_epoch is None else min(self.total, int(stop_after_epoch))
        entered = -1
        for epoch in range(start, last):
            index, begin = phase_at(self.phases, epoch)
            if index != entered:
                with self.profile.phase("build"):
                    self.enter_phase(index, fresh=epoch == begin)
                if ckpt is not None and epoch > begin:
                    with self.profile.phase("checkpoint"):
                        self.optim.load_state_dict(ckpt)
                entered = index
            self._epoch(epoch)
        if last < self.total:
            return self.checkpoints.path
        with self.profile.phase("strategy"):
            self.strategy.on_training_end(View(self))
        with self.profile.phase("write"):
            return write_kept_model(self, start)

    def _restore(self, resume: bool) -> tuple[int, dict | None]:
        """(first epoch to run, checkpoint or None); loads the checkpoint's states."""
        if not resume:
            return 0, None
        ckpt = self.checkpoints.load()
        if ckpt is None:
            return 0, None
        self.model.load_state_dict(ckpt["model"])
        self.strategy.load_state_dict(ckpt["strategy"])
        set_rng_state(ckpt["rng"])
        self.selection.history, self.selection.best = ckpt["history"], ckpt["best"]
        start = int(ckpt["epoch"])
        if self.ctx.is_main:
            log.info("resuming %s from epoch %d of %d", self.checkpoints.path, start, self.total)
        return start, ckpt

    def _train_step(self, b: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One optimiser step on batch ``b``; (loss, summed pixel loss, labelled pixels)."""
        dev, strategy = self.device, self.strategy
        x = b["image"].to(dev, non_blocking=True)
        y = b["label"].to(dev, non_blocking=True)
        valid = b["valid"].to(dev, non_blocking=True)
        extra = {"tile_ids": b["tile_id"].to(dev)} if strategy.needs_tile_ids else {}
        with self.autocast() if self.autocast else nullcontext():
            logits = self.optim.ddp_model(x)
        logits = logits.float()
        pixel_loss = self.plan.loss(logits, y)
        loss = strategy.loss(
            pixel_loss,
            valid,
            b["regions"].to(dev, non_blocking=True),
            logits=logits,
            target=y,
            reduce=self.reduce,
            tile_regions=b["tile_regions"].to(dev, non_blocking=True),
            **extra,
        )
        self.optim.step(loss)
        with torch.no_grad():
            return torch.stack(
                [loss.detach().double(), pixel_loss.detach().double().sum(), valid.sum().double()]
            )

    def _epoch(self, epoch: int) -> None:
        """Train, validate and (rank 0) checkpoint the 0-based global ``epoch``."""
        t0, ctx, name, prof = time.perf_counter(), self.ctx, self.plan.run.name, self.profile
        # data order and augmentation follow the epoch within the phase: a phase that
        # restarts from the initial weights sees its data as ERM would
        self.train_loader.sampler.set_epoch(epoch - self.phase_begin)
        self.data.train_ds.set_epoch(epoch - self.phase_begin)
        if self.strategy.frozen_body(self.kind):
            self.optim.ddp_model.eval()  # frozen body: normalisation layers as at inference
        else:
            self.optim.ddp_model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        batches = tqdm(
            self.train_loader,
            desc=f"{name} epoch {epoch + 1}/{self.total}",
            unit="batch",
            leave=False,
            disable=None if ctx.is_main else True,
        )
        with prof.phase("compute"):  # getting the next batch counts as data
            for b in prof.iterate(batches, "data", count="steps"):
                sums += self._train_step(b)
            prof.sync()  # the epoch's queued kernels count as compute (CUDA)
        with prof.phase("strategy"):
            self.strategy.on_epoch_end(epoch, self.reduce)
        if self.reduce is not None:
            sums = self.reduce(sums)
        with prof.phase("selection"):
            self._validate(epoch, sums, t0)
        if ctx.is_main:
            self.checkpoints.save(epoch, self._state(), prof)
        barrier(ctx)
        prof.add(epochs_run=1)

    def _state(self) -> dict[str, Any]:
        """What a checkpoint carries besides the random-number states."""
        return {
            "model": self.model.state_dict(),
            **self.optim.state_dict(),
            "strategy": self.strategy.state_dict(),
            "history": self.selection.history,
            "best": self.selection.best,
        }

    def _validate(self, epoch: int, sums: torch.Tensor, t0: float) -> dict[str, Any]:
        """Score the epoch if the schedule says so, offer it to the selection, log its row."""
        plan = self.plan
        validated = epoch - self.phase_begin + 1 in self.phase_validated
        if validated:
            with self.profile.phase("validation"):
                conf = self.validator.confusion(unwrap(self.optim.ddp_model))
            val = self.validator.summarize(conf)
        else:  # training.validate_every / validate_after: a NaN row, nothing offered
            val = not_validated(plan.num_regions)
        columns = {
            "lr": self.optim.lr,
            "train_loss": float(sums[0] / (self.data.steps_per_epoch * self.ctx.world_size)),
            "train_ce": float(sums[1] / sums[2].clamp(min=1)),
            "selection": plan.selection,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if len(self.phases) > 1:
            columns["phase"] = self.kind
        if validated and self.strategy.selects(self.kind):
            self.selection.offer(epoch, val, self.model)
        row = self.selection.epoch_row(epoch, val, plan.region_names, **columns)
        if self.ctx.is_main:
            self._log_epoch(epoch, row, val if validated else None)
        return row

    def _log_epoch(self, epoch: int, row: Mapping[str, Any], val: Mapping | None) -> None:
        """One log line per epoch: its loss and, if it was validated (``val``), its scores."""
        name, loss = self.plan.run.name, row["train_loss"]
        if val is None:
            log.info("%s epoch %d/%d: loss %.4f, not validated", name, epoch + 1, self.total, loss)
            return
        log.info(
            "%s epoch %d/%d: loss %.4f, val %s %.4f, worst %s %.4f, score %.4f%s",
            name,
            epoch + 1,
            self.total,
            loss,
            self.plan.ds.headline_metric,
            val["headline"],
            val["worst_region"],
            val["worst"],
            val["score"],
            " (best)" if row["selected"] else "",
        )


def write_kept_model(session: Session, start: int) -> Path:
    """Write the session's kept model (rank 0) once every rank is done; its path."""
    model_path = session.out_dir / MODEL
    if session.ctx.is_main:
        history, best = session.selection.history, session.selection.best
        if start >= session.total and history:
            # Resumed a finished run: no epoch ran, so write the log again from the
            # checkpoint (a workflow manager deletes a job's outputs before re-running it).
            write_log(history, session.out_dir / LOG)
        if best["state"] is None:  # resumed a finished run without history: keep weights
            best = {
                **best,
                "state": session.model.state_dict(),
                "epoch": session.total,
                "metrics": {},
            }
        write_bundle(
            model_path,
            session.plan,
            best,
            norm=session.data.norm,
            strategy_state=session.strategy.state_dict(),
            amp_dtype=session.amp_dtype,
        )
    barrier(session.ctx)
    return model_path


class View:
    """What a strategy may do to the session when one of its phases starts (``SessionView``)."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self.model = session.model

    def restore_initial(self) -> None:
        """Load the network's initial weights."""
        self._s.model.load_state_dict(self._s.init_state)

    def restore_best(self) -> None:
        """Load the weights kept by model selection so far (if any)."""
        if self._s.selection.best["state"] is not None:
            self._s.model.load_state_dict(self._s.selection.best["state"])

    def reset_selection(self) -> None:
        """Selection restarts: no epoch is kept yet."""
        self._s.selection.reset()

    def training_tile_errors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, misclassified pixels, labelled pixels) of every training tile, unaugmented."""
        s = self._s
        ids, loader = s.data.training_tiles()
        errors, counts = tile_errors(s.model, loader, ids, s.device, s.autocast, s.reduce)
        return ids, errors, counts

    @property
    def device(self) -> torch.device:
        """Where the model is."""
        return self._s.device

    def val_tile_regions(self) -> np.ndarray:
        """Region of every validation tile (-1 for none)."""
        return self._s.data.val_tile_regions()

    def val_batches(self, indices: np.ndarray) -> DataLoader:
        """The validation tiles ``indices`` in order, whole on every rank."""
        return self._s.data.val_batches(indices)

    def val_summary(self, indices: np.ndarray) -> dict[str, Any]:
        """Validation summary of the current model on the tiles ``indices`` (every rank)."""
        s = self._s
        return s.validator.score(s.model, self.val_batches(indices))

    def kept(self) -> dict[str, Any]:
        """The model selection so far (``state``, ``epoch``, ``score``, ``worst``, ...)."""
        return dict(self._s.selection.best)

    def set_kept(self, kept: Mapping[str, Any]) -> None:
        """Make ``kept`` (from :meth:`kept`) the run's model selection."""
        self._s.selection.best = dict(kept)

    def keep_current(self) -> None:
        """The current weights become the kept model, scored on the whole validation set."""
        s = self._s
        val = s.validator.score(s.model)
        epoch = max(1, int(s.selection.best["epoch"]))
        s.selection.keep(epoch - 1, val, s.model)


__all__ = ["Session", "View", "phase_at", "write_kept_model"]
