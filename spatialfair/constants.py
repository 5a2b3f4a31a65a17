"""Values shared by every stage of the pipeline."""

from __future__ import annotations

#: Label and prediction value meaning "no label" / "no prediction" in every internal raster.
IGNORE_INDEX = 255
