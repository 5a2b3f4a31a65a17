"""The tile store: the folder every stage after tiling reads through.

A store holds ``store.json`` (metadata, written last, marks a complete store), the tile index
(``tile_grid.gpkg``, then ``tiles.gpkg`` once split) and per scene the raw chips
(``<scene>.image.bin``, ``<scene>.label.bin``, ``<scene>.regions.bin``). The layout is
described in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from .atomic import atomic_path, atomic_write_text
from .errors import InputError, StateError

if TYPE_CHECKING:  # imported where used: reading chips (training) needs neither
    import geopandas as gpd
    from rasterio.crs import CRS

STORE_FORMAT = "spatialfair-tiles/1"
#: Columns every tile index has (``count_<k>`` per class follow ``n_valid``).
BASE_COLUMNS = (
    "tile_id",
    "scene",
    "store_index",
    "row_off",
    "col_off",
    "height",
    "width",
    "valid_fraction",
    "n_valid",
)


@contextlib.contextmanager
def staging() -> Iterator[list[tuple[Path, Path]]]:
    """Collect the (temporary, final) paths of a store being written; on any failure inside
    the block, remove the temporary files and re-raise.

    Yields:
        The list to append (temporary, final) pairs to, for :func:`publish_store`.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        yield staged
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise


def stage_index(out_dir: Path, index: gpd.GeoDataFrame) -> tuple[Path, Path]:
    """Write the tile index under a temporary name in ``out_dir``.

    Args:
        out_dir: The store folder.
        index: The tile index (layer ``tiles``).

    Returns:
        (temporary path, final path ``tile_grid.gpkg``), for :func:`publish_store`.
    """
    grid_final = out_dir / "tile_grid.gpkg"
    grid_tmp = grid_final.with_name(f".tile_grid.staged-{os.getpid()}.gpkg")
    from .io import write_layers

    write_layers({"tiles": index}, grid_tmp)
    return grid_tmp, grid_final


def publish_store(out_dir: Path, staged: list[tuple[Path, Path]], meta: dict) -> None:
    """Replace the store in ``out_dir`` by the staged files; ``store.json`` goes last.

    Files that describe the previous tiles (``tiles.gpkg``, ``*.regions.bin``, chips of scenes no
    longer in the store) are removed first.

    Args:
        out_dir: The store folder.
        staged: (temporary, final) paths to move into place.
        meta: The content of ``store.json``.
    """
    old_scenes: Iterable[str] = ()
    store_json = out_dir / "store.json"
    if store_json.exists():
        with contextlib.suppress(ValueError, OSError):
            old_scenes = json.loads(store_json.read_text()).get("scenes", {})
        store_json.unlink()
    for stale in [out_dir / "tiles.gpkg", *out_dir.glob("*.regions.bin")]:
        stale.unlink(missing_ok=True)
    for scene in set(old_scenes) - set(meta["scenes"]):
        for suffix in ("image", "label"):
            (out_dir / f"{scene}.{suffix}.bin").unlink(missing_ok=True)
    for tmp, final in staged:
        os.replace(tmp, final)
    atomic_write_text(store_json, strict_json(meta))


def strict_json(meta: Any) -> str:
    """``meta`` as strict JSON text: NaN and infinite floats become ``null``.

    Python's ``json`` would write a bare ``NaN`` (a NaN nodata value), which is not JSON: ``jq``
    and most other readers reject it. ``null`` means 'no value' to every reader; an old store
    written with ``NaN`` still loads (``json.loads`` accepts it).

    Args:
        meta: A JSON-able document (dicts, lists, numbers, strings, None).

    Returns:
        The indented JSON text.
    """

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(meta), indent=1, allow_nan=False)


def _meta_field(key: str, convert: Callable[[Any], Any], doc: str) -> property:
    """A read-only property giving ``convert(self.meta[key])``."""
    return property(lambda self: convert(self.meta[key]), doc=doc)


class TileStore:
    """A tile store folder written by :func:`~spatialfair.tiling.tile_dataset`.

    Args:
        path: The store folder (holding ``store.json``).

    Raises:
        InputError: If the folder holds no complete store of this version.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.exists():
            raise InputError(
                self.path,
                "no tile store here (store.json is missing)",
                "run `spatialfair tile` for this dataset first",
            )
        self.meta: dict = json.loads(meta_path.read_text())
        if self.meta.get("format") != STORE_FORMAT:
            raise InputError(
                meta_path,
                f"unknown store format {self.meta.get('format')!r}",
                f"re-run `spatialfair tile` (this version writes {STORE_FORMAT})",
            )
        self._index: gpd.GeoDataFrame | None = None

    scenes = _meta_field("scenes", list, "Scene names (list of str), in tiling order.")
    tile_size = _meta_field("tile_size", int, "Side of every tile in pixels (int).")
    overlap = _meta_field("overlap", int, "Pixels shared by neighbouring tiles (int).")
    classes = _meta_field("classes", list, "Class names (list of str); the id is the position.")
    num_classes = _meta_field("classes", len, "Number of classes (int).")
    bands = _meta_field("bands", list, "Band names of the image chips (list of str).")
    ignore_index = _meta_field(
        "ignore_index", int, "Label value of pixels without a usable label (int)."
    )

    @property
    def stride(self) -> int:
        """Pixels between the origins of neighbouring tiles."""
        return self.tile_size - self.overlap

    @property
    def study_crs(self) -> CRS:
        """CRS of the tile index (the scenes' CRS, or EPSG:4326 when they differ)."""
        from rasterio.crs import CRS

        return CRS.from_user_input(self.meta["study_crs"])

    def n_tiles(self, scene: str) -> int:
        """Number of tiles stored for ``scene``.

        Args:
            scene: A scene name (image file stem).

        Returns:
            The number of tiles.

        Raises:
            InputError: If the store has no such scene.
        """
        return int(self._scene(scene)["n_tiles"])

    def _scene(self, scene: str) -> dict:
        try:
            return self.meta["scenes"][scene]
        except KeyError:
            raise InputError(
                self.path,
                f"scene {scene!r} is not in this tile store (scenes: {self.scenes})",
                "use one of its scenes, or re-run `spatialfair tile` with this "
                "scene among the images",
            ) from None

    def _memmap(self, scene: str, kind: str, dtype, shape_tail: tuple[int, ...]) -> np.ndarray:
        n = self.n_tiles(scene)
        path = self.path / f"{scene}.{kind}.bin"
        if not path.exists():
            raise StateError(
                f"{path} is missing: "
                + (
                    "run `spatialfair partition` first"
                    if kind == "regions"
                    else "the store is damaged; re-run `spatialfair tile`"
                )
            )
        expected = n * int(np.prod(shape_tail)) * np.dtype(dtype).itemsize
        if path.stat().st_size != expected:
            raise InputError(
                path,
                f"size {path.stat().st_size} B, expected {expected} B for {n} tiles",
                "the store is damaged; re-run `spatialfair tile`",
            )
        if n == 0:
            return np.empty((0, *shape_tail), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(n, *shape_tail))

    def images(self, scene: str) -> np.ndarray:
        """Read-only image chips of ``scene`` in the image data type.

        Args:
            scene: A scene name.

        Returns:
            A (n_tiles, bands, T, T) memory map.

        Raises:
            InputError: If the scene is unknown or its chip file has the wrong size.
            StateError: If the chip file is missing.
        """
        t = self.tile_size
        return self._memmap(scene, "image", self.meta["dtype"], (len(self.bands), t, t))

    def labels(self, scene: str) -> np.ndarray:
        """Read-only uint8 label chips of ``scene``, (n_tiles, T, T).

        ``ignore_index`` marks pixels without a usable label. Errors as for :meth:`images`.

        Args:
            scene: A scene name.

        Returns:
            A memory map of the chips.
        """
        t = self.tile_size
        return self._memmap(scene, "label", np.uint8, (t, t))

    def regions(self, scene: str) -> np.ndarray:
        """Read-only int16 region ids of the training partitioning (-1 = none), per pixel.

        Args:
            scene: A scene name.

        Returns:
            A (n_tiles, T, T) memory map.

        Raises:
            StateError: If the partition stage has not written the file yet (other errors as
                for :meth:`images`).
        """
        t = self.tile_size
        return self._memmap(scene, "regions", np.int16, (t, t))

    @property
    def index_path(self) -> Path:
        """``tiles.gpkg`` when the split step wrote it, else ``tile_grid.gpkg``."""
        final = self.path / "tiles.gpkg"
        return final if final.exists() else self.path / "tile_grid.gpkg"

    @property
    def index(self) -> gpd.GeoDataFrame:
        """The tile index (layer ``tiles``), read once."""
        if self._index is None:
            import geopandas as gpd

            self._index = gpd.read_file(self.index_path, layer="tiles", engine="pyogrio")
        return self._index

    def write_index(self, index: gpd.GeoDataFrame) -> Path:
        """Write the final index ``tiles.gpkg`` atomically (the split stage does).

        Args:
            index: The tile index with at least the base columns, in the study CRS.

        Returns:
            The path of ``tiles.gpkg``.

        Raises:
            InputError: If columns are missing or the index is in another CRS.
        """
        from rasterio.crs import CRS

        from .io import write_layers

        missing = [c for c in BASE_COLUMNS if c not in index.columns]
        if missing:
            raise InputError(
                self.path / "tiles.gpkg",
                f"the tile index lacks columns {missing}",
                "pass the store's index with its columns (TileStore.index)",
            )
        if index.crs is None or CRS.from_user_input(index.crs) != self.study_crs:
            raise InputError(
                self.path / "tiles.gpkg",
                f"tile index CRS {index.crs} is not the store's study CRS {self.meta['study_crs']}",
                "keep the index in the study CRS (TileStore.study_crs)",
            )
        path = self.path / "tiles.gpkg"
        write_layers({"tiles": index}, path)
        self._index = None
        return path

    @contextlib.contextmanager
    def regions_writer(self, scene: str) -> Iterator[RegionsWriter]:
        """Append region-id chips of ``scene`` in store order.

        The file appears only when all ``n_tiles`` chips were written.

        Args:
            scene: A scene name.

        Yields:
            A :class:`RegionsWriter`.
        """
        final = self.path / f"{scene}.regions.bin"
        with atomic_path(final) as tmp, open(tmp, "wb") as f:
            writer = RegionsWriter(f, self.n_tiles(scene), self.tile_size)
            yield writer
            writer.finish()

    def write_regions(
        self, scene: str, chunks: Iterable[np.ndarray], *, partitioning: str | None = None
    ) -> Path:
        """Write ``<scene>.regions.bin`` from (k, T, T) chunks in store order.

        Args:
            scene: A scene name.
            chunks: Region-id chips, in store order, ``n_tiles`` in all.
            partitioning: When given, recorded as ``regions_partitioning`` in store.json.

        Returns:
            The path of the written file.
        """
        with self.regions_writer(scene) as w:
            for chunk in chunks:
                w.write(chunk)
        if partitioning is not None and self.meta.get("regions_partitioning") != partitioning:
            self.meta["regions_partitioning"] = partitioning
            atomic_write_text(self.path / "store.json", strict_json(self.meta))
        return self.path / f"{scene}.regions.bin"


class RegionsWriter:
    """Appends int16 region-id chips to an open file; checks shapes and the final count.

    Args:
        file: A binary file open for writing.
        n_tiles: The number of tiles of the scene.
        tile_size: The tile side in pixels.
    """

    def __init__(self, file: BinaryIO, n_tiles: int, tile_size: int) -> None:
        self.file, self.n_tiles, self.tile_size, self.written = file, n_tiles, tile_size, 0

    def write(self, chunk: np.ndarray) -> None:
        """Append (k, T, T) or (T, T) region-id chips.

        Args:
            chunk: Region ids, -1 (none) or 0..32767.

        Raises:
            ValueError: If the shape or the ids are out of range, or too many chips are written.
        """
        chunk = np.asarray(chunk)
        t = self.tile_size
        if chunk.ndim == 2:
            chunk = chunk[None]
        if chunk.shape[1:] != (t, t):
            raise ValueError(f"region chips must be (k, {t}, {t}), got {chunk.shape}")
        if chunk.size and (chunk.min() < -1 or chunk.max() > np.iinfo(np.int16).max):
            raise ValueError("region ids must be -1 (none) or 0..32767")
        if self.written + len(chunk) > self.n_tiles:
            raise ValueError(f"more than the store's {self.n_tiles} tiles written")
        self.file.write(np.ascontiguousarray(chunk, dtype=np.int16).tobytes())
        self.written += len(chunk)

    def finish(self) -> None:
        """Check that exactly ``n_tiles`` chips were written.

        Raises:
            ValueError: If fewer or more chips were written.
        """
        if self.written != self.n_tiles:
            raise ValueError(
                f"{self.written} region chips written, the store has {self.n_tiles} tiles"
            )
