"""Peak resident memory of this process, sampled in a background thread, and returning freed memory."""

from __future__ import annotations

import ctypes
import gc
import threading
import time

import psutil


def release_memory() -> None:
    """Return freed heap to the system (glibc keeps it otherwise), so the next big step starts lean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


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
