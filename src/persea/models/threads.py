"""Running torch work at a fixed intra-op thread count, then giving the caller its own back.

On CPU, how torch and MKL split a matrix product or a reduction among threads decides the
order of the additions, so the float results (and the harvest's quantised codes, and the
trained weights) depend on the thread count. The count is process-wide state that anything
may change (OMP_NUM_THREADS, a library, the gateway's `torch_threads`), so the stages that
must be reproducible set their own, recorded count for the duration of their work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the body with `torch.set_num_threads(n)`; restore the previous count after."""
    import torch  # heavy; this module is imported on every CLI path

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
