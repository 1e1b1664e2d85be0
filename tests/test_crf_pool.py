"""The CPU backend's thread pool (csrc/cpu/thread_pool.cpp) through its test hook: every chunk runs exactly
once whatever the thread count; threads that run out of their own share take the rest of a slow thread's share;
an exception in a chunk reaches the caller without wedging the pool."""

import pytest

from pyseg.crf import _crf_cpu


@pytest.mark.parametrize("threads", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("nchunks", [0, 1, 2, 3, 7, 16, 64])
def test_every_chunk_runs_once(threads, nchunks):
    ran, by_caller = _crf_cpu._pool_check(threads, nchunks)
    assert ran == [1] * nchunks
    if threads == 1 or nchunks == 1:
        assert by_caller == [1] * nchunks  # no pool, or a single chunk: inline on the caller


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_the_others_take_chunks_from_a_slow_share(threads):
    # The caller's share (chunks [0, n / t)) is slow, 1 ms a chunk; the other threads finish theirs at once and
    # must take some of it. Five tries, so that one in which the OS kept the workers off the CPU cannot fail it.
    n = 24
    share = n // threads
    stolen = []
    for _ in range(5):
        ran, by_caller = _crf_cpu._pool_check(threads, n, slow_below=share, work_us=1000)
        assert ran == [1] * n
        stolen.append(share - sum(by_caller[:share]))
        if stolen[-1] > 0:
            break
    assert max(stolen) > 0, f"no chunk of the slow share ran on another thread in 5 tries: {stolen}"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_an_exception_in_a_chunk_reaches_the_caller(threads):
    with pytest.raises(RuntimeError, match="chunk 5 failed"):
        _crf_cpu._pool_check(threads, 12, throw_at=5)
    ran, _ = _crf_cpu._pool_check(threads, 12)  # the pool still works
    assert ran == [1] * 12


def test_the_hook_rejects_bad_arguments():
    for args in [(0, 4), (65, 4), (2, -1), (2, 100001)]:
        with pytest.raises(ValueError, match="_pool_check expects"):
            _crf_cpu._pool_check(*args)
    with pytest.raises(ValueError, match="_pool_check expects"):
        _crf_cpu._pool_check(2, 4, work_us=-1)
