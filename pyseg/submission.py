"""Competition submission CSVs: encode, write (atomically), join, read and validate.

Submission format (see ``docs/submission.md``): a CSV with the header ``image_id,PredictionString``
and one row per test image in the order of the test json's ``images``; ``image_id`` is the image's
``file_name`` and ``PredictionString`` the predicted class map at ``size`` x ``size`` (256 in the
competition), flattened row-major, as space-separated non-negative integers.

Everything here is vectorised: a row of 65,536 integers is encoded or decoded with a handful of
NumPy operations, never a Python loop over pixels. CSVs are written to a temporary file in the
destination directory and moved into place with ``os.replace`` only after every row was written and
checked, so a failed or interrupted run never leaves a half-written submission behind.

Saved class probabilities and their ensembles live in :mod:`pyseg.inference.probs`.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pyseg.fileio import commit_temp, discard_temp, open_temp_beside, read_json

HEADER = ("image_id", "PredictionString")
_MAX_TOKEN_DIGITS = 9

# A PredictionString of 65,536 ints is over csv's default field limit (131,072 characters).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# ----------------------------------------------------------------------------------------------
# atomic files
# ----------------------------------------------------------------------------------------------
def _open_temp_beside(path: Path, mode: str = "w"):
    """Submissions go to an existing folder: a missing one is a mistake worth reporting, not creating."""
    return open_temp_beside(path, mode, create_parent=False)


# ----------------------------------------------------------------------------------------------
# encoding / decoding
# ----------------------------------------------------------------------------------------------
def resize_nearest(label_map: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) or (C, H, W) array to (size, size) / (C, size, size).

    Source index ``floor(i * H / size)`` (as cv2.INTER_NEAREST and torch's ``nearest``): for
    512 -> 256 this is exactly ``a[..., ::2, ::2]``.
    """
    a = np.asarray(label_map)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected a (H, W) or (C, H, W) array, got shape {a.shape}")
    h, w = a.shape[-2:]
    if (h, w) == (size, size):
        return a
    rows = (np.arange(size, dtype=np.int64) * h) // size
    cols = (np.arange(size, dtype=np.int64) * w) // size
    return a[..., rows[:, None], cols[None, :]]


def _digit_table(max_value: int) -> tuple[np.ndarray, np.ndarray]:
    """(lengths (V,), digits (V, D) ASCII) of the decimal strings of 0..max_value."""
    strs = [str(v).encode("ascii") for v in range(max_value + 1)]
    width = max(len(s) for s in strs)
    digits = np.zeros((len(strs), width), dtype=np.uint8)
    for v, s in enumerate(strs):
        digits[v, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    return np.array([len(s) for s in strs], dtype=np.int64), digits


def encode_masks(label_maps) -> list[str]:
    """PredictionStrings of a batch of class maps: (B, H, W) or (H, W) non-negative ints -> list of B str.

    Row-major, space-separated decimal integers. Vectorised over all pixels of the batch.
    """
    a = np.asarray(label_maps)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected class maps of shape (B, H, W) or (H, W), got {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"class maps must be integers, got dtype {a.dtype}")
    b = a.shape[0]
    if a.size == 0:
        return [""] * b
    flat = a.reshape(b, -1).astype(np.int64, copy=False)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0:
        raise ValueError(f"class maps must be >= 0, got minimum {lo}")
    if hi >= 10**_MAX_TOKEN_DIGITS:
        raise ValueError(f"class id {hi} is too large for a submission")
    lengths, digits = _digit_table(hi)
    tok_len = lengths[flat] + 1  # each token followed by a separator (space, or newline-free end)
    row_bytes = tok_len.sum(axis=1)  # includes one trailing separator per row
    ends = np.cumsum(row_bytes)
    starts_tok = np.cumsum(tok_len.reshape(-1)) - tok_len.reshape(-1)
    out = np.full(int(ends[-1]), ord(" "), dtype=np.uint8)
    flat1 = flat.reshape(-1)
    for k in range(digits.shape[1]):
        sel = lengths[flat1] > k if k else slice(None)
        out[starts_tok[sel] + k] = digits[flat1[sel], k]
    buf = out.tobytes()
    result = []
    begin = 0
    for e in ends.tolist():
        result.append(buf[begin : e - 1].decode("ascii"))  # drop the row's trailing space
        begin = e
    return result


def decode_prediction_string(s: str, size: int | None = None, num_classes: int | None = None) -> np.ndarray:
    """Class map of a PredictionString: (size, size) int64, or a flat (N,) int64 array when size is None.

    Raises ValueError on anything that is not whitespace-separated non-negative decimal integers, on
    a count other than size*size, and on ids outside [0, num_classes) when num_classes is given.
    """
    if not isinstance(s, str):
        raise TypeError(f"PredictionString must be a str, got {type(s).__name__}")
    try:
        b = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raise ValueError("PredictionString contains non-ASCII characters") from None
    sep = (b == 32) | (b == 9)
    d = b.astype(np.int64) - 48
    is_digit = (d >= 0) & (d <= 9)
    bad = ~(sep | is_digit)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"PredictionString has {chr(b[i])!r} at character {i}; expected digits and spaces"
                         + (" (negative class ids are not allowed)" if b[i] == ord("-") else ""))
    prev_digit = np.concatenate([[False], is_digit[:-1]])
    start = is_digit & ~prev_digit
    n_tok = int(start.sum())
    if size is not None and n_tok != size * size:
        raise ValueError(f"PredictionString has {n_tok} values, expected {size}x{size} = {size * size}")
    if n_tok == 0:
        out = np.zeros(0, dtype=np.int64)
    else:
        tok = np.cumsum(start) - 1  # token index of each character (valid where is_digit)
        idx = np.nonzero(is_digit)[0]
        t = tok[idx]
        tok_len = np.bincount(t, minlength=n_tok)
        if tok_len.max() > _MAX_TOKEN_DIGITS:
            raise ValueError(f"PredictionString has a value with more than {_MAX_TOKEN_DIGITS} digits")
        if tok_len.max() == 1:  # every id is one digit (fewer than 11 classes): the digits are the ids
            out = d[idx]
        else:
            tok_start = idx[np.searchsorted(t, np.arange(n_tok))]
            power = tok_len[t] - 1 - (idx - tok_start[t])
            # float64 sums are exact here: values < 10**9 < 2**53
            out = np.bincount(t, weights=d[idx] * (10.0 ** power), minlength=n_tok).round().astype(np.int64)
    if num_classes is not None and out.size and int(out.max()) >= num_classes:
        raise ValueError(f"PredictionString has class id {int(out.max())}, expected ids in [0, {num_classes})")
    return out.reshape(size, size) if size is not None else out


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------
class SubmissionWriter:
    """Streams submission rows into a temporary file; ``close()`` checks the count and moves it into place.

    Use as a context manager: on an exception the temporary file is removed and ``path`` is untouched.

    Args:
        path: destination CSV.
        image_ids: the expected ``image_id`` of every row, in order (the test json's file names).
        size: side of the square class maps (PredictionString length = size * size).
        num_classes: when given, class ids must lie in [0, num_classes).
    """

    def __init__(self, path, image_ids: Sequence[str], size: int = 256, num_classes: int | None = None):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.path = Path(path)
        self.image_ids = [str(i) for i in image_ids]
        if not self.image_ids:
            raise ValueError("a submission needs at least one image id")
        self.size = size
        self.num_classes = num_classes
        self.count = 0
        self._f, self._tmp = _open_temp_beside(self.path)
        self._csv = csv.writer(self._f, lineterminator="\n")
        self._csv.writerow(HEADER)

    def _check_next(self, image_id: str) -> None:
        if self.count >= len(self.image_ids):
            raise ValueError(f"too many rows: the submission expects {len(self.image_ids)}")
        want = self.image_ids[self.count]
        if str(image_id) != want:
            raise ValueError(f"row {self.count + 1}: image_id {image_id!r} out of order, expected {want!r}")

    def write_batch(self, image_ids: Sequence[str], label_maps) -> None:
        """Write rows for (B, size, size) integer class maps (already at the submission size)."""
        a = np.asarray(label_maps)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != (self.size, self.size):
            raise ValueError(f"class maps must be (B, {self.size}, {self.size}), got {a.shape}")
        if len(image_ids) != a.shape[0]:
            raise ValueError(f"{len(image_ids)} image ids for {a.shape[0]} class maps")
        if self.num_classes is not None and a.size and (int(a.max()) >= self.num_classes or int(a.min()) < 0):
            raise ValueError(f"class ids must lie in [0, {self.num_classes}), got [{int(a.min())}, {int(a.max())}]")
        for image_id in image_ids:  # check all before writing any
            self._check_next(image_id)
            self.count += 1
        self.count -= len(image_ids)
        for image_id, row in zip(image_ids, encode_masks(a)):
            self._csv.writerow((image_id, row))
            self.count += 1

    def write(self, image_id: str, label_map) -> None:
        """Write one row from a (size, size) class map."""
        self.write_batch([image_id], np.asarray(label_map)[None])

    def close(self) -> Path:
        """Check the row count, then move the file into place. Returns the path."""
        if self._f is None:
            return self.path
        if self.count != len(self.image_ids):
            self.abort()
            raise ValueError(f"submission incomplete: {self.count} rows written, {len(self.image_ids)} expected; "
                             f"{self.path} was not written")
        f, self._f = self._f, None
        try:
            commit_temp(f, self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; ``path`` is left as it was."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False

    def __del__(self):  # never leave a stray temp file behind
        try:
            if getattr(self, "_f", None) is not None:
                self.abort()
        except Exception:
            pass


def write_submission(path, image_ids: Sequence[str], label_maps, size: int = 256,
                     num_classes: int | None = None) -> Path:
    """Write a whole submission at once: label_maps (N, size, size) ints in image_ids order."""
    a = np.asarray(label_maps)
    with SubmissionWriter(path, image_ids, size, num_classes) as w:
        w.write_batch(list(image_ids), a)
    return Path(path)


def join_submissions(parts: Sequence, path) -> Path:
    """Write ``path`` (atomically) as the rows of ``parts`` (submission CSVs, e.g. one per rank) in order, under
    one header. The parts are read as written; check the result with :func:`validate_submission`."""
    if not parts:
        raise ValueError("no submission parts to join")
    f, tmp = _open_temp_beside(Path(path))
    try:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        for part in parts:
            for row in iter_submission(part):
                w.writerow(row)
        commit_temp(f, tmp, path)
    except BaseException:
        discard_temp(f, tmp)
        raise
    return Path(path)


# ----------------------------------------------------------------------------------------------
# reading / validation
# ----------------------------------------------------------------------------------------------
def iter_submission(path) -> Iterator[tuple[str, str]]:
    """Yield (image_id, PredictionString) of each row; checks the header and the column count."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"submission {path} does not exist or is not a file")
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        header = next(r, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected the header {','.join(HEADER)}")
        if tuple(h.strip().lstrip("\ufeff") for h in header) != HEADER:
            raise ValueError(f"{path}: header is {','.join(header)[:80]!r}, expected {','.join(HEADER)!r}")
        for lineno, row in enumerate(r, start=2):
            if len(row) != 2:
                raise ValueError(f"{path} line {lineno}: expected 2 columns, got {len(row)}")
            yield row[0], row[1]


@dataclass
class Submission:
    image_ids: list[str]
    strings: list[str]

    def __len__(self) -> int:
        return len(self.image_ids)

    def mask(self, i: int, size: int | None = None) -> np.ndarray:
        """Class map of row ``i``: (size, size) int64 (size inferred from a square count when None)."""
        s = self.strings[i]
        flat = decode_prediction_string(s)
        if size is None:
            size = int(round(np.sqrt(flat.size)))
        if flat.size != size * size:
            raise ValueError(f"row {i + 1} ({self.image_ids[i]}): {flat.size} values, expected {size * size}")
        return flat.reshape(size, size)


def read_submission(path) -> Submission:
    """The whole CSV in memory (about as large as the file)."""
    ids, strings = [], []
    for image_id, s in iter_submission(path):
        ids.append(image_id)
        strings.append(s)
    return Submission(ids, strings)


def decode_submission(path, size: int = 256) -> tuple[list[str], np.ndarray]:
    """(image_ids, masks (N, size, size) uint8/int64) of a submission CSV."""
    ids, masks = [], []
    for image_id, s in iter_submission(path):
        try:
            masks.append(decode_prediction_string(s, size))
        except ValueError as e:
            raise ValueError(f"{path} row {len(ids) + 1} ({image_id}): {e}") from None
        ids.append(image_id)
    arr = np.stack(masks) if masks else np.zeros((0, size, size), dtype=np.int64)
    if arr.size and arr.max() < 256:
        arr = arr.astype(np.uint8)
    return ids, arr


def image_ids_from_json(ann_file) -> list[str]:
    """``file_name`` of every image of a COCO json, in its order; errors when there are none."""
    ann_file = Path(ann_file)
    data = read_json(ann_file, "annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not images:
        raise ValueError(f"annotation file {ann_file} has no images")
    try:
        return [str(im["file_name"]) for im in images]
    except (KeyError, TypeError):
        raise ValueError(f"annotation file {ann_file}: every image needs a file_name") from None


def validate_submission(path, expected_ids: Sequence[str] | None = None, ann_file=None, size: int = 256,
                        num_classes: int | None = None) -> dict:
    """Check a submission CSV; raise ValueError naming the first problem, else return a summary.

    Checks: header; one row per expected image, in order (from ``expected_ids`` or ``ann_file``);
    each PredictionString has size*size non-negative integers; ids < num_classes when given.
    Returns {"rows": N, "size": size, "max_class": m, "class_pixels": (m+1,) counts}.
    """
    if expected_ids is None and ann_file is not None:
        expected_ids = image_ids_from_json(ann_file)
    counts = np.zeros(0, dtype=np.int64)
    n = 0
    for n, (image_id, s) in enumerate(iter_submission(path), start=1):
        if expected_ids is not None:
            if n > len(expected_ids):
                raise ValueError(f"{path}: more rows than the {len(expected_ids)} expected")
            if image_id != expected_ids[n - 1]:
                raise ValueError(f"{path} row {n}: image_id {image_id!r}, expected {expected_ids[n - 1]!r}")
        try:
            m = decode_prediction_string(s, size, num_classes)
        except ValueError as e:
            raise ValueError(f"{path} row {n} ({image_id}): {e}") from None
        c = np.bincount(m.reshape(-1))
        if c.size > counts.size:
            c[: counts.size] += counts
            counts = c
        else:
            counts[: c.size] += c
    if expected_ids is not None and n != len(expected_ids):
        raise ValueError(f"{path}: {n} rows, expected {len(expected_ids)}")
    if n == 0:
        raise ValueError(f"{path}: no rows")
    return {"rows": n, "size": size, "max_class": int(counts.size - 1), "class_pixels": counts}
