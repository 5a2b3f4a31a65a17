"""The steps of ``spatialfair compare`` (:mod:`spatialfair.compare` runs them in this order).

- :mod:`~spatialfair.comparison.runs`: read each run's per-seed metrics.json into rows.
- :mod:`~spatialfair.comparison.regions`: the fixed region set (from labels) and the
  endpoints over it (``worst_fixed``, ``difference_fixed``).
- :mod:`~spatialfair.comparison.selection`: a strength sweep's value chosen on validation
  (the ``<strategy>:selected`` rows).
- :mod:`~spatialfair.comparison.table`: the verdict table (means and intervals over seeds,
  paired differences to ERM, Holm, MDE) and the Pareto front.
- :mod:`~spatialfair.comparison.verdicts`: one row's verdict in words.
- :mod:`~spatialfair.comparison.figure`: the figure ``comparison.png``.
- :mod:`~spatialfair.comparison.columns`: the columns of ``comparison.csv`` and the measures.
"""

# Nothing is imported here: use the modules by name, or the stage's names from
# spatialfair.compare. (An empty __all__ also keeps pdoc from listing each module twice.)
__all__: list[str] = []
