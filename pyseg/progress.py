"""Progress bars, for the commands to switch on where stderr is a terminal (library code never decides that)."""

from __future__ import annotations


def with_progress(iterable, total: int, enabled: bool, desc: str):
    """``iterable`` wrapped in a tqdm bar of ``total`` steps when ``enabled``, else ``iterable`` itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
