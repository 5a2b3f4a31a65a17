"""Values shared by every stage of the pipeline."""

from __future__ import annotations

#: Label and prediction value meaning "no label" / "no prediction" in every internal raster.
IGNORE_INDEX = 255

#: Infix of the built-in demo's independent test scenes (``flood_test_00``, ...): a demo dataset
#: with ``demo_test_scenes`` holds these scenes out as its fixed test set.
DEMO_TEST_INFIX = "_test_"
