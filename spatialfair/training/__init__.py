"""The training loop behind :func:`spatialfair.train.train`, one concern per module.

- ``plan``: :class:`~.plan.Plan`, the settings, store and region checks and the one count of
  labelled training pixels, before any model is built.
- ``loaders``: :class:`~.loaders.RunData`, normalisation, datasets and loaders.
- ``optim``: seeds, deterministic kernels, mixed precision, and the optimiser, schedule and
  scaler of one phase (:class:`~.optim.PhaseOptimiser`).
- ``selection``: validation passes, the selection score and the kept epoch
  (:class:`~.selection.Selection`).
- ``checkpoint``: the per-epoch checkpoint, its fingerprint and resume.
- ``bundle``: writing ``model.pt``.
- ``profile``: where a run's wall time goes, by phase (``train_profile.json``).
- ``session``: :class:`~.session.Session`, the phases and epochs that use all of the above, and
  the :class:`~.session.View` a strategy gets between phases.

Import the public names from :mod:`spatialfair.train`; these modules are its parts.
"""

__all__: list[str] = []  # the modules are documented one by one (.ci/api-docs.sh)
