"""pyseg.submission: encode/decode, atomic writer, validation, --save-probs and ensembles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pyseg import submission as S
from pyseg.inference import probs as PR


def _ids(n):
    return [f"batch_01_vt/{i:04d}.jpg" for i in range(n)]


def test_encode_matches_python_join_and_decodes_back():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 123, size=(3, 16, 16))
    m[0, 0, 0] = 0
    m[1, 5, 5] = 122
    rows = S.encode_masks(m)
    for row, mm in zip(rows, m):
        assert row == " ".join(str(v) for v in mm.ravel().tolist())
        np.testing.assert_array_equal(S.decode_prediction_string(row, 16), mm)


def test_encode_single_digit_and_constant_maps():
    assert S.encode_masks(np.zeros((2, 2), np.uint8)) == ["0 0 0 0"]
    assert S.encode_masks(np.full((1, 1, 3), 7, np.int32)) == ["7 7 7"]


def test_encode_rejects_bad_maps():
    with pytest.raises(ValueError, match=">= 0"):
        S.encode_masks(np.array([[0, -1]]))
    with pytest.raises(TypeError, match="integers"):
        S.encode_masks(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        S.encode_masks(np.zeros((1, 2, 2, 2), np.int64))


@pytest.mark.parametrize("bad, match", [("1 2 x", "'x'"), ("1 -2 3", "negative"), ("1 2", "2 values"),
                                        ("1,2,3,4", "','"), ("1 2 3 12", "class id 12")])
def test_decode_rejects_bad_strings(bad, match):
    with pytest.raises(ValueError, match=match):
        S.decode_prediction_string(bad, 2, num_classes=5)


def test_decode_tolerates_extra_whitespace():
    np.testing.assert_array_equal(S.decode_prediction_string(" 1  23\t4 0 ", 2), [[1, 23], [4, 0]])


def test_resize_nearest_512_to_256_equals_stride_two():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 11, (512, 512))
    np.testing.assert_array_equal(S.resize_nearest(m, 256), m[::2, ::2])
    p = rng.random((3, 512, 512))
    np.testing.assert_array_equal(S.resize_nearest(p, 256), p[:, ::2, ::2])
    r = S.resize_nearest(rng.integers(0, 3, (270, 480)), 256)
    assert r.shape == (256, 256)


def test_write_read_validate_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    m = rng.integers(0, 11, (5, 8, 8))
    ids = _ids(5)
    out = S.write_submission(tmp_path / "sub.csv", ids, m, size=8, num_classes=11)
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]  # no temp file left
    text = out.read_text()
    assert text.startswith("image_id,PredictionString\n")
    assert len(text.splitlines()) == 6
    sub = S.read_submission(out)
    assert sub.image_ids == ids
    np.testing.assert_array_equal(sub.mask(2), m[2])
    got_ids, masks = S.decode_submission(out, size=8)
    assert got_ids == ids and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks, m)
    summary = S.validate_submission(out, ids, size=8, num_classes=11)
    assert summary["rows"] == 5 and summary["class_pixels"].sum() == 5 * 64


def test_validate_against_json(tmp_path):
    ann = tmp_path / "test.json"
    ann.write_text(json.dumps({"images": [{"id": i, "file_name": f} for i, f in enumerate(_ids(3))],
                               "categories": []}))
    m = np.zeros((3, 4, 4), np.int64)
    S.write_submission(tmp_path / "s.csv", _ids(3), m, size=4)
    assert S.validate_submission(tmp_path / "s.csv", ann_file=ann, size=4)["rows"] == 3
    S.write_submission(tmp_path / "short.csv", _ids(2), m[:2], size=4)
    with pytest.raises(ValueError, match="2 rows, expected 3"):
        S.validate_submission(tmp_path / "short.csv", ann_file=ann, size=4)
    with pytest.raises(ValueError, match="16 values, expected 8x8"):
        S.validate_submission(tmp_path / "s.csv", ann_file=ann, size=8)
    with pytest.raises(ValueError, match="class id"):
        S.write_submission(tmp_path / "c.csv", _ids(3), m + 3, size=4)
        S.validate_submission(tmp_path / "c.csv", ann_file=ann, size=4, num_classes=3)
    (tmp_path / "noimg.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="has no images"):
        S.validate_submission(tmp_path / "s.csv", ann_file=tmp_path / "noimg.json")


def test_validate_rejects_wrong_order_header_and_columns(tmp_path):
    S.write_submission(tmp_path / "s.csv", _ids(2), np.zeros((2, 2, 2), np.int64), size=2)
    with pytest.raises(ValueError, match="row 1: image_id"):
        S.validate_submission(tmp_path / "s.csv", list(reversed(_ids(2))), size=2)
    (tmp_path / "h.csv").write_text("id,pred\na,0 0 0 0\n")
    with pytest.raises(ValueError, match="header"):
        S.validate_submission(tmp_path / "h.csv", size=2)
    (tmp_path / "cols.csv").write_text("image_id,PredictionString\na,0 0 0 0,extra\n")
    with pytest.raises(ValueError, match="2 columns"):
        S.validate_submission(tmp_path / "cols.csv", size=2)
    with pytest.raises(ValueError, match="does not exist"):
        S.validate_submission(tmp_path / "nope.csv")


def test_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("previous content")
    with pytest.raises(RuntimeError):
        with S.SubmissionWriter(out, _ids(3), size=2) as w:
            w.write(_ids(3)[0], np.zeros((2, 2), np.int64))
            raise RuntimeError("model crashed")
    assert out.read_text() == "previous content"
    assert sorted(os.listdir(tmp_path)) == ["sub.csv"]
    w = S.SubmissionWriter(out, _ids(3), size=2)
    w.write(_ids(3)[0], np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="incomplete: 1 rows written, 3 expected"):
        w.close()
    assert out.read_text() == "previous content" and sorted(os.listdir(tmp_path)) == ["sub.csv"]


def test_writer_checks_rows(tmp_path):
    with S.SubmissionWriter(tmp_path / "s.csv", _ids(2), size=2, num_classes=3) as w:
        with pytest.raises(ValueError, match="out of order"):
            w.write(_ids(2)[1], np.zeros((2, 2), np.int64))
        with pytest.raises(ValueError, match=r"\(B, 2, 2\)"):
            w.write(_ids(2)[0], np.zeros((3, 3), np.int64))
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            w.write(_ids(2)[0], np.full((2, 2), 3))
        w.write_batch(_ids(2), np.ones((2, 2, 2), np.int64))
        with pytest.raises(ValueError, match="too many rows"):
            w.write("extra", np.zeros((2, 2), np.int64))
    assert S.validate_submission(tmp_path / "s.csv", _ids(2), size=2)["rows"] == 2


def test_unwritable_destinations(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        S.SubmissionWriter(tmp_path / "no" / "dir" / "s.csv", _ids(1), size=2)
    with pytest.raises(ValueError, match="is a directory"):
        S.SubmissionWriter(tmp_path, _ids(1), size=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is not a directory"):
        S.SubmissionWriter(tmp_path / "file" / "s.csv", _ids(1), size=2)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # /sys takes no new files, not even from root (who ignores permission bits); a 0500 folder stops the others.
    places = [Path("/sys")] + ([ro] if not os.access(ro, os.W_OK) else [])
    try:
        for place in places:
            with pytest.raises(ValueError, match=f"directory {place} is not writable"):
                S.SubmissionWriter(place / "pyseg-s.csv", _ids(1), size=2)
            assert not [p for p in os.listdir(place) if "pyseg-s.csv" in p], f"a file was left in {place}"
    finally:
        ro.chmod(0o700)


def test_large_submission_is_fast(tmp_path):
    import time

    rng = np.random.default_rng(3)
    m = rng.integers(0, 11, (40, 256, 256)).astype(np.uint8)
    t = time.perf_counter()
    S.write_submission(tmp_path / "big.csv", _ids(40), m, size=256, num_classes=11)
    assert time.perf_counter() - t < 20  # about 0.2 s here; a per-pixel Python loop takes far longer
    _, back = S.decode_submission(tmp_path / "big.csv", 256)
    np.testing.assert_array_equal(back, m)


def _write_probs(d, probs, ids, names=("a", "b", "c")):
    w = PR.ProbsWriter(d, probs.shape[1], list(names), probs.shape[-1], {"model": "x"})
    for i, (image_id, p) in enumerate(zip(ids, probs)):
        w.write(image_id, i, p, 10, 12)
    w.close()


def test_probs_roundtrip_and_ensemble(tmp_path):
    rng = np.random.default_rng(4)
    ids = _ids(3)
    a = rng.dirichlet(np.ones(3), size=(3, 4, 4)).transpose(0, 3, 1, 2)  # (N, C, S, S)
    b = rng.dirichlet(np.ones(3), size=(3, 4, 4)).transpose(0, 3, 1, 2)
    _write_probs(tmp_path / "a", a, ids)
    _write_probs(tmp_path / "b", b, ids)
    index = PR.read_probs_index(tmp_path / "a")
    assert index["size"] == 4 and index["num_classes"] == 3 and index["images"][1]["height"] == 10
    p = PR.load_probs(tmp_path / "a", index["images"][1], index)
    np.testing.assert_allclose(p, a[1], atol=1e-3)
    PR.ensemble_probs([tmp_path / "a", tmp_path / "b"], tmp_path / "ens.csv", weights=[1, 3])
    _, masks = S.decode_submission(tmp_path / "ens.csv", 4)
    want = (0.25 * a.astype(np.float16).astype(np.float32) + 0.75 * b.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(masks, want.argmax(1))
    PR.ensemble_probs([tmp_path / "a"], tmp_path / "one.csv", expected_ids=ids)
    np.testing.assert_array_equal(S.decode_submission(tmp_path / "one.csv", 4)[1],
                                  a.astype(np.float16).argmax(1))


def test_ensemble_rejects_mismatches(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.random((2, 3, 4, 4))
    _write_probs(tmp_path / "a", a, _ids(2))
    _write_probs(tmp_path / "other_ids", a, ["x.jpg", "y.jpg"])
    _write_probs(tmp_path / "other_size", rng.random((2, 3, 2, 2)), _ids(2))
    _write_probs(tmp_path / "other_names", a, _ids(2), names=("a", "b", "z"))
    for d, match in [("other_ids", "images differ"), ("other_size", "size"), ("other_names", "class names")]:
        with pytest.raises(ValueError, match=match):
            PR.ensemble_probs([tmp_path / "a", tmp_path / d], tmp_path / "e.csv")
        assert not (tmp_path / "e.csv").exists()
    with pytest.raises(ValueError, match="no index.json"):
        PR.ensemble_probs([tmp_path / "missing"], tmp_path / "e.csv")
    with pytest.raises(ValueError, match="weights"):
        PR.ensemble_probs([tmp_path / "a"], tmp_path / "e.csv", weights=[-1])
    with pytest.raises(ValueError, match="differ from the expected ones"):
        PR.ensemble_probs([tmp_path / "a"], tmp_path / "e.csv", expected_ids=_ids(3))
    assert not (tmp_path / "e.csv").exists()
    with pytest.raises(ValueError, match=r"\(3, 4, 4\)"):
        PR.ProbsWriter(tmp_path / "w", 3, None, 4).write("a", 0, np.zeros((2, 4, 4)), 4, 4)


def test_float16_probabilities_keep_the_argmax():
    from pyseg.inference.probs import float16_keeping_argmax

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=(64, 64)).transpose(2, 0, 1).astype(np.float32)
    p[3] = p[1] + 1e-5  # class 3 wins by less than a float16 step: rounding alone makes it a tie with 1
    p /= p.sum(0, keepdims=True)
    assert (p.astype(np.float16).argmax(0) != p.argmax(0)).any()
    half = float16_keeping_argmax(p)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half.argmax(0), p.argmax(0))
    np.testing.assert_allclose(half, p, atol=1e-3)  # at most one float16 step from plain rounding
