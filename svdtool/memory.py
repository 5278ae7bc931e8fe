"""Peak resident memory of this process, sampled in a background thread, and returning freed memory."""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from pathlib import Path

import psutil


def release_memory() -> None:
    """Return freed heap to the system (glibc keeps it otherwise), so the next big step starts lean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


MADV_DONTNEED = 4  # <linux/mman.h>


def drop_mapped_files(folder: str | os.PathLike) -> int:
    """Take the pages of every read-only shared file mapping under `folder` out of this process's resident set;
    returns the bytes of those mappings.

    OpenVINO maps an IR's .bin read-only and shared, and a compiled model keeps that mapping, although after its first
    inference the CPU plugin computes from its own converted copy of the weights: the file's pages stay resident beside
    the copy (svd's INT8 UNet: 1.57 GiB of file pages beside 1.7 GiB of its own). Dropping them is lossless (a read-only
    shared mapping holds nothing but the file) and whatever the plugin still reads is read back from the page cache.
    (ENABLE_MMAP=False reads the weights into memory instead, which the compiled model keeps just the same.)
    Written by hand: OpenVINO has no call that lets a compiled model's source weights go. Elsewhere than Linux: 0.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
        madvise = ctypes.CDLL("libc.so.6", use_errno=True).madvise
    except OSError:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix = str(Path(folder).resolve()) + os.sep
    dropped = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix) or fields[1][1] == "w" or fields[1][3] != "s":
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += end - start
    return dropped


class PeakRSS:
    """Context manager: `.peak_gb` is the highest RSS seen inside the block (sampled every `interval` s)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        self.start_bytes = self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def added_gb(self) -> float:
        """How far the peak rose above the RSS at entry: what the block itself needed."""
        return (self.peak_bytes - self.start_bytes) / 2**30


class StagePeaks(PeakRSS):
    """PeakRSS that also keeps each stage's peak: set `.stage` when the process enters one (`.peaks_gb` by stage)."""

    def __init__(self, interval: float = 0.05):
        super().__init__(interval)
        self.stage = "pipeline"
        self.peaks: dict[str, int] = {}

    def sample(self) -> None:
        rss = self._process.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, rss)
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)

    @property
    def peaks_gb(self) -> dict[str, float]:
        return {stage: round(value / 2**30, 3) for stage, value in self.peaks.items()}
