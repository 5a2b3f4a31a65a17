"""spatialfair: fairness-aware segmentation of satellite rasters.

Tile GeoTIFFs, train crop and flood segmentation models with penalties that even out accuracy
across geographic regions, write georeferenced predictions, and measure and map the per-region
accuracy gap. Every stage is a plain function in a module with one job (see README,
"Architecture"); the Snakemake workflow and the ``spatialfair`` command only call them.
"""

__version__ = "0.1.0"
