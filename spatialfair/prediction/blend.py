"""The windows of one scene through the model: read, predict, blend, and write finished blocks.

:class:`Strips` walks a scene in strips of overlapping windows (one batch of windows per
forward pass, the next read overlapping the model) and yields finished blocks of blended
probability sums; :class:`Forward` runs the model on a batch; :class:`Emitter` turns a finished
block into class and probability values and writes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from ..constants import IGNORE_INDEX
from ..errors import InputError
from ..io import GeoTiffWriter, RasterInfo, invalid_mask, read_padded
from .bundle import positive_class
from .windows import blend_weights

#: Probability raster value of pixels that are not predicted.
PROB_NODATA = float("nan")


class Forward:
    """Run a batch of windows on the device and return class probabilities (float32 numpy)."""

    def __init__(
        self, model: torch.nn.Module, device: torch.device, num_classes: int, amp: bool
    ) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.num_classes = num_classes
        self.autocast = contextlib.nullcontext
        if device.type == "cuda" and amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.autocast = lambda: torch.autocast("cuda", dtype=dtype)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            else:
                x = x.to(self.device)
            with self.autocast():
                out = self.model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.float()
            if out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
                raise InputError(
                    "model",
                    f"returned shape {tuple(out.shape)} for input {tuple(x.shape)}",
                    "return logits of shape (batch, classes, height, width)",
                )
            if out.shape[1] == self.num_classes:
                p = torch.softmax(out, dim=1)
            elif out.shape[1] == 1 and self.num_classes == 2:
                p1 = torch.sigmoid(out)
                p = torch.cat([1 - p1, p1], dim=1)
            else:
                raise InputError(
                    "model",
                    f"returned {out.shape[1]} channels for {self.num_classes} classes",
                    "return one channel per class (or one for two classes)",
                )
            return p.cpu().numpy()


class Emitter:
    """Turn finished accumulator blocks into class/probability values and write them."""

    def __init__(
        self,
        cls_w: GeoTiffWriter,
        prob_w: GeoTiffWriter | None,
        nc: int,
        probabilities: str,
        bundle: Mapping[str, Any],
        counts: np.ndarray,
    ) -> None:
        self.cls_w, self.prob_w, self.nc, self.counts = cls_w, prob_w, nc, counts
        self.mode = (
            probabilities
            if probabilities == "all"
            else ("positive" if bundle.get("task") == "flood" else "max")
        )
        self.pos = positive_class(bundle)

    def __call__(self, block: np.ndarray, bad: np.ndarray, win: Window) -> None:
        # ``block``: (nc + 1, h, w) float64 weighted sums and (last) the weight sum. Dividing
        # by the (positive) weight sum changes neither the argmax nor which value is largest,
        # so only the probabilities that are written get divided.
        sums, wsum = block[: self.nc], block[self.nc]
        best = sums[0].copy()
        cls = np.zeros(best.shape, dtype=np.uint8)
        for k in range(1, self.nc):  # argmax over classes, first maximum wins
            np.copyto(cls, k, where=sums[k] > best)
            np.maximum(best, sums[k], out=best)
        np.copyto(cls, IGNORE_INDEX, where=bad)
        self.counts += np.bincount(cls.ravel(), minlength=IGNORE_INDEX + 1)
        self.cls_w.write(cls, win)
        if self.prob_w is not None:
            self.prob_w.write(self._probs(sums, wsum, best, bad), win)

    def _probs(
        self, sums: np.ndarray, wsum: np.ndarray, best: np.ndarray, bad: np.ndarray
    ) -> np.ndarray:
        """The float32 probability bands of one block, NaN where the input is invalid."""
        if self.mode == "all":
            out = (sums / wsum).astype(np.float32)
        elif self.mode == "positive":
            out = (sums[self.pos] / wsum).astype(np.float32)[None]
        else:  # ``best`` is not needed afterwards: divide it in place
            out = np.divide(best, wsum, out=best).astype(np.float32)[None]
        if bad.any():
            out[:, bad] = PROB_NODATA
        return out


class Strips:
    """Iterate over finished output blocks of a scene, one batch of windows at a time.

    Yields ``(acc, bad, window, strip_done)``: ``acc`` (nc + 1, h, w) float64 holds the
    weighted probability sums and (last channel) the weight sum of finished pixels, ``bad``
    (h, w) the invalid-input mask, ``window`` where they go in the scene, ``strip_done`` whether
    this is the strip's last block (for progress bars); ``len()`` is the number of strips.
    """

    def __init__(
        self,
        src,
        info: RasterInfo,
        indexes: Sequence[int],
        nodata: float | None,
        bundle: Mapping[str, Any],
        window: int,
        overlap: int,
        batch_size: int,
        rows: list[int],
        cols: list[int],
        forward: Forward,
        nc: int,
        prefetch: bool = True,
    ) -> None:
        from ..models import normalize  # the same normalisation as in training

        self.src, self.info, self.indexes, self.nodata = src, info, list(indexes), nodata
        self.normalize = lambda raw, bad: normalize(raw, bundle, ~bad)
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.rows, self.cols = rows, cols
        self.forward, self.nc = forward, nc
        self.weight = blend_weights(window, overlap)
        self.prefetch = prefetch

    def _read(self, r: int, c0: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 input (bands, window, width) and its invalid mask."""
        info, win = self.info, Window(c0, r, width, self.window)
        raw = read_padded(self.src, win, indexes=self.indexes, fill=0)
        bad = invalid_mask(raw, self.nodata)
        bad[max(0, info.height - r) :, :] = True  # padding below the scene
        bad[:, max(0, info.width - c0) :] = True  # padding right of the scene
        if info.has_mask:
            h, w = min(self.window, info.height - r), min(width, info.width - c0)
            mask = self.src.dataset_mask(window=Window(c0, r, w, h))
            bad[:h, :w] |= mask == 0
        return self.normalize(raw, bad), bad

    def _inputs(self, specs: list[tuple[int, list[int]]]):
        """Yield (x, bad) for each (row, batch columns); the next read overlaps the model."""
        win = self.window

        def read(spec: tuple[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
            return self._read(spec[0], spec[1][0], spec[1][-1] + win - spec[1][0])

        if not self.prefetch:
            yield from (read(spec) for spec in specs)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="sf-read") as pool:
            future = pool.submit(read, specs[0])
            for i in range(len(specs)):
                x_bad = future.result()
                if i + 1 < len(specs):
                    future = pool.submit(read, specs[i + 1])
                yield x_bad

    def _blend(self, acc: np.ndarray, probs: np.ndarray, offsets: list[int]) -> None:
        """Add each window's weighted probabilities and its weight into ``acc``, in order."""
        nc, win = self.nc, self.window
        weighted = np.empty((nc, win, win))  # float64, as ``probs[i] * self.weight`` would be
        for i, c in enumerate(offsets):
            np.multiply(probs[i], self.weight, out=weighted)
            acc[:nc, :, c : c + win] += weighted
            acc[nc, :, c : c + win] += self.weight

    def __iter__(self):
        nc, win, ov = self.nc, self.window, self.overlap
        stride = win - ov
        total_w = self.cols[-1] + win
        batches = [
            self.cols[i : i + self.batch_size] for i in range(0, len(self.cols), self.batch_size)
        ]
        inputs = self._inputs([(r, bcols) for r in self.rows for bcols in batches])
        carry = np.zeros((nc + 1, ov, total_w))  # partial sums of the next strip's top rows
        for k, r in enumerate(self.rows):
            last_row = k == len(self.rows) - 1
            next_carry = np.zeros_like(carry)
            col_carry = None  # partial sums of the next batch's left ``ov`` columns
            for b, bcols in enumerate(batches):
                last_col = b == len(batches) - 1
                c0, c1 = bcols[0], bcols[-1] + win
                x, bad = next(inputs)
                tiles = np.stack([x[:, :, c - c0 : c - c0 + win] for c in bcols])
                probs = self.forward(tiles)
                acc = np.zeros((nc + 1, win, c1 - c0))
                fresh = 0
                if col_carry is not None:
                    acc[:, :, :ov] = col_carry
                    fresh = ov
                acc[:, :ov, fresh:] = carry[:, :, c0 + fresh : c1]  # (0 + carry: the same)
                self._blend(acc, probs, [c - c0 for c in bcols])
                fin_c = c1 - c0 if last_col else c1 - c0 - ov
                fin_r = win if last_row else stride
                h = min(fin_r, self.info.height - r)
                w = min(fin_c, self.info.width - c0)
                if h > 0 and w > 0:
                    yield acc[:, :h, :w], bad[:h, :w], Window(c0, r, w, h), last_col
                if not last_row:
                    next_carry[:, :, c0 : c0 + fin_c] = acc[:, stride:, :fin_c]
                col_carry = None if last_col else acc[:, :, fin_c:].copy()
            carry = next_carry

    def __len__(self) -> int:
        return len(self.rows)


__all__ = ["PROB_NODATA", "Emitter", "Forward", "Strips"]
