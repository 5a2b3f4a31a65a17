"""Whole-scene prediction behind :mod:`spatialfair.predict`, one concern per module.

- ``windows``: window offsets, blending weights, the padding warning and the GDAL cache size.
- ``bundle``: what a model bundle requires of an image (bands by name, stride, normalisation)
  and how its outputs are described (positive class, probability bands).
- ``blend``: the model over a scene's windows, strip by strip, and the blended blocks written.
- ``scene``: :func:`~.scene.predict_scene`, one scene checked, predicted and published.

The stage over many scenes (one model loaded once, resumable per scene) is
:mod:`spatialfair.predict`, which also re-exports the public names above; import them from
there.
"""

__all__: list[str] = []  # the modules are documented one by one (.ci/api-docs.sh)
