"""The progress bar: files per second and ETA, with the total counted in the background.

Counting 20 million paths takes a while (on network storage, minutes), so the bar starts at
once with a rate and no total; a daemon thread walks the inputs (names only, no stat) and
sets the total — and with it the ETA — when it is done. The count is a second pass over the
directory tree rather than a list kept in memory, so memory stays constant.
"""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

from .inputs import count_inputs


class Progress:
    def __init__(self, inputs: list[str], enabled: bool = True) -> None:
        self.bar = tqdm(unit="file", file=sys.stderr, disable=not enabled, smoothing=0.1,
                        dynamic_ncols=True)
        if enabled:
            threading.Thread(target=self._count, args=(list(inputs),), daemon=True).start()

    def _count(self, inputs: list[str]) -> None:
        try:
            total = count_inputs(inputs)
        except OSError:
            return
        self.bar.total = total
        self.bar.refresh()

    def update(self, files: int, spectra: int = 0) -> None:
        self.bar.update(files)
        if spectra:
            self.bar.set_postfix(spectra=spectra, refresh=False)

    def close(self) -> None:
        self.bar.close()
