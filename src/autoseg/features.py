"""Prepare features: decide which columns can help, and turn them into a numeric matrix.

Rules (each decision is logged and recorded with its reason):

* ``ignore_columns`` and columns with at most one distinct non-missing value are left out;
  so are integer row ids, near-unique strings, free text and unsupported types.
* Numbers: ``inf`` becomes missing, missing values are imputed with the median, strongly
  right-skewed columns are log-transformed (``sign(x) * log1p(|x|)``) when the log at least
  halves their skewness (a heavy tail, not a minority mode far from 0), then each column is
  centred on its median and divided by the standard deviation of its values winsorised at the
  1st and 99th percentiles (:func:`column_scale`), and clipped to +-``CLIP`` so a handful of
  extreme rows cannot take a cluster of their own. The winsorised standard deviation replaced
  ``IQR / 1.349``: both ignore a few extreme rows, but the quartiles of a multimodal column
  land wherever its modes fall, so the IQR re-weighted columns against each other and bent
  round clusters into ellipses. A column where more than half the rows hold one value
  (zero-inflated counts, capital gains) is scaled like a two-valued column: its typical other
  value lies ``CATEGORY_DISTANCE`` from the common one (standardised, the 8% of non-zero rows
  of a census ``capital_gain`` sit 3.7 standard deviations away and become a segment of their
  own next to one of 92%).
* Two-valued columns (booleans, 0/1 flags) and categories are weighted so that two rows that
  differ in the column are ``CATEGORY_DISTANCE`` = 1 apart: one standard deviation of a scaled
  numeric column. A category then adds at most 1 to the expected squared distance between two
  rows, half of what a unit-variance numeric column adds, so one category never outweighs a
  numeric column. This avoids the trap of standardising one-hot columns, which puts the rows of
  a rare category 17-21 standard deviations away where silhouette rewards isolating them.
  (Measured: at ``sqrt(2)`` the exact category gaps dominated, e.g. Palmer penguins split into
  nine island x sex groups; at 1 it splits Gentoo from the rest, and the planted demo segments
  are still found.)
* Categories keep their levels holding at least ``MIN_LEVEL_SHARE`` of rows (at most
  ``MAX_LEVELS``); the rest are folded into ``other``; missing values become their own level.
* Dates become days since 1970-01-01 and are then treated as numbers.
* A column independent of every other kept column is left out (:func:`independent_columns`):
  a segment is a group of rows that differ from the rest in several columns at once, and a
  column that no other column depends on (a random signup date, a region drawn regardless of
  anything else) shares no such structure. Kept at full weight it only adds spread: a uniform
  column weighs as much as a real one, and mean silhouette then prefers cutting the table in two
  over the finer true segments (measured on benchmarks/scale.py's 1M planted customers: k = 2,
  ARI 0.38 with them, k = 4, ARI 0.70 without; benchmarks/quality.py's planted customer table
  k = 2, ARI 0.45 with them, the planted k = 5, ARI 0.93 without). The test is a chi-square
  test of independence of every pair of columns,
  binned, on at most ``INDEPENDENCE_ROWS`` rows, at a family-wise level ``INDEPENDENCE_ALPHA``
  over all pairs; it leaves columns out only when at least two dependent columns stay (a table
  of mutually independent columns has no shared structure to find, and keeps them all), and
  never leaves out a column named in ``keep_columns`` (``--keep-columns``).

The fitted :class:`FeatureSpec` is plain data (JSON) and re-applies to new rows.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autoseg.errors import InputDataError

log = logging.getLogger(__name__)

CLIP = 4.0
# Rows per block of the preparation (see FeatureSpec.transform): a 65,536 x 20 float32 block
# is 5 MB, within the cache.
TRANSFORM_BLOCK_ROWS = 65_536
# A numeric column where more than this share of rows holds one value (zero-inflated counts,
# capital gains) is scaled like a two-valued column (see column_scale).
POINT_MASS_SHARE = 0.5
# Percentile on each side at which values are winsorised before their standard deviation is
# taken as the column's scale (see column_scale).
WINSOR_PERCENT = 1.0
SKEW_THRESHOLD = 1.0
# The log transform is kept only when it at least halves the skewness (see _fit_numeric).
LOG_SKEW_REDUCTION = 0.5
MIN_LEVEL_SHARE = 0.01
MAX_LEVELS = 20
MIN_COVERAGE = 0.5  # a category whose kept levels cover less than this is left out
NEAR_UNIQUE_RATIO = 0.5
FREE_TEXT_MEAN_LENGTH = 30
OTHER_LEVEL = "other"
MISSING_LEVEL = "missing"
# Two rows that differ in a binary or categorical column are this far apart in the prepared space.
CATEGORY_DISTANCE = 1.0
_ONE_HOT_VALUE = CATEGORY_DISTANCE / math.sqrt(2.0)  # each of the two differing one-hot columns
_ID_NAME = re.compile(r"(^|[_\s-])(id|key|uuid|guid|no|number)$|id$", re.IGNORECASE)
_EPOCH = pd.Timestamp("1970-01-01")
# The independence screen (see independent_columns): rows it reads, at most (fewer on wide
# tables, so its cost stays near INDEPENDENCE_CELL_BUDGET row x column-pair visits)...
INDEPENDENCE_ROWS = 20_000
INDEPENDENCE_CELL_BUDGET = 400_000_000
# ...and at least: on fewer rows the tests cannot tell "independent" from "weakly dependent"
# (at 500 rows a column correlated 0.25 with another was called independent in most draws of
# the chi-square test alone), so a smaller table, or one too wide for the budget, is not
# screened (every column is kept)...
INDEPENDENCE_MIN_ROWS = 1_000
# ...the quantile bins of a numeric column (at most; fewer on small tables, so that a numeric
# x numeric table expects at least INDEPENDENCE_MIN_CELL rows per cell)...
INDEPENDENCE_MAX_BINS = 10
INDEPENDENCE_MIN_CELL = 5
# ...and the family-wise level over all tests (Bonferroni): the chance that a table of mutually
# independent columns shows a "dependent" pair by chance, and so loses the others, is 0.1%.
INDEPENDENCE_ALPHA = 0.001
INDEPENDENT_REASON = (
    "independent of every other column (no dependence found by chi-square and rank-correlation "
    "tests on {rows} rows, p >= {threshold:.2g} against each): it shares no segment structure "
    "with them; keep it with --keep-columns"
)
# Python types whose equal values always have the same text (see column_text).
_TEXT_KEYS = frozenset({str, datetime.date})


@dataclass
class NumericFeature:
    """A numeric, date or two-valued column and how it is scaled."""

    column: str
    kind: str  # "numeric", "date" or "binary"
    fill: float  # imputation value in readable units (median, or the mode for binary)
    log: bool = False
    center: float = 0.0
    scale: float = 1.0
    low: float = 0.0  # binary: the two values
    high: float = 1.0


@dataclass
class CategoricalFeature:
    """A categorical column: the levels kept; everything else is ``other``."""

    column: str
    levels: list[str]  # includes OTHER_LEVEL / MISSING_LEVEL when they occur


@dataclass
class DroppedColumn:
    """A column left out of clustering and why."""

    column: str
    reason: str


@dataclass
class FeatureSpec:
    """The fitted feature preparation; plain data that can be saved as JSON."""

    numeric: list[NumericFeature] = field(default_factory=list)
    categorical: list[CategoricalFeature] = field(default_factory=list)
    dropped: list[DroppedColumn] = field(default_factory=list)
    input_dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def used_columns(self) -> list[str]:
        """Input columns that feed the clustering, in matrix order."""
        return [f.column for f in self.numeric] + [f.column for f in self.categorical]

    @property
    def matrix_columns(self) -> list[str]:
        """Names of the prepared matrix's columns (``column=level`` for categories)."""
        names = [f.column for f in self.numeric]
        for cat in self.categorical:
            names.extend(f"{cat.column}={level}" for level in cat.levels)
        return names

    def to_dict(self) -> dict[str, Any]:
        """JSON-able representation."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Rebuild a spec saved with :meth:`to_dict`."""
        return cls(
            numeric=[NumericFeature(**d) for d in data["numeric"]],
            categorical=[CategoricalFeature(**d) for d in data["categorical"]],
            dropped=[DroppedColumn(**d) for d in data["dropped"]],
            input_dtypes=dict(data.get("input_dtypes", {})),
        )

    def check_columns(self, frame: pd.DataFrame) -> None:
        """Raise when ``frame`` lacks a column the spec needs."""
        missing = [c for c in self.used_columns if c not in frame.columns]
        if missing:
            raise InputDataError(
                f"column {missing[0]!r} used by the saved model is missing from the input "
                f"({len(missing)} missing in all): use a table with the model's columns or refit "
                "with --force-refit"
            )

    def readable(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Human-readable features: original units, NaN kept, categories folded.

        Dates are days since 1970-01-01, two-valued columns 0/1 (``high`` is 1).
        """
        self.check_columns(frame)
        out: dict[str, pd.Series] = {}
        for feat in self.numeric:
            values = _numeric_values(frame[feat.column], feat.kind, feat.column)
            if feat.kind == "binary":
                values = pd.Series(
                    np.where(np.isnan(values), np.nan, values == feat.high), dtype="float64"
                ).to_numpy()
            out[feat.column] = pd.Series(values, index=frame.index, dtype="float64")
        for cat in self.categorical:
            out[cat.column] = _fold_levels(frame[cat.column], cat.levels)
        return pd.DataFrame(out, index=frame.index)

    def transform(self, frame: Any, xp: Any = np) -> tuple[Any, dict[str, int]]:
        """Prepared float32 matrix for k-means, and counts of values imputed per column.

        ``frame`` is a pandas or a cuDF frame and ``xp`` the array namespace of the result
        (NumPy, or CuPy for a cuDF frame): on a GPU host the matrix is built on the device from
        the device frame, with no round trip through host memory. Both run these same lines:
        every frame operation here is one pandas and cuDF share (``astype``, ``isna``,
        ``fillna``, ``isin``, ``==``, ``values``, ``sum``, ``iloc``, ``cat.codes``,
        ``cat.categories``; see docs/gpu.md), block by block of rows. Columns that need pandas'
        parsing (dates, durations, decimals and numbers stored as text) are
        converted on the host, one column at a time (:func:`_column_values`).
        """
        self.check_columns(frame)
        n = len(frame)
        width = len(self.matrix_columns)
        matrix = xp.empty((n, width), dtype=xp.float32)
        imputed: dict[str, int] = {}
        # Block by block of rows, each assembled in a small C-ordered buffer and copied in
        # whole: writing the columns of a 10M-row matrix one by one cost 4x more per row than
        # at 1M rows (every column write walks the whole matrix; every temporary was a fresh
        # 80 MB allocation); by blocks the cost grows linearly.
        for start in range(0, n, TRANSFORM_BLOCK_ROWS):
            stop = min(n, start + TRANSFORM_BLOCK_ROWS)
            matrix[start:stop] = self._prepare_block(frame, start, stop, width, imputed, xp)
        return matrix, {column: count for column, count in imputed.items() if count}

    def _prepare_block(self, frame: Any, start: int, stop: int, width: int,
                       imputed: dict[str, int], xp: Any) -> Any:
        """The prepared rows ``start:stop`` of ``frame``; adds their imputed values."""
        block = xp.zeros((stop - start, width), dtype=xp.float32)
        col = 0
        for feat in self.numeric:
            series = frame[feat.column].iloc[start:stop]
            raw, missing = _column_values(series, feat.kind, feat.column, xp)
            imputed[feat.column] = imputed.get(feat.column, 0) + int(missing.sum())
            values = xp.where(missing, feat.fill, raw)
            if feat.kind == "binary":
                block[:, col] = (values == feat.high) * CATEGORY_DISTANCE
            else:
                if feat.log:
                    values = xp.sign(values) * xp.log1p(xp.abs(values))
                scaled = (values - feat.center) / feat.scale
                block[:, col] = xp.clip(scaled, -CLIP, CLIP)
            col += 1
        for cat in self.categorical:
            series = frame[cat.column].iloc[start:stop]
            codes = _level_codes(series, cat.levels, xp)
            rows = xp.nonzero(codes >= 0)[0]
            block[rows, col + codes[rows]] = _ONE_HOT_VALUE
            imputed[cat.column] = imputed.get(cat.column, 0) + int(series.isna().sum())
            col += len(cat.levels)
        return block



def _is_native_number(series: Any) -> bool:
    """Whether a pandas or cuDF column holds plain numbers or booleans (no parsing needed)."""
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return False
    try:
        return bool(pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))
    except TypeError:  # a dtype pandas does not know (e.g. a cuDF decimal)
        return False


def _column_values(series: Any, kind: str, column: str, xp: Any) -> tuple[Any, Any]:
    """Float64 values of a numeric/date/boolean column and its mask of missing values
    (missing, NaN and ``inf``), both arrays of ``xp``; missing values are 0 in the first.

    Plain numbers and booleans stay where the frame is (pandas and cuDF share every call
    here; cuDF's nulls and NaN are both caught). Dates, durations and numbers stored as text
    or decimals go through :func:`_numeric_values` on the host: it needs pandas' parsing
    (``to_datetime``/``to_timedelta`` with ``errors="coerce"``, time zones, ``Decimal``).
    """
    if kind != "date" and _is_native_number(series):
        nulls = xp.asarray(series.isna().values)
        raw = xp.asarray(series.astype("float64").fillna(0.0).values, dtype=xp.float64)
        missing = nulls | ~xp.isfinite(raw)
        return xp.where(missing, 0.0, raw), missing
    host = series.to_pandas() if hasattr(series, "to_pandas") else series
    values = xp.asarray(_numeric_values(host, kind, column))
    missing = xp.isnan(values)
    return xp.where(missing, 0.0, values), missing


def _level_codes(series: Any, levels: list[str], xp: Any) -> Any:
    """Index into ``levels`` of every row, an int array of ``xp`` (-1: no kept level): the
    level :func:`_fold_levels` maps it to (values outside the levels to ``other``, missing
    ones to ``missing``, when those levels are kept), on pandas or cuDF alike.

    Category columns are mapped through their category codes (one lookup per row; the
    category labels, a short list, are read on the host); other columns compare their text
    with each kept level.
    """
    index = {level: i for i, level in enumerate(levels)}
    other = index.get(OTHER_LEVEL, -1)
    missing = index.get(MISSING_LEVEL, -1)
    if hasattr(series, "cat") and getattr(series.dtype, "categories", None) is not None:
        categories = series.cat.categories
        labels = categories.to_pandas() if hasattr(categories, "to_pandas") else categories
        # position len(categories) is where the missing rows' code -1 lands
        lookup = [index.get(str(label), other) for label in labels.astype(str)] + [missing]
        codes = xp.asarray(series.cat.codes.astype("int64").fillna(-1).values)
        return xp.asarray(lookup, dtype=xp.int64)[codes]
    present = ~series.isna()
    text = series.astype("str")
    kept = text.isin(levels) & present
    codes = xp.full(len(series), -1, dtype=xp.int64)
    if other >= 0:
        codes[xp.asarray((present & ~kept).values)] = other
    if missing >= 0:
        codes[xp.asarray((~present).values)] = missing
    for i, level in enumerate(levels):
        # cuDF compares a null to null: fill it (pandas gives False already)
        codes[xp.asarray(((text == level).fillna(False) & present).values)] = i
    return codes


def _numeric_values(series: pd.Series, kind: str, column: str) -> np.ndarray:
    """Float64 values of a numeric/date/boolean column; ``inf`` and missing become NaN."""
    if kind == "date" or pd.api.types.is_datetime64_any_dtype(series.dtype):
        if not pd.api.types.is_datetime64_any_dtype(series.dtype):
            series = pd.to_datetime(series, errors="coerce", utc=True)
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        days = (series - _EPOCH) / pd.Timedelta(days=1)
        return days.to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_timedelta64_dtype(series.dtype) or (
        pd.api.types.is_object_dtype(series.dtype) and column_kind(series) == "duration"
    ):
        series = pd.to_timedelta(series, errors="coerce")
        return (series / pd.Timedelta(seconds=1)).to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_object_dtype(series.dtype):
        series = series.map(lambda v: float(v) if isinstance(v, decimal.Decimal) else v)
    numbers = pd.to_numeric(series, errors="coerce")
    bad = numbers.isna() & series.notna()
    if bad.any() and bad.mean() > 0.5:
        raise InputDataError(
            f"column {column!r} holds text where the model expects numbers: fix the column or "
            "refit with --force-refit"
        )
    values = numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def column_text(series: pd.Series) -> pd.Series:
    """The values of ``series`` as text (pandas ``string`` dtype, missing values ``<NA>``).

    The same result as ``series.astype("string")``, which formats every row on its own (about
    0.1 s for 200,000 dates or booleans, 0.034 s for a category column); here each distinct
    value is formatted once and the rows take their text by code (0.003-0.02 s). Text is what
    a column's levels are compared and counted by.

    Parameters
    ----------
    series
        Any pandas column.

    Returns
    -------
    pandas.Series
        Same index and name, ``string`` dtype.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        labels, codes = series.cat.categories, series.cat.codes.to_numpy()
    elif pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype) or (
        pd.api.types.is_object_dtype(dtype)
    ):
        codes, labels = pd.factorize(series)
        if pd.api.types.is_object_dtype(dtype) and not {type(v) for v in labels} <= _TEXT_KEYS:
            # Equal values may have different texts: 1, 1.0 and True, Decimal 1.5 and 1.50,
            # one instant in two time zones; factorize would give them one.
            return series.astype("string")
        labels = pd.Index(labels, dtype=object if pd.api.types.is_object_dtype(dtype) else None)
    else:
        return series.astype("string")  # text already, or numbers: formatted as they are
    values = labels.astype("string").take(codes, allow_fill=True, fill_value=pd.NA)
    return pd.Series(values, index=series.index, name=series.name)

def _fold_levels(series: pd.Series, levels: list[str]) -> pd.Series:
    """Map values to the kept levels; others to ``other``, missing to ``missing``.

    Through the level codes of :func:`_level_codes` (a category column: one lookup per row;
    building the categorical from text hashed every row again: 0.021 s a column at 200,000
    rows, now 0.004 s).
    """
    codes = _level_codes(series, levels, np)
    return pd.Series(pd.Categorical.from_codes(codes, categories=levels), index=series.index)


def fit_features(frame: pd.DataFrame, ignore_columns: tuple[str, ...] = ("time",),
                 keep_columns: tuple[str, ...] = ()) -> FeatureSpec:
    """Decide the role of every column and fit the scaling.

    Parameters
    ----------
    frame
        The rows to fit on: the whole table, or the run's feature-fit sample of a large one
        (``autoseg.sampling.plan_rows``; at most ``sampling.FEATURE_FIT_ROWS`` rows). Column
        decisions (type, "unique integer row id") and the scaling are made on these rows, so
        both engines make the same decisions from the same rows.
    ignore_columns
        Columns left out of clustering (they are still copied to the output).
    keep_columns
        Columns never left out as independent of the others (the user's choice: a column
        they segment by on purpose); they are still left out when they cannot be prepared.

    Returns
    -------
    FeatureSpec
        The fitted spec.

    Raises
    ------
    InputDataError
        When no column is left to cluster on.
    """
    spec = FeatureSpec(input_dtypes={str(c): str(frame[c].dtype) for c in frame.columns})
    ignored = set(ignore_columns)
    for name in frame.columns:
        column = str(name)
        if column in ignored:
            spec.dropped.append(DroppedColumn(column, "in ignore_columns"))
            continue
        decision = _fit_column(column, frame[name], frame[name])
        if isinstance(decision, DroppedColumn):
            spec.dropped.append(decision)
        elif isinstance(decision, NumericFeature):
            spec.numeric.append(decision)
        else:
            spec.categorical.append(decision)
    _leave_out_independent(spec, frame, set(keep_columns))
    for dropped in spec.dropped:
        log.info("column %r left out: %s", dropped.column, dropped.reason)
    if not spec.used_columns:
        reasons = "; ".join(f"{d.column}: {d.reason}" for d in spec.dropped[:5])
        raise InputDataError(
            "no column is left to cluster on (" + reasons + "): give a table with varying "
            "numeric or categorical columns, or shorten --ignore-columns"
        )
    return spec


def _leave_out_independent(spec: FeatureSpec, frame: pd.DataFrame, keep: set[str]) -> None:
    """Move the columns :func:`independent_columns` finds, other than those in ``keep``,
    from the spec's features to its dropped columns."""
    if len(spec.used_columns) < 3 or not set(spec.used_columns) - keep:
        return  # two columns are either dependent on each other or both independent
    screen = independent_columns(spec, frame)
    if screen is None:
        log.info("independence screen skipped: %d rows, %d columns (it needs at least %d rows "
                 "within its budget of row x column-pair visits)", len(frame),
                 len(spec.used_columns), INDEPENDENCE_MIN_ROWS)
        return
    independent = [column for column in screen.columns if column not in keep]
    if not independent:
        return
    left_out = set(independent)
    reason = INDEPENDENT_REASON.format(rows=screen.rows, threshold=screen.threshold)
    spec.dropped.extend(DroppedColumn(column, reason) for column in independent)
    spec.numeric = [f for f in spec.numeric if f.column not in left_out]
    spec.categorical = [f for f in spec.categorical if f.column not in left_out]


@dataclass(frozen=True)
class IndependenceScreen:
    """What :func:`independent_columns` found.

    Attributes
    ----------
    columns : list of str
        The used columns no other used column depends on (in the spec's order; empty when
        fewer than two dependent columns would remain).
    threshold : float
        The p-value threshold of each test (the family-wise level over the number of tests).
    rows : int
        Rows the tests read.
    """

    columns: list[str]
    threshold: float
    rows: int


def independent_columns(spec: FeatureSpec, frame: pd.DataFrame,
                        seed: int = 0) -> IndependenceScreen | None:
    """The used columns of ``spec`` that no other used column depends on.

    Every pair of columns is tested for independence with Pearson's chi-square test on their
    contingency table: a numeric column (after the spec's scaling) cut into quantile bins, a
    two-valued column into its two values, a category into its kept levels. Binning makes the
    test see any dependence, not only a linear one (four round clusters at the corners of a
    diamond have uncorrelated coordinates, yet strongly dependent ones). Pairs of numeric
    columns are also tested by the correlation of their bin ranks (a rank correlation), which
    has far more power against a monotone dependence than the chi-square test's many cells.
    A column is independent when no test of a pair it is in rejects independence at
    ``INDEPENDENCE_ALPHA`` divided by the number of tests. Columns are reported only when at
    least two dependent ones remain.

    Parameters
    ----------
    spec
        The fitted features (before this screen).
    frame
        The rows the spec was fitted on; at most ``INDEPENDENCE_ROWS`` of them are read (fewer
        on wide tables), drawn with ``seed``.
    seed
        Seed of the row draw.

    Returns
    -------
    IndependenceScreen or None
        What the tests found; ``None`` when there are too few rows for them to tell
        independence from weak dependence (under ``INDEPENDENCE_MIN_ROWS``, or a table so wide
        that the budget allows fewer rows).
    """
    from scipy.special import chdtrc, ndtr  # chi-square and normal tails; imported where used

    names = spec.used_columns
    n_columns = len(names)
    n_numeric = len(spec.numeric)
    n_pairs = n_columns * (n_columns - 1) // 2
    n_tests = n_pairs + n_numeric * (n_numeric - 1) // 2
    threshold = INDEPENDENCE_ALPHA / max(n_tests, 1)
    max_rows = min(INDEPENDENCE_ROWS, INDEPENDENCE_CELL_BUDGET // max(n_pairs, 1), len(frame))
    if max_rows < INDEPENDENCE_MIN_ROWS:
        return None
    if len(frame) > max_rows:
        positions = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows,
                                                               replace=False))
        frame = frame.iloc[positions].reset_index(drop=True)
    codes, levels = _column_codes(spec, frame)
    n_rows = codes.shape[0]
    untested = levels < 2  # constant on these rows: cannot be tested, so it is kept
    dependent = np.zeros(n_columns, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(levels)])
    shares = np.bincount((codes + starts[:-1]).ravel(), minlength=int(starts[-1])) / n_rows
    for i in range(n_columns - 1):
        if untested[i]:
            continue
        # All pairs (i, j > i) at once: one joint count over (level of i) x (level of j).
        others = codes[:, i + 1:] + (starts[i + 1:-1] - starts[i + 1])
        width = int(starts[-1] - starts[i + 1])
        joint = np.bincount((codes[:, i:i + 1] * width + others).ravel(),
                            minlength=int(levels[i]) * width).reshape(int(levels[i]), width)
        expected = n_rows * np.outer(shares[starts[i]:starts[i + 1]], shares[starts[i + 1]:])
        with np.errstate(divide="ignore", invalid="ignore"):
            cells = np.where(expected > 0, (joint - expected) ** 2 / expected, 0.0)
        statistic = np.add.reduceat(cells.sum(axis=0), starts[i + 1:-1] - starts[i + 1])
        freedom = (levels[i] - 1) * (levels[i + 1:] - 1)
        p_values = np.where(freedom > 0, chdtrc(np.maximum(freedom, 1), statistic), 1.0)
        rejected = p_values < threshold
        if rejected.any():
            dependent[i] = True
            dependent[i + 1:] |= rejected
    if n_numeric >= 2:
        # Numeric columns come first in the spec: their codes are ordered bins, so the
        # correlation of the codes is a rank correlation (with ties); under independence
        # sqrt(n) * r is close to standard normal.
        ranks = codes[:, :n_numeric].astype(np.float64)
        ranks -= ranks.mean(axis=0)
        spread = np.sqrt((ranks ** 2).sum(axis=0))
        spread[spread == 0] = np.inf  # a constant column correlates with nothing
        correlation = (ranks.T @ ranks) / np.outer(spread, spread)
        p_values = 2.0 * ndtr(-np.abs(correlation) * np.sqrt(n_rows))
        np.fill_diagonal(p_values, 1.0)
        dependent[:n_numeric] |= (p_values < threshold).any(axis=1)
    if dependent.sum() < 2:
        return IndependenceScreen([], threshold, n_rows)
    kept = dependent | untested
    return IndependenceScreen(
        [name for name, keep in zip(names, kept, strict=True) if not keep], threshold, n_rows)


def _column_codes(spec: FeatureSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each used column of ``frame`` as small integer codes (rows x columns), and the number
    of codes of each column: quantile bins of the prepared numeric values, the two values of a
    two-valued column, the kept levels of a category."""
    matrix, _ = spec.transform(frame)
    n_rows = matrix.shape[0]
    bins = int(np.clip(np.sqrt(n_rows / INDEPENDENCE_MIN_CELL), 2, INDEPENDENCE_MAX_BINS))
    inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    columns = []
    col = 0
    for _feature in spec.numeric:
        values = matrix[:, col]
        edges = np.unique(np.quantile(values, inner))
        columns.append(np.searchsorted(edges, values, side="right"))
        col += 1
    for cat in spec.categorical:
        columns.append(np.argmax(matrix[:, col:col + len(cat.levels)], axis=1))
        col += len(cat.levels)
    codes = np.empty((n_rows, len(columns)), dtype=np.int64)
    levels = np.empty(len(columns), dtype=np.int64)
    for j, column in enumerate(columns):
        # Dense codes 0..m-1: a bin or level no row of this draw holds would be an empty
        # row of the contingency table.
        # (Through a presence table, not np.unique: no sort of every column.)
        present = np.bincount(column) > 0
        codes[:, j] = (np.cumsum(present) - 1)[column]
        levels[j] = int(present.sum())
    return codes, levels


def column_kind(series: pd.Series) -> str:
    """What a column holds: ``bool``, ``number``, ``date``, ``duration``, ``text`` or
    ``unsupported``. Object columns (DuckDB DATE and DECIMAL arrive as Python objects) are
    classified by their values."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "date"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "duration"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if isinstance(dtype, pd.CategoricalDtype) or (
        pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype)
    ):
        return "text"
    if pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        return {
            "string": "text", "categorical": "text", "empty": "text",
            "boolean": "bool",
            "integer": "number", "floating": "number", "mixed-integer-float": "number",
            "decimal": "number",
            "date": "date", "datetime": "date", "datetime64": "date",
            "timedelta": "duration", "timedelta64": "duration",
        }.get(inferred, "unsupported")
    return "unsupported"


def _fit_column(
    column: str, full: pd.Series, sample: pd.Series
) -> NumericFeature | CategoricalFeature | DroppedColumn:
    non_null = sample.dropna()
    if non_null.empty:
        return DroppedColumn(column, "all values missing")
    kind = column_kind(full)
    if kind == "unsupported":
        inferred = pd.api.types.infer_dtype(non_null, skipna=True)
        return DroppedColumn(column, f"unsupported type {full.dtype} ({inferred} values)")
    if kind == "bool":
        return _fit_binary(column, non_null.astype("float64"), kind="binary")
    if kind in ("number", "date", "duration"):
        values = _numeric_values(sample, "date" if kind == "date" else "numeric", column)
        finite = values[~np.isnan(values)]
        if finite.size == 0:
            return DroppedColumn(column, "no finite values")
        distinct = np.unique(finite)
        if distinct.size <= 1:
            return DroppedColumn(column, "single value")
        if kind == "number" and _is_integral(full) and _looks_like_row_id(column, full):
            return DroppedColumn(column, "row id (unique integer per row)")
        if distinct.size == 2 and kind == "number":
            return _fit_binary(column, pd.Series(finite), kind="binary")
        return _fit_numeric(column, finite, kind="date" if kind == "date" else "numeric")
    return _fit_categorical(column, sample, non_null)


def _is_integral(series: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(series.dtype):
        return True
    return (
        pd.api.types.is_object_dtype(series.dtype)
        and pd.api.types.infer_dtype(series, skipna=True) == "integer"
    )


def _looks_like_row_id(column: str, full: pd.Series) -> bool:
    """An integer column unique per row that is named like an id or counts 1, 2, 3..."""
    if full.isna().any() or not full.is_unique or len(full) < 3:
        return False
    if _ID_NAME.search(column):
        return True
    ordered = np.sort(full.to_numpy())
    steps = np.diff(ordered)
    return bool(steps.size and (steps == steps[0]).all())


def _fit_binary(column: str, values: pd.Series, kind: str) -> NumericFeature:
    distinct = np.unique(values.to_numpy(dtype="float64"))
    low, high = float(distinct.min()), float(distinct.max())
    if low == high:
        return DroppedColumn(column, "single value")  # type: ignore[return-value]
    mode = float(values.mode().iloc[0])
    return NumericFeature(column, kind, fill=mode, low=low, high=high)


def _fit_numeric(column: str, finite: np.ndarray, kind: str) -> NumericFeature | DroppedColumn:
    fill = float(np.median(finite))
    skew = _skewness(finite)
    values = finite
    if kind == "numeric" and skew > SKEW_THRESHOLD:
        logged = np.sign(finite) * np.log1p(np.abs(finite))
        # A heavy right tail (spend, counts) becomes nearly symmetric under the log; a column
        # whose skew comes from a minority mode far from 0 (coordinates of point clusters,
        # Fränti's unbalance: 2.9 -> 2.2) barely changes, and the log would only bend it.
        if abs(_skewness(logged)) <= LOG_SKEW_REDUCTION * skew:
            values = logged
    use_log = values is not finite
    center = float(np.median(values))
    scale = column_scale(values)
    if not np.isfinite(scale) or scale <= 0:
        return DroppedColumn(column, "single value")
    return NumericFeature(column, kind, fill=fill, log=use_log, center=center, scale=scale)


def column_scale(values: np.ndarray) -> float:
    """Spread of a numeric column: the standard deviation of its winsorised values.

    Values beyond the ``WINSOR_PERCENT`` and ``100 - WINSOR_PERCENT`` percentiles are set to
    those percentiles first, so up to that share of extreme rows on each side cannot inflate
    the scale (the job ``IQR / 1.349`` did before). Unlike the IQR, the standard deviation
    keeps the geometry of multimodal columns: the quartiles land wherever the modes fall (in a
    column with 80% of its rows in one mode, both quartiles fall inside it and the IQR measures
    only that mode's width), so ``IQR / 1.349`` re-weighted columns holding the same round
    clusters against each other and stretched the clusters into ellipses that k-means then
    cut wrongly. When more than ``POINT_MASS_SHARE`` of the rows hold one value, the column is
    a flag with a magnitude and is scaled so that the median of the other values lies
    ``CATEGORY_DISTANCE`` from it, the weight of a two-valued column.

    Parameters
    ----------
    values
        Finite values of the column (after the log transform when it applies).

    Returns
    -------
    float
        The scale; 0 for a constant column.
    """
    center = float(np.median(values))
    common = values == center
    if common.mean() > POINT_MASS_SHARE:
        # A flag with a magnitude: the typical other row lies CATEGORY_DISTANCE from the common
        # value, as two rows differing in a two-valued column do.
        gap = float(np.abs(np.median(values[~common]) - center))
        return gap / CATEGORY_DISTANCE
    low, high = np.percentile(values, [WINSOR_PERCENT, 100.0 - WINSOR_PERCENT])
    return float(np.clip(values, low, high).std())


def _skewness(values: np.ndarray) -> float:
    std = values.std()
    if std == 0:
        return 0.0
    return float(np.mean(((values - values.mean()) / std) ** 3))


def _fit_categorical(
    column: str, sample: pd.Series, non_null: pd.Series
) -> CategoricalFeature | DroppedColumn:
    try:
        text = column_text(non_null)
    except (TypeError, ValueError):
        return DroppedColumn(column, f"unsupported type {sample.dtype}")
    counts = text.value_counts()
    n_rows = len(sample)
    if len(counts) <= 1:
        present_share = len(non_null) / n_rows
        if MIN_LEVEL_SHARE <= present_share <= 1 - MIN_LEVEL_SHARE:
            # one value or missing: whether it is filled in may matter (e.g. a coupon code)
            if str(counts.index[0]) == MISSING_LEVEL:  # the text "missing" and missing values
                return DroppedColumn(column, "single value")
            return CategoricalFeature(column, [str(counts.index[0]), MISSING_LEVEL])
        return DroppedColumn(column, "single value")
    if len(counts) > 50 and len(counts) / len(non_null) > NEAR_UNIQUE_RATIO:
        if text.str.len().mean() > FREE_TEXT_MEAN_LENGTH and text.str.contains(" ").mean() > 0.5:
            return DroppedColumn(column, "free text")
        return DroppedColumn(column, "near-unique text (looks like an identifier)")
    shares = counts / n_rows
    kept = [str(v) for v in shares[shares >= MIN_LEVEL_SHARE].index[:MAX_LEVELS]]
    coverage = float(shares.loc[kept].sum()) if kept else 0.0
    if coverage < MIN_COVERAGE:
        return DroppedColumn(
            column,
            f"too many distinct values ({len(counts)}): common levels cover only "
            f"{coverage:.0%} of rows",
        )
    levels = list(kept)
    # A value literally "other" ("missing") that is common enough to be kept *is* that level:
    # the rare values fold into it (the missing rows join it), never into a second level of
    # the same name (two one-hot columns and two categories with one name).
    if len(kept) < len(counts) and OTHER_LEVEL not in levels:
        levels.append(OTHER_LEVEL)
    if sample.isna().any() and MISSING_LEVEL not in levels:
        levels.append(MISSING_LEVEL)
    if len(levels) < 2:
        return DroppedColumn(column, "single value")
    return CategoricalFeature(column, levels)
