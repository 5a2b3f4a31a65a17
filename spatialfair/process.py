"""Process-wide settings for a command that is a process of its own (a workflow job).

A ``spatialfair`` command started as a program (the console script, ``python -m
spatialfair.cli``) owns its process, so it may change what a library must leave alone: how
the C allocator keeps memory and when the garbage collector runs. Neither changes a number
the command computes. The CLI applies them only then (never when ``cli.main`` is called with
arguments from Python, e.g. in tests); see docs/training.md, "Where the time goes".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations up to this size come from the heap and are reused (glibc's largest allowed value
#: on 64-bit systems); larger ones are mapped and returned to the system one by one.
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap that is kept for reuse instead of returned.
TRIM_THRESHOLD = 2**30
#: What this process changed (written into a training run's profile).
STATE = {"allocator_tuned": False, "gc_frozen": False}


def tune_allocator() -> bool:
    """Let glibc's malloc keep and reuse the large buffers of tensors; whether it applied.

    By default glibc maps every allocation above a threshold (128 KiB at first) afresh and
    returns it on free, and gives back free memory at the top of its heap: a training step's
    activations (4-16 MiB each for the demo and real configs) are then mapped, zero-filled by
    the kernel and unmapped again at every step, hundreds of thousands of page faults per job
    (BENCHMARKS.md: 13 % of the demo's compute). With both thresholds set, such buffers are
    reused from the heap. Only where the C library is glibc (Linux); elsewhere nothing
    changes. Call before the large allocations (at process start).

    Returns:
        True when both settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # both or neither: a trim threshold alone switches off glibc's adaptive mmap threshold
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    STATE["allocator_tuned"] = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return STATE["allocator_tuned"]


@contextmanager
def imports_without_gc(freeze: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector in the block (heavy imports); then maybe freeze.

    Importing torch makes some 300,000 long-lived objects and no garbage, yet triggers full
    collections that walk every object made so far. With ``freeze`` (the process is the
    command), everything made so far then moves to the collector's permanent generation, so
    later collections, and the interpreter's exit, skip it.

    Args:
        freeze: Move the objects made so far to the permanent generation after the block.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
            STATE["gc_frozen"] = True
        if enabled:
            gc.enable()


__all__ = ["MMAP_THRESHOLD", "STATE", "TRIM_THRESHOLD", "imports_without_gc", "tune_allocator"]
