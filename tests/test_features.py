"""Feature preparation: which columns are used, how they are encoded and weighted."""

from __future__ import annotations

import datetime
import decimal
import json
import types

import numpy as np
import pandas as pd
import pytest

from autoseg.errors import InputDataError
from autoseg.features import (
    CATEGORY_DISTANCE,
    CLIP,
    OTHER_LEVEL,
    FeatureSpec,
    column_text,
    fit_features,
)
from autoseg.search import search_k


def _dropped(spec: FeatureSpec) -> dict[str, str]:
    return {d.column: d.reason for d in spec.dropped}


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": np.arange(1, n + 1),
        "spend": rng.lognormal(5, 1, n),
        "age": rng.integers(18, 80, n).astype(float),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "member": rng.random(n) < 0.4,
        "joined": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
        "constant": 1,
        "email": [f"user{i}@example.com" for i in range(n)],
        "time": np.arange(n) + 1_700_000_000,
    })


def test_column_decisions_with_reasons() -> None:
    spec = fit_features(_frame())
    dropped = _dropped(spec)
    assert dropped["time"] == "in ignore_columns"
    assert dropped["constant"] == "single value"
    assert "row id" in dropped["customer_id"]
    assert "near-unique" in dropped["email"]
    assert set(spec.used_columns) == {"spend", "age", "plan", "member", "joined"}
    kinds = {f.column: f.kind for f in spec.numeric}
    assert kinds == {"spend": "numeric", "age": "numeric", "member": "binary", "joined": "date"}


def test_skewed_column_is_logged_and_symmetric_is_not() -> None:
    spec = fit_features(_frame())
    logged = {f.column: f.log for f in spec.numeric}
    assert logged["spend"] is True and logged["age"] is False


def test_free_text_is_left_out() -> None:
    rng = np.random.default_rng(1)
    words = ["great", "service", "slow", "delivery", "price", "friendly", "store", "again"]
    text = [" ".join(rng.choice(words, 8)) + f" order {i}" for i in range(200)]
    frame = pd.DataFrame({"comment": text, "x": rng.normal(size=200)})
    assert _dropped(fit_features(frame))["comment"] == "free text"


def test_unsupported_dtype_is_reported_not_crashed() -> None:
    frame = pd.DataFrame({
        "x": np.arange(50, dtype=float) % 7,
        "blob": [b"\x00\x01"] * 25 + [b"\x02"] * 25,
        "tags": [[1, 2], [3]] * 25,
    })
    spec = fit_features(frame)
    assert spec.used_columns == ["x"]
    assert set(_dropped(spec)) == {"blob", "tags"}


def test_no_usable_column_is_an_input_error() -> None:
    frame = pd.DataFrame({"time": [1, 2, 3], "same": ["a", "a", "a"]})
    with pytest.raises(InputDataError, match=r"no column is left to cluster on \(time: in "):
        fit_features(frame)


def test_rare_levels_fold_into_other_and_weights_are_bounded() -> None:
    rng = np.random.default_rng(2)
    n = 5000
    country = rng.choice(["us", "mx", "ca"], n, p=[0.7, 0.2, 0.1]).astype(object)
    country[:8] = "holand"  # 0.16% of rows
    country[8:14] = "laos"
    frame = pd.DataFrame({"country": country, "income": rng.normal(50, 10, n)})
    spec = fit_features(frame)
    levels = spec.categorical[0].levels
    assert OTHER_LEVEL in levels and "holand" not in levels
    matrix, _ = spec.transform(frame)
    block = matrix[:, 1:]
    # two rows of different categories are CATEGORY_DISTANCE apart, whatever their shares
    assert np.linalg.norm(block[0] - block[-1]) == pytest.approx(CATEGORY_DISTANCE) or (
        country[-1] == "holand"
    )
    assert np.abs(matrix).max() <= max(CLIP, 1.0)


def test_rare_categories_do_not_get_clusters_of_their_own() -> None:
    """The census trap: standardised one-hot columns make rare countries their own segments."""
    rng = np.random.default_rng(3)
    n = 6000
    group = rng.integers(0, 2, n)
    country = np.where(rng.random(n) < 0.995, "us", "xx").astype(object)
    country[:20] = "yy"
    frame = pd.DataFrame({
        "country": country,
        "hours": rng.normal(np.where(group == 1, 45, 25), 4),
        "age": rng.normal(np.where(group == 1, 50, 30), 5),
    })
    matrix, _ = fit_features(frame).transform(frame)
    result = search_k(matrix, [2, 3, 4], restarts=4, seed=0, exact_max_rows=10_000,
                      sample_size=2000)
    assert result.chosen_k == 2
    assert min(np.bincount(result.labels)) > n * 0.3


def test_outliers_do_not_collapse_everyone_into_one_cluster() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    group = rng.integers(0, 3, n)
    spend = rng.lognormal(np.array([4.0, 6.0, 8.0])[group], 0.3)
    spend[:5] = 1e12  # a few absurd rows
    visits = rng.normal(np.array([2.0, 6.0, 10.0])[group], 1.0)
    frame = pd.DataFrame({"spend": spend, "visits": visits})
    matrix, _ = fit_features(frame).transform(frame)
    result = search_k(matrix, [2, 3, 4, 5], restarts=4, seed=0, exact_max_rows=10_000,
                      sample_size=2000)
    assert result.chosen_k == 3
    assert min(np.bincount(result.labels)) > n * 0.2


def test_missing_and_infinite_values_are_imputed_and_counted() -> None:
    frame = pd.DataFrame({
        "a": [1.0, np.nan, 3.0, np.inf, 5.0, 6.0] * 10,
        "b": ["x", None, "y", "x", "y", "x"] * 10,
    })
    spec = fit_features(frame)
    matrix, imputed = spec.transform(frame)
    assert np.isfinite(matrix).all()
    assert imputed == {"a": 20, "b": 10}


def test_spec_round_trips_through_json_and_reapplies() -> None:
    frame = _frame()
    spec = fit_features(frame)
    restored = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    first, _ = spec.transform(frame)
    second, _ = restored.transform(frame)
    np.testing.assert_array_equal(first, second)
    assert restored.matrix_columns == spec.matrix_columns


def test_new_rows_with_unseen_levels_and_missing_columns() -> None:
    frame = _frame()
    spec = fit_features(frame)
    new = frame.head(5).copy()
    new.loc[new.index[0], "plan"] = "enterprise"  # never seen: no level is set
    matrix, _ = spec.transform(new)
    assert matrix.shape == (5, len(spec.matrix_columns))
    with pytest.raises(InputDataError, match="column 'spend' used by the saved model is missing"):
        spec.transform(new.drop(columns=["spend"]))


def test_readable_features_keep_original_units() -> None:
    frame = _frame()
    readable = fit_features(frame).readable(frame)
    np.testing.assert_allclose(readable["spend"], frame["spend"])
    assert isinstance(readable["plan"].dtype, pd.CategoricalDtype)
    assert set(readable["member"].unique()) <= {0.0, 1.0}


def test_scale_keeps_the_geometry_of_multimodal_columns() -> None:
    """A column's scale follows its whole spread, not the spread of the mode its quartiles hit.

    Five round clusters, four of them at ``x = 0``: both quartiles of ``x`` fall inside that
    mode, so ``IQR / 1.349`` is the within-cluster spread (about 4) and would stretch ``x``
    tenfold against ``y``, turning the round clusters into needles.
    """
    rng = np.random.default_rng(5)
    # coordinates far from 0, as in point-set benchmarks: skewed (1.5) but not heavy-tailed
    centres = np.array([[0, 0], [0, 40], [0, 80], [0, 120], [100, 60]], dtype=float) + 1000
    truth = np.repeat(np.arange(len(centres)), 400)
    points = centres[truth] + rng.normal(0, 4.0, (truth.size, 2))
    frame = pd.DataFrame(points, columns=["x", "y"])
    spec = fit_features(frame)
    assert not any(f.log for f in spec.numeric)  # a minority mode is not a heavy tail
    scales = {f.column: f.scale for f in spec.numeric}
    stds = frame.std(ddof=0)
    for column in ("x", "y"):
        assert scales[column] == pytest.approx(stds[column], rel=0.03)
    iqr = (frame.quantile(0.75) - frame.quantile(0.25)) / 1.349
    assert iqr["x"] < 0.2 * stds["x"]  # what the IQR scale would have done
    matrix, _ = fit_features(frame).transform(frame)
    result = search_k(matrix, [3, 4, 5, 6], restarts=3, seed=0, exact_max_rows=10_000,
                      sample_size=2000)
    assert result.chosen_k == 5


def test_scale_is_not_inflated_by_a_few_absurd_rows() -> None:
    rng = np.random.default_rng(6)
    visits = rng.normal(10.0, 2.0, 5000)
    clean = fit_features(pd.DataFrame({"visits": visits})).numeric[0].scale
    visits[:20] = 1e9  # 0.4% of rows, the column stays unskewed enough to be left unlogged?
    spec = fit_features(pd.DataFrame({"visits": visits}))
    feature = spec.numeric[0]
    assert feature.scale == pytest.approx(clean, rel=0.05) or feature.log
    matrix, _ = spec.transform(pd.DataFrame({"visits": visits}))
    assert np.abs(matrix).max() <= CLIP


def test_zero_inflated_column_is_weighted_like_a_flag() -> None:
    """92% zeros: standardising would put the other rows 3.7 sd away, a cluster of their own."""
    rng = np.random.default_rng(7)
    gains = np.where(rng.random(5000) < 0.92, 0.0, rng.lognormal(8.5, 1.0, 5000))
    frame = pd.DataFrame({"capital_gain": gains, "age": rng.normal(40, 10, 5000)})
    spec = fit_features(frame)
    matrix, _ = spec.transform(frame)
    column = spec.matrix_columns.index("capital_gain")
    others = matrix[gains > 0, column]
    assert np.all(matrix[gains == 0, column] == 0)
    # the typical non-zero row is CATEGORY_DISTANCE from the zeros, as in a two-valued column
    assert np.median(np.abs(others)) == pytest.approx(CATEGORY_DISTANCE, rel=1e-6)


# --------------------------------------------------------------------------- cuDF's shared API


class _SharedSeries:
    """A pandas Series behind only the calls cuDF shares with pandas (docs/gpu.md lists them):
    any other call in the preparation would fail here, as it would on a cuDF column."""

    host_conversions: list[str] = []

    def __init__(self, series: pd.Series) -> None:
        self._series = series

    dtype = property(lambda self: self._series.dtype)
    values = property(lambda self: self._series.values)

    def astype(self, dtype: str) -> _SharedSeries:
        return _SharedSeries(self._series.astype(dtype))

    def isna(self) -> _SharedSeries:
        return _SharedSeries(self._series.isna())

    def fillna(self, value: object) -> _SharedSeries:
        return _SharedSeries(self._series.fillna(value))

    def isin(self, values: list[str]) -> _SharedSeries:
        return _SharedSeries(self._series.isin(values))

    def sum(self) -> object:
        return self._series.sum()

    def to_pandas(self) -> pd.Series:
        type(self).host_conversions.append(str(self._series.name))
        return self._series

    def __len__(self) -> int:
        return len(self._series)

    @property
    def iloc(self) -> _SharedRows:
        return _SharedRows(self._series)

    @property
    def cat(self) -> types.SimpleNamespace:
        accessor = self._series.cat  # AttributeError unless categorical, as in pandas and cuDF
        return types.SimpleNamespace(codes=_SharedSeries(accessor.codes),
                                     categories=accessor.categories)

    def __eq__(self, other: object) -> _SharedSeries:  # type: ignore[override]
        return _SharedSeries(self._series == other)

    def __and__(self, other: _SharedSeries) -> _SharedSeries:
        return _SharedSeries(self._series & other._series)

    def __or__(self, other: _SharedSeries) -> _SharedSeries:
        return _SharedSeries(self._series | other._series)

    def __invert__(self) -> _SharedSeries:
        return _SharedSeries(~self._series)


class _SharedRows:
    """``series.iloc``: positional slices, as pandas and cuDF both give them."""

    def __init__(self, series: pd.Series) -> None:
        self._series = series

    def __getitem__(self, rows: slice) -> _SharedSeries:
        assert isinstance(rows, slice)
        return _SharedSeries(self._series.iloc[rows])


class _SharedFrame:
    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame
        self.columns = frame.columns

    def __getitem__(self, column: str) -> _SharedSeries:
        return _SharedSeries(self._frame[column])

    def __len__(self) -> int:
        return len(self._frame)


def _mixed_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "spend": rng.lognormal(3, 1, n),
        "visits": pd.array(rng.integers(0, 40, n), dtype="Int64"),
        "member": rng.random(n) < 0.3,
        "opted_in": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5),
                             dtype="boolean"),
        "signup": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n),
                                                                 unit="D"),
        "channel": rng.choice(["app", "web", "store", "fax", None], n,
                              p=[0.4, 0.3, 0.2, 0.005, 0.095]),
        "tier": pd.Categorical(rng.choice(["gold", "silver", "bronze"], n)),
        "region": pd.Series(rng.choice(["north", "south", None], n), dtype="string"),
    })
    frame.loc[rng.random(n) < 0.05, "spend"] = np.nan
    frame.loc[rng.random(n) < 0.02, "spend"] = np.inf
    frame["visits"] = frame["visits"].mask(rng.random(n) < 0.04)
    return frame


def test_the_preparation_uses_only_the_api_cudf_shares_and_gives_the_same_matrix() -> None:
    frame = _mixed_frame()
    spec = fit_features(frame)
    expected, expected_imputed = spec.transform(frame)
    _SharedSeries.host_conversions = []
    matrix, imputed = spec.transform(_SharedFrame(frame), np)
    assert np.array_equal(matrix, expected) and matrix.dtype == np.float32
    assert imputed == expected_imputed and imputed["spend"] > 0 and imputed["channel"] > 0
    # only the date goes through pandas' parsing on the host; numbers, flags and categories
    # are prepared where the frame lives
    assert _SharedSeries.host_conversions == ["signup"]


def test_blocks_of_rows_give_the_same_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoseg.features as features_module

    frame = _mixed_frame(2500, seed=5)
    spec = fit_features(frame)
    whole, whole_imputed = spec.transform(frame)
    monkeypatch.setattr(features_module, "TRANSFORM_BLOCK_ROWS", 256)  # ten blocks
    blocks, blocks_imputed = spec.transform(_SharedFrame(frame), np)
    assert np.array_equal(blocks, whole) and blocks_imputed == whole_imputed
    empty, nothing = spec.transform(frame.iloc[:0])
    assert empty.shape == (0, len(spec.matrix_columns)) and nothing == {}


def test_levels_fold_to_other_and_missing_as_at_fit_time() -> None:
    frame = _mixed_frame()
    spec = fit_features(frame)
    channel = next(c for c in spec.categorical if c.column == "channel")
    assert "other" in channel.levels and "missing" in channel.levels  # "fax" is folded
    new_rows = pd.DataFrame({c: frame[c].iloc[:4] for c in frame.columns})
    new_rows["channel"] = ["fax", None, "app", "never seen"]
    matrix, _ = spec.transform(_SharedFrame(new_rows), np)
    start = spec.matrix_columns.index("channel=" + channel.levels[0])
    hot = matrix[:, start : start + len(channel.levels)] > 0
    assert [channel.levels[int(i)] for i in hot.argmax(axis=1)] == [
        "other", "missing", "app", "other"]
    assert (hot.sum(axis=1) == 1).all()


@pytest.mark.parametrize("series", [
    pd.Series(pd.Categorical(["a", "b", None, "a"])),
    pd.Series([True, False, True]),
    pd.Series([True, None, False], dtype="boolean"),
    pd.Series([datetime.date(2020, 1, 1), None, datetime.date(2021, 5, 3)]),
    pd.Series(pd.to_datetime(["2020-01-01", "2021-01-01 10:00:00", None], format="ISO8601")),
    pd.Series(pd.to_datetime(["2020-01-01", None]).tz_localize("UTC")),
    pd.Series([1, 1.0, True, "x", None], dtype=object),
    pd.Series([decimal.Decimal("1.50"), decimal.Decimal("1.5"), None], dtype=object),
    pd.Series([datetime.datetime(2020, 1, 1, 10, tzinfo=datetime.UTC),
               datetime.datetime(2020, 1, 1, 11, tzinfo=datetime.timezone(
                   datetime.timedelta(hours=1)))], dtype=object),
    pd.Series(["a", None, "b", np.nan], dtype=object),
    pd.Series(["a", None, "b"]),
    pd.Series([1.0, np.nan, -0.0, 0.0]),
    pd.Series([], dtype=object),
], ids=lambda s: str(s.dtype))
def test_column_text_is_astype_string(series: pd.Series) -> None:
    # Formatting each distinct value once must not merge values whose texts differ
    # (1 / 1.0 / True, Decimal 1.5 / 1.50, one instant in two time zones).
    series = series.rename("c")
    expected = series.astype("string")
    got = column_text(series)
    assert got.dtype == expected.dtype
    pd.testing.assert_series_equal(got, expected)


def test_column_text_names_integer_categories_as_written() -> None:
    # astype("string") writes 1.0 for the category 1 once a value is missing; the levels are
    # learnt from the values present (1), so both must read 1.
    series = pd.Series(pd.Categorical([1, 2, None, 1]))
    assert list(column_text(series)) == ["1", "2", pd.NA, "1"]


def _segments_with_noise(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Four planted segments in spend, visits and channel; a uniform signup date and a
    region drawn regardless of the segment."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    frame = pd.DataFrame({
        "spend": rng.lognormal(np.array([3.0, 4.5, 6.0, 4.5])[truth], 0.25),
        "visits": rng.normal(np.array([2.0, 8.0, 4.0, 2.0])[truth], 0.8),
        "channel": np.where(rng.random(n) < np.array([0.95, 0.05, 0.95, 0.05])[truth],
                            "app", "web"),
        "signup_date": pd.Timestamp("2020-01-01")
        + pd.to_timedelta(rng.integers(0, 2000, n), unit="D"),
        "region": rng.choice(["north", "south", "east", "west", "central"], n),
    })
    return frame, truth


def test_columns_independent_of_every_other_column_are_left_out_with_the_reason() -> None:
    frame, truth = _segments_with_noise(6000, seed=11)
    spec = fit_features(frame)
    dropped = _dropped(spec)
    assert spec.used_columns == ["spend", "visits", "channel"]
    for column in ("signup_date", "region"):
        assert dropped[column].startswith("independent of every other column (no dependence "
                                          "found by chi-square and rank-correlation tests on")
        assert dropped[column].endswith("shares no segment structure with them; keep it with "
                                        "--keep-columns")
    # The left-out columns are not in the matrix; the planted segments are found without them.
    matrix, _ = spec.transform(frame)
    assert matrix.shape[1] == len(spec.matrix_columns) == 2 + 2
    result = search_k(matrix, [2, 3, 4, 5, 6], restarts=4, seed=0, exact_max_rows=10_000,
                      sample_size=3000)
    assert result.chosen_k == 4
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, result.labels) > 0.9
    # Saved and re-applied, the spec leaves them out the same way.
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert _dropped(again)["region"] == dropped["region"]


def test_dependence_without_correlation_counts() -> None:
    # Four clusters at the corners of a diamond: x and y are uncorrelated, yet each decides
    # where the other can be. A linear test would call them independent; the binned test
    # must not.
    rng = np.random.default_rng(12)
    n = 4000
    corner = rng.integers(0, 4, n)
    frame = pd.DataFrame({
        "x": np.array([0.0, 10.0, 0.0, -10.0])[corner] + rng.normal(0, 1, n),
        "y": np.array([10.0, 0.0, -10.0, 0.0])[corner] + rng.normal(0, 1, n),
        "noise": rng.normal(0, 1, n),
    })
    assert abs(np.corrcoef(frame["x"], frame["y"])[0, 1]) < 0.05
    spec = fit_features(frame)
    assert spec.used_columns == ["x", "y"]
    assert _dropped(spec)["noise"].startswith("independent of every other column")


def test_a_table_of_mutually_independent_columns_keeps_them_all() -> None:
    # No pair shares structure, so there is no "structured rest" to protect: nothing is left
    # out (the same for a small table, where the test has little power).
    for n in (200, 5000):
        spec = fit_features(_frame(n, seed=3))
        assert not any(r.startswith("independent") for r in _dropped(spec).values())
        assert {"spend", "age", "plan", "member", "joined"} <= set(spec.used_columns)


def test_a_column_is_kept_when_it_depends_on_any_other_one() -> None:
    rng = np.random.default_rng(13)
    n = 3000
    a = rng.normal(0, 1, n)
    frame = pd.DataFrame({
        "a": a,
        "b": a + rng.normal(0, 1, n),  # depends on a
        "c": rng.normal(0, 1, n),
        "d": np.where(rng.random(n) < 0.5, "x", "y"),
    })
    frame["e"] = frame["c"] * np.where(frame["d"] == "x", 1.0, 3.0)  # c and d through e only
    spec = fit_features(frame)
    assert set(spec.used_columns) == {"a", "b", "c", "d", "e"}


def test_keep_columns_are_never_left_out_as_independent() -> None:
    frame, _ = _segments_with_noise(6000, seed=11)
    spec = fit_features(frame, keep_columns=("region",))
    assert spec.used_columns == ["spend", "visits", "channel", "region"]
    assert _dropped(spec)["signup_date"].startswith("independent of every other column")
    # Keeping every column but one still screens that one.
    spec = fit_features(frame, keep_columns=("spend", "visits", "channel", "region"))
    assert "signup_date" not in spec.used_columns
    # A kept column that cannot be prepared is still left out for that reason.
    frame["constant"] = 1.0
    spec = fit_features(frame, keep_columns=("constant",))
    assert "constant" not in spec.used_columns


@pytest.mark.parametrize("value", ["other", "missing"])
def test_a_value_named_like_a_folded_level_is_that_level(value: str) -> None:
    # "other" and "missing" are common category values; the folded rare values (the missing
    # rows) join the value's level instead of making a second level of the same name.
    rng = np.random.default_rng(14)
    n = 3000
    frame = pd.DataFrame({"a": rng.normal(size=n)})
    frame["b"] = frame["a"] + rng.normal(size=n)
    choices = ["male", "female", value] + [f"rare{i}" for i in range(30)]
    shares = [0.45, 0.40, 0.12] + [0.03 / 30] * 30
    frame["g"] = pd.Series(rng.choice(choices, n, p=shares), dtype=object)
    frame.loc[:40, "g"] = None
    spec = fit_features(frame, keep_columns=("g",))
    (cat,) = spec.categorical
    assert sorted(cat.levels) == sorted(["male", "female", "other", "missing"])
    assert len(spec.matrix_columns) == len(set(spec.matrix_columns))
    readable = spec.readable(frame)["g"]
    assert readable[frame["g"] == value].eq(value).all()
    assert readable[frame["g"].str.startswith("rare", na=False)].eq("other").all()
    assert readable[frame["g"].isna()].eq("missing").all()
    matrix, _ = spec.transform(frame)
    # every row is exactly one level of g: one one-hot column set, none always zero
    onehot = matrix[:, -len(cat.levels):]
    assert (onehot > 0).sum(axis=1).tolist() == [1] * n
    assert (onehot > 0).any(axis=0).all()


def test_small_tables_are_not_screened() -> None:
    # Under INDEPENDENCE_MIN_ROWS rows the tests cannot tell independent from weakly dependent.
    frame, _ = _segments_with_noise(600, seed=11)
    spec = fit_features(frame)
    assert {"signup_date", "region"} <= set(spec.used_columns)


def test_a_weak_monotone_dependence_keeps_the_column() -> None:
    # Correlated 0.15 with x: too weak for the chi-square test's 81 cells at these rows, plain
    # for the rank correlation; the column of pure noise still goes.
    rng = np.random.default_rng(15)
    n = 3000
    x = rng.normal(size=n)
    frame = pd.DataFrame({
        "x": x,
        "y": x + rng.normal(size=n),
        "weak": 0.15 * x + np.sqrt(1 - 0.15 ** 2) * rng.normal(size=n),
        "noise": rng.normal(size=n),
    })
    spec = fit_features(frame)
    assert spec.used_columns == ["x", "y", "weak"]
    assert _dropped(spec)["noise"].startswith("independent of every other column")


def test_the_text_missing_with_missing_values_is_a_single_value() -> None:
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7,
                          "note": ["missing"] * 20 + [None] * 20})
    spec = fit_features(frame)
    assert _dropped(spec)["note"] == "single value"
    spec.readable(frame)  # no duplicate category
