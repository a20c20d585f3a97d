"""Short rules on the original attributes that describe each cluster.

A cluster found by k-means lives in the prepared (scaled, weighted, maybe projected) space, which
no marketer can read. This module finds, for every cluster, a rule of at most ``max_conditions``
conditions on the *readable* features (original units, see
:meth:`autoseg.features.FeatureSpec.readable`), e.g. ``orders_90d >= 12 AND
days_since_last_order < 10`` or ``channel in ('app')``, and measures how well it matches the
cluster: precision (share of matched rows that are in the cluster), recall (share of the cluster
that is matched) and support (rows matched), measured on all rows.

Method, per cluster (one versus the rest):

1. Rows: all of them up to ``max_rows``; beyond, a uniform random sample topped up with members of
   small clusters (``MIN_POSITIVES``) so that a small cluster still has enough rows to learn from.
   Each sampled row carries the weight of the rows it stands for, so F1 on the sample estimates
   F1 on the table.
2. A shallow scikit-learn decision tree (``max_depth=max_conditions``, ``class_weight="balanced"``
   so a small cluster is not ignored, NaN handled natively). Categories are encoded by the rank of
   their level's share of cluster members: for a two-class problem that ordering contains the
   best binary split of the levels, so one tree split becomes ``channel in ('app', 'web')``.
3. Every node's path is a candidate rule; conditions on the same feature are merged (the tightest
   bounds, the intersection of level sets). The ``CANDIDATE_PATHS`` best paths by F1 are then
   refined: each numeric threshold is moved to the sample quantile that maximises F1 (the tree
   optimises Gini with balanced weights, which favours recall), and conditions whose removal
   loses less than ``MIN_F1_GAIN`` of F1 are dropped (shorter rules read better).
4. Thresholds are shown as readable values: the number with the fewest significant digits that
   splits the sample the same way (``>= 12`` rather than ``>= 11.5``); at
   ``MAX_SIGNIFICANT_DIGITS`` a rounding that costs at most ``ROUNDING_F1_TOLERANCE`` of F1 is
   accepted. Date features (``kinds={"col": "date"}``, days since 1970-01-01) prefer the first
   day of a year or month and are shown as ISO dates; two-valued 0/1 features are shown as
   ``= 1`` / ``= 0``.

Missing values never satisfy a condition, the way SQL (and so a CDP segment) treats NULL: a rule
is evaluated with exactly the semantics it will have as a segment, so the reported precision and
recall are what the segment will give. For the same reason the folded level ``missing`` is
treated as a missing value (it stands for NULL in the table), and a level set that contains the
folded level ``other`` is written as ``not in`` the other kept levels, which also matches the rare
levels folded into ``other``.

:func:`rules_to_cdp` turns a rule into the Treasure Data CDP segment rule JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autoseg.features import MISSING_LEVEL, OTHER_LEVEL, column_text
from autoseg.parallel import map_on_cores

DEFAULT_MAX_CONDITIONS = 3
# Rows a rule is learnt on (precision and recall are still measured on every row). 20,000
# rather than 50,000: the 50,000 x 30 benchmark table's rules took 0.6 s instead of 1.5 s with
# mean F1 0.9907 vs 0.9905; on a 200,000-row sample of the 1M mixed table 0.18 s vs 0.40 s,
# F1 0.9710 vs 0.9722 (benchmarks/RESULTS.md, speed).
DEFAULT_MAX_ROWS = 20_000
# Rows the decision tree that proposes rules is fitted on (of the up to DEFAULT_MAX_ROWS a rule
# is refined on): scikit-learn's exact splitter sorts every column at every node, 0.25 s for a
# depth-3 tree on 20,000 x 30. Measured mean rule F1 over the 50,000 x 30 table (k=6) and the
# 1M mixed table's describe sample (k=2, 5, 8): 20,000 rows 0.9768 (rules 0.97 s at 50k),
# 10,000 0.9767 (0.66 s), 8,000 0.9759, 5,000 0.9761 (0.38 s).
TREE_ROWS = 10_000
# A cluster with fewer sampled members than this is topped up from outside the uniform sample.
MIN_POSITIVES = 1_000
# Tree leaves hold at least this many rows: a rule fitted to a handful of rows does not generalise.
MIN_LEAF_ROWS = 20
# A condition is kept only when it adds at least this much F1: shorter rules read better.
MIN_F1_GAIN = 0.005
# How many of the tree's best paths are refined and simplified before the best one is kept.
CANDIDATE_PATHS = 5
# Candidate thresholds tried per numeric condition when refining (sample quantiles).
REFINE_CANDIDATES = 64
# Readable thresholds: at most this many significant digits when F1 allows it ...
MAX_SIGNIFICANT_DIGITS = 3
# ... i.e. when rounding to it loses at most this much F1 on the sample.
ROUNDING_F1_TOLERANCE = 0.002

OPERATORS = (">=", "<", "=", "in", "not in")
KINDS = ("numeric", "date", "binary", "category")
_EPOCH = pd.Timestamp("1970-01-01")


@dataclass
class Condition:
    """One condition of a rule.

    ``operator`` is ``">="`` or ``"<"`` (numbers and dates, ``value`` a float in readable units;
    dates in days since 1970-01-01), ``"="`` (two-valued 0/1 features, ``value`` 0.0 or 1.0), or
    ``"in"`` / ``"not in"`` (categories, ``value`` a list of level names).
    """

    feature: str
    operator: str
    value: float | list[str]
    kind: str = "numeric"

    @property
    def text(self) -> str:
        """The condition as a person reads it, e.g. ``orders_90d >= 12``."""
        if self.operator in ("in", "not in"):
            levels = ", ".join("'" + str(v).replace("'", "''") + "'" for v in self.value)
            return f"{self.feature} {self.operator} ({levels})"
        return f"{self.feature} {self.operator} {format_value(float(self.value), self.kind)}"


@dataclass
class ClusterRule:
    """The rule that best matches one cluster, with how well it matches.

    ``precision``, ``recall``, ``f1`` and ``support`` (rows matched) are measured on all rows.
    A rule without conditions matches every row (text ``(all rows)``); an empty cluster gets no
    rule (text ``(empty cluster)``, support 0).
    """

    cluster_id: int
    conditions: list[Condition]
    precision: float
    recall: float
    support: int
    text: str
    f1: float = 0.0
    cluster_size: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able representation (aggregates and thresholds only, no row values)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def cluster_rules(
    readable: pd.DataFrame,
    labels: np.ndarray,
    k: int,
    *,
    max_conditions: int = DEFAULT_MAX_CONDITIONS,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    kinds: Mapping[str, str] | None = None,
) -> list[ClusterRule]:
    """The short rule on the readable features that best matches every cluster.

    Parameters
    ----------
    readable
        Human-readable features: numbers in original units (NaN allowed), categories as pandas
        ``category`` (or text), as produced by :meth:`autoseg.features.FeatureSpec.readable`.
    labels
        Cluster id of every row, in ``0 .. k-1``.
    k
        Number of clusters.
    max_conditions
        Most conditions per rule (the depth of the decision tree).
    max_rows
        Most rows used to learn the rules; precision and recall are still measured on all rows.
    seed
        Seed of the row sample and the tree.
    kinds
        ``numeric``, ``date`` (days since 1970-01-01, shown as ISO dates) or ``binary`` (0/1)
        per numeric column; columns whose values are all 0/1 are treated as binary anyway.

    Returns
    -------
    list of ClusterRule
        One rule per cluster, in cluster order.

    Raises
    ------
    ValueError
        When the parameters or the labels do not fit the data.
    """
    labels = np.asarray(labels)
    n = len(readable)
    _check_rule_inputs(readable, labels, k, max_conditions, max_rows)
    rng = np.random.default_rng(seed)
    columns = _columns(readable, kinds or {})
    sizes = np.bincount(labels.astype(np.int64), minlength=k) if n else np.zeros(k, np.int64)
    base = np.sort(rng.choice(n, max_rows, replace=False)) if n > max_rows else np.arange(n)
    # The row samples are drawn in cluster order from the one generator (so the rules do not
    # depend on the number of threads); the searches are independent and run on threads: the
    # tree fit (most of the time) and NumPy's mask arithmetic release the GIL, so both cores
    # work (measured at 50,000 x 30, k = 6: 3.3 s -> 1.8 s on 2 cores, the same rules).
    problems: dict[int, _Problem] = {}
    for cluster in range(k):
        if sizes[cluster]:
            rows = _rows_for_cluster(labels, cluster, base, rng)
            problems[cluster] = _Problem.build(readable, columns, labels, cluster, rows, n,
                                               int(sizes[cluster]))

    def solve(cluster: int) -> ClusterRule:
        if cluster not in problems:
            return ClusterRule(cluster, [], 0.0, 0.0, 0, "(empty cluster)")
        conditions = problems[cluster].best_rule(max_conditions, seed)
        return _measured_rule(readable, labels, cluster, conditions)

    return map_on_cores(solve, range(k))




def rule_mask(readable: pd.DataFrame, conditions: list[Condition]) -> np.ndarray:
    """Which rows satisfy every condition (missing values satisfy none, as in SQL).

    Parameters
    ----------
    readable
        Human-readable features holding every column the conditions name.
    conditions
        The conditions, combined with AND; an empty list matches every row.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the rows matched.
    """
    mask = np.ones(len(readable), dtype=bool)
    for cond in conditions:
        series = readable[cond.feature]
        if cond.operator in ("in", "not in"):
            text = _category_text(series)
            inside = text.isin([str(v) for v in cond.value]).to_numpy(dtype=bool)
            present = text.notna().to_numpy(dtype=bool)
            mask &= inside & present if cond.operator == "in" else ~inside & present
            continue
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        threshold = float(cond.value)
        with np.errstate(invalid="ignore"):
            if cond.operator == ">=":
                mask &= values >= threshold
            elif cond.operator == "<":
                mask &= values < threshold
            elif cond.operator == "=":
                mask &= values == threshold
            else:
                raise ValueError(f"operator={cond.operator!r} must be one of {OPERATORS}")
    return mask


def rule_text(conditions: list[Condition]) -> str:
    """The conditions joined with ``AND``; ``(all rows)`` when there are none."""
    return " AND ".join(c.text for c in conditions) if conditions else "(all rows)"


def format_value(value: float, kind: str = "numeric") -> str:
    """A threshold as text: ISO date for dates, plain positional notation otherwise.

    Parameters
    ----------
    value
        The value in readable units (days since 1970-01-01 for dates).
    kind
        ``numeric``, ``date``, ``binary`` or ``category``.

    Returns
    -------
    str
        E.g. ``12``, ``0.05``, ``1500000`` or ``2021-03-04``.
    """
    if kind == "date":
        stamp = _EPOCH + pd.Timedelta(days=value)
        return stamp.strftime("%Y-%m-%d") if value == math.floor(value) else stamp.isoformat()
    if value == math.floor(value) and abs(value) < 1e15:
        return str(int(value))
    return np.format_float_positional(value, trim="-")


def rules_to_cdp(
    rule: ClusterRule,
    *,
    attribute_names: Mapping[str, str] | None = None,
    binary_values: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """The Treasure Data CDP segment rule JSON for a rule's conditions.

    Operator names are those of the CDP segment API (``SegmentOperator.type`` of the public
    ``tdx`` SDK reference: ``Equal``, ``Greater``, ``GreaterEqual``, ``Less``, ``LessEqual``,
    ``In``, ``Between``, ``IsNull``, ...; every operator takes ``not`` for negation). Mapping:
    ``>=`` -> ``GreaterEqual``, ``<`` -> ``Less``, ``=`` -> ``Equal`` (``rightValue``), ``in`` ->
    ``In`` and ``not in`` -> ``In`` with ``not: true`` (``rightValues``, a list). ``NotIn`` exists
    in tdx's YAML but not in that API type list, so negation is used instead.

    Guesses (not confirmed against the live service): a date threshold is sent as an ISO date
    string (``"2021-03-04"``) for a date or timestamp attribute; numbers are sent as JSON
    numbers. The group is a flat ``And`` (the form in our brief and in tdx's YAML, which rejects
    nested groups); :func:`autoseg.audience.sync.cluster_rule` nests one ``And`` in another.

    Parameters
    ----------
    rule
        A rule from :func:`cluster_rules`.
    attribute_names
        CDP attribute name per feature when it differs (pytd lowercases column names and
        replaces other characters with ``_``); default the feature name.
    binary_values
        The original ``(low, high)`` values per two-valued feature (e.g. ``(False, True)`` or
        ``("N", "Y")``; :class:`autoseg.features.NumericFeature` has them) so ``= 1`` tests the
        attribute's real value; default the numbers 0 and 1.

    Returns
    -------
    dict
        ``{"type": "And", "conditions": [{"type": "Value", "leftValue": {"name": ...},
        "operator": {...}, "arrayMatching": None, "exclude": False}, ...]}``.
    """
    names = attribute_names or {}
    binaries = binary_values or {}
    conditions = []
    for cond in rule.conditions:
        if cond.operator in ("in", "not in"):
            operator: dict[str, Any] = {
                "type": "In", "rightValues": [str(v) for v in cond.value],
                "not": cond.operator == "not in",
            }
        elif cond.operator == "=":
            high = float(cond.value) == 1.0
            right = binaries[cond.feature][int(high)] if cond.feature in binaries else int(high)
            operator = {"type": "Equal", "rightValue": _json_scalar(right), "not": False}
        else:
            value = float(cond.value)
            right_value: Any = (
                format_value(value, "date") if cond.kind == "date" else _json_number(value)
            )
            operator = {
                "type": "GreaterEqual" if cond.operator == ">=" else "Less",
                "rightValue": right_value, "not": False,
            }
        conditions.append({
            "type": "Value",
            "leftValue": {"name": names.get(cond.feature, cond.feature)},
            "operator": operator,
            "arrayMatching": None,
            "exclude": False,
        })
    return {"type": "And", "conditions": conditions}


# --------------------------------------------------------------------------------------------
# Input checks and column roles
# --------------------------------------------------------------------------------------------


def _check_rule_inputs(
    readable: pd.DataFrame, labels: np.ndarray, k: int, max_conditions: int, max_rows: int
) -> None:
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if max_conditions < 1:
        raise ValueError(f"max_conditions={max_conditions} must be >= 1")
    if max_rows < 2 * MIN_LEAF_ROWS:
        raise ValueError(f"max_rows={max_rows} must be >= {2 * MIN_LEAF_ROWS}")
    if labels.ndim != 1 or len(labels) != len(readable):
        raise ValueError(
            f"labels has shape {labels.shape}, expected one label per row ({len(readable)},)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"labels must lie in 0..{k - 1} for k={k}, got {labels.min()}..{labels.max()}"
        )
    if readable.shape[1] == 0:
        raise ValueError("readable has no columns to build rules from")


@dataclass
class _Column:
    name: str
    kind: str  # numeric, date, binary, category
    levels: list[str] = field(default_factory=list)  # categories (without ``missing``)


def _category_text(series: pd.Series) -> pd.Series:
    """Category values as text; the folded ``missing`` level counts as missing (NULL)."""
    text = column_text(series)
    return text.mask(text == MISSING_LEVEL)


def _is_category(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    )


def _columns(readable: pd.DataFrame, kinds: Mapping[str, str]) -> list[_Column]:
    columns = []
    for name in readable.columns:
        series = readable[name]
        if _is_category(series):
            if isinstance(series.dtype, pd.CategoricalDtype):
                levels = [str(c) for c in series.cat.categories]
            else:
                levels = sorted(_category_text(series).dropna().unique().tolist())
            columns.append(_Column(str(name), "category", [v for v in levels
                                                           if v != MISSING_LEVEL]))
            continue
        kind = kinds.get(str(name), "numeric")
        if kind not in ("numeric", "date", "binary"):
            raise ValueError(f"kinds[{name!r}]={kind!r} must be numeric, date or binary")
        if kind == "numeric":
            values = pd.to_numeric(series, errors="coerce").dropna().unique()
            if len(values) and np.isin(values, [0.0, 1.0]).all():
                kind = "binary"
        columns.append(_Column(str(name), kind))
    return columns


def _rows_for_cluster(
    labels: np.ndarray, cluster: int, base: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The base sample, topped up with members of a small cluster from outside it."""
    if len(base) == len(labels):
        return base
    in_base = int((labels[base] == cluster).sum())
    if in_base >= MIN_POSITIVES:
        return base
    members = np.flatnonzero(labels == cluster)
    outside = np.setdiff1d(members, base, assume_unique=True)
    extra = min(MIN_POSITIVES - in_base, len(outside))
    if extra <= 0:
        return base
    return np.sort(np.concatenate([base, rng.choice(outside, extra, replace=False)]))


# --------------------------------------------------------------------------------------------
# The search on one cluster
# --------------------------------------------------------------------------------------------


@dataclass
class _Cond:
    """A condition on the sample: column index, operator and threshold or level set."""

    col: int
    op: str  # >=, <, =, in
    value: float | frozenset[str]


class _Problem:
    """One cluster versus the rest on the weighted sample."""

    def __init__(
        self,
        columns: list[_Column],
        numbers: dict[int, np.ndarray],
        codes: dict[int, np.ndarray],
        target: np.ndarray,
        weights: tuple[float, float],
    ) -> None:
        self.columns = columns
        self.numbers = numbers  # column index -> float64 values (NaN missing)
        self.codes = codes  # column index -> int codes into columns[i].levels (-1 missing)
        self.target = target
        self.w_neg, self.w_pos = weights
        self._sorted: dict[int, np.ndarray] = {}
        self._rank_levels: dict[int, list[str]] = {}  # category levels in tree-rank order

    @classmethod
    def build(
        cls,
        readable: pd.DataFrame,
        columns: list[_Column],
        labels: np.ndarray,
        cluster: int,
        rows: np.ndarray,
        n: int,
        size: int,
    ) -> _Problem:
        frame = readable.iloc[rows]
        target = labels[rows] == cluster
        numbers: dict[int, np.ndarray] = {}
        codes: dict[int, np.ndarray] = {}
        for i, col in enumerate(columns):
            if col.kind == "category":
                text = _category_text(frame[col.name])
                cat = pd.Categorical(text, categories=col.levels)
                codes[i] = np.asarray(cat.codes, dtype=np.int64)
            else:
                numbers[i] = pd.to_numeric(frame[col.name], errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan)
        # Each sampled member stands for size/pos rows, each other row for (n-size)/neg rows.
        pos = int(target.sum())
        neg = len(target) - pos
        w_pos = size / pos if pos else 0.0
        w_neg = (n - size) / neg if neg else 0.0
        return cls(columns, numbers, codes, target, (w_neg, w_pos))

    # evaluation ---------------------------------------------------------------------------

    def mask(self, conds: list[_Cond]) -> np.ndarray:
        mask = np.ones(len(self.target), dtype=bool)
        for cond in conds:
            mask &= self._cond_mask(cond)
        return mask

    def _cond_mask(self, cond: _Cond) -> np.ndarray:
        if cond.op == "in":
            levels = self.columns[cond.col].levels
            wanted = [levels.index(v) for v in cond.value]  # type: ignore[union-attr]
            return np.isin(self.codes[cond.col], wanted)
        values = self.numbers[cond.col]
        with np.errstate(invalid="ignore"):
            if cond.op == ">=":
                return values >= cond.value
            if cond.op == "<":
                return values < cond.value
            return values == cond.value

    def f1(self, mask: np.ndarray) -> float:
        # Weighted counts estimate the counts on the whole table.
        tp = self.w_pos * np.count_nonzero(mask & self.target)
        fp = self.w_neg * np.count_nonzero(mask & ~self.target)
        fn = self.w_pos * np.count_nonzero(~mask & self.target)
        denominator = 2 * tp + fp + fn
        return float(2 * tp / denominator) if denominator else 0.0

    def f1_of(self, conds: list[_Cond]) -> float:
        return self.f1(self.mask(conds))

    # the search ---------------------------------------------------------------------------

    def best_rule(self, max_conditions: int, seed: int) -> list[Condition]:
        paths = self._tree_paths(max_conditions, seed)
        scored = sorted(((self.f1_of(p), i, p) for i, p in enumerate(paths)),
                        key=lambda t: (-t[0], len(t[2]), t[1]))
        best: tuple[float, int, list[_Cond]] | None = None
        for _, _, path in scored[:CANDIDATE_PATHS]:
            conds = self._simplify(self._refine(self._simplify(path)))
            conds = self._readable_thresholds(conds)
            score = self.f1_of(conds)
            if best is None or (score, -len(conds)) > (best[0], -best[1]):
                best = (score, len(conds), conds)
        return self._to_conditions(best[2] if best else [])

    def _design(self) -> np.ndarray:
        """Tree input: numbers as they are, categories by the rank of their member share."""
        matrix = np.empty((len(self.target), len(self.columns)), dtype=np.float64)
        for i, col in enumerate(self.columns):
            if col.kind != "category":
                matrix[:, i] = self.numbers[i]
                continue
            codes = self.codes[i]
            present = codes >= 0
            n_levels = len(col.levels)
            pos = np.bincount(codes[present & self.target], minlength=n_levels) * self.w_pos
            neg = np.bincount(codes[present & ~self.target], minlength=n_levels) * self.w_neg
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(pos + neg > 0, pos / (pos + neg), 0.0)
            # For a two-class problem, ordering levels by the member share makes the best split
            # of the levels one threshold on the rank.
            order = np.argsort(rate, kind="stable")
            rank = np.empty(n_levels, dtype=np.float64)
            rank[order] = np.arange(n_levels)
            self._rank_levels[i] = [col.levels[j] for j in order]
            matrix[:, i] = np.where(present, rank[np.where(present, codes, 0)], np.nan)
        return matrix

    def _tree_paths(self, max_conditions: int, seed: int) -> list[list[_Cond]]:
        if self.target.all() or not self.target.any():
            return [[]]
        # Imported here: scikit-learn's tree module loads when rules are learnt, not at start-up.
        from sklearn.tree import DecisionTreeClassifier

        design, target = self._design(), self.target
        if len(target) > TREE_ROWS:
            # The tree proposes the features and rough thresholds; _refine then sets every
            # threshold on all the problem's rows. Members first (up to half), the rest from
            # the other rows; class_weight rebalances the two classes either way.
            rng = np.random.default_rng(seed)
            members, others = np.flatnonzero(target), np.flatnonzero(~target)
            take = min(len(members), TREE_ROWS // 2)
            chosen = np.concatenate([
                rng.choice(members, take, replace=False),
                rng.choice(others, min(len(others), TREE_ROWS - take), replace=False),
            ])
            design, target = design[chosen], target[chosen]
        tree = DecisionTreeClassifier(
            max_depth=max_conditions, class_weight="balanced", min_samples_leaf=MIN_LEAF_ROWS,
            random_state=seed,
        ).fit(design, target)
        t = tree.tree_
        paths: list[list[_Cond]] = [[]]
        stack: list[tuple[int, list[_Cond]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            left, right = t.children_left[node], t.children_right[node]
            if left < 0:
                continue
            col, threshold = int(t.feature[node]), float(t.threshold[node])
            if not math.isfinite(threshold):
                # "present" versus "missing": a rule cannot select missing values (NULL), so
                # only the present side is followed, and it adds no condition (every
                # condition already rejects missing values).
                present = left if t.missing_go_to_left[node] == 0 else right
                stack.append((present, path))
                continue
            for child, side in ((left, "le"), (right, "gt")):
                child_path = self._merge(path + [self._split(col, threshold, side)])
                paths.append(child_path)
                stack.append((child, child_path))
        return paths

    def _split(self, col: int, threshold: float, side: str) -> _Cond:
        """The tree split ``x <= t`` (``le``) or ``x > t`` (``gt``) as a readable condition."""
        kind = self.columns[col].kind
        if kind == "category":
            ranked = self._rank_levels[col]
            cut = math.floor(threshold) + 1  # ranks <= threshold are ranked[:cut]
            chosen = ranked[:cut] if side == "le" else ranked[cut:]
            return _Cond(col, "in", frozenset(chosen))
        if kind == "binary":
            return _Cond(col, "=", 0.0 if side == "le" else 1.0)
        # x <= t  <=>  x < b  and  x > t  <=>  x >= b, with b the next sample value above t.
        above = self._sorted_values(col)
        index = int(np.searchsorted(above, threshold, side="right"))
        b = float(above[index]) if index < len(above) else threshold
        return _Cond(col, "<" if side == "le" else ">=", b)

    def _sorted_values(self, col: int) -> np.ndarray:
        if col not in self._sorted:
            values = self.numbers[col]
            self._sorted[col] = np.unique(values[~np.isnan(values)])
        return self._sorted[col]

    def _merge(self, conds: list[_Cond]) -> list[_Cond]:
        """One condition per feature and operator: tightest bounds, intersected level sets."""
        merged: dict[tuple[int, str], _Cond] = {}
        for cond in conds:
            key = (cond.col, cond.op)
            old = merged.get(key)
            if old is None:
                merged[key] = _Cond(cond.col, cond.op, cond.value)
            elif cond.op == ">=":
                old.value = max(float(old.value), float(cond.value))  # type: ignore[arg-type]
            elif cond.op == "<":
                old.value = min(float(old.value), float(cond.value))  # type: ignore[arg-type]
            elif cond.op == "in":
                old.value = old.value & cond.value  # type: ignore[operator]
            else:
                old.value = cond.value
        return [c for c in merged.values()
                if not (c.op == "in" and len(c.value) == len(self.columns[c.col].levels))]

    def _simplify(self, conds: list[_Cond]) -> list[_Cond]:
        """Drop, one at a time, the condition whose removal costs least, while it costs less
        than ``MIN_F1_GAIN``."""
        conds = list(conds)
        while conds:
            current = self.f1_of(conds)
            trials = [(self.f1_of(conds[:i] + conds[i + 1:]), i) for i in range(len(conds))]
            score, index = max(trials)
            if current - score >= MIN_F1_GAIN:
                break
            conds.pop(index)
        return conds

    def _refine(self, conds: list[_Cond]) -> list[_Cond]:
        """Move each numeric threshold to the sample quantile that maximises F1."""
        conds = [_Cond(c.col, c.op, c.value) for c in conds]
        for i, cond in enumerate(conds):
            if cond.op not in (">=", "<"):
                continue
            others = self.mask(conds[:i] + conds[i + 1:])
            values = self.numbers[cond.col]
            # Only rows the other conditions keep are affected by this threshold.
            present = values[others & ~np.isnan(values)]
            if present.size == 0:
                continue
            grid = np.unique(np.quantile(present, np.linspace(0, 1, REFINE_CANDIDATES + 1),
                                         method="higher"))
            best_value, best_score = cond.value, self.f1(others & self._cond_mask(cond))
            for value in grid:
                trial = _Cond(cond.col, cond.op, float(value))
                score = self.f1(others & self._cond_mask(trial))
                if score > best_score + 1e-12:
                    best_value, best_score = float(value), score
            cond.value = best_value
        return conds

    def _readable_thresholds(self, conds: list[_Cond]) -> list[_Cond]:
        """Replace each numeric threshold by the roundest value that splits the sample alike."""
        conds = [_Cond(c.col, c.op, c.value) for c in conds]
        for i, cond in enumerate(conds):
            if cond.op not in (">=", "<"):
                continue
            above = float(cond.value)
            # Any threshold between the neighbouring values of the rows the other conditions
            # keep splits the sample the same way.
            column = self.numbers[cond.col]
            kept = self.mask(conds[:i] + conds[i + 1:]) & ~np.isnan(column)
            values = np.unique(column[kept])
            index = int(np.searchsorted(values, above, side="left"))
            below = float(values[index - 1]) if index > 0 else -math.inf
            if index < len(values):
                above = float(values[index])
            if self.columns[cond.col].kind == "date":
                cond.value = _roundest_date(below, above)
                continue
            exact = self.f1_of(conds)
            for digits in range(1, 16):
                candidate = _roundest(below, above, digits)
                if candidate is not None:
                    cond.value = candidate
                    break
                if digits >= MAX_SIGNIFICANT_DIGITS:
                    rounded = _round_significant(above, digits)
                    trial = conds[:i] + [_Cond(cond.col, cond.op, rounded)] + conds[i + 1:]
                    if exact - self.f1_of(trial) <= ROUNDING_F1_TOLERANCE:
                        cond.value = rounded
                        break
        return conds

    def _to_conditions(self, conds: list[_Cond]) -> list[Condition]:
        out = []
        # Feature order of the table; a range reads "x >= a AND x < b".
        for cond in sorted(conds, key=lambda c: (c.col, OPERATORS.index(c.op))):
            col = self.columns[cond.col]
            if cond.op != "in":
                out.append(Condition(col.name, cond.op, float(cond.value), col.kind))
                continue
            chosen = [lvl for lvl in col.levels if lvl in cond.value]  # type: ignore[operator]
            rest = [lvl for lvl in col.levels if lvl not in cond.value]  # type: ignore[operator]
            # "not in" the other kept levels also matches the rare levels folded into "other".
            if OTHER_LEVEL in chosen or (OTHER_LEVEL not in col.levels and len(rest) < len(chosen)):
                out.append(Condition(col.name, "not in", rest, "category"))
            else:
                out.append(Condition(col.name, "in", chosen, "category"))
        return out


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _measured_rule(
    readable: pd.DataFrame, labels: np.ndarray, cluster: int, conditions: list[Condition]
) -> ClusterRule:
    """Precision, recall and support of the rule on all rows."""
    matched = rule_mask(readable, conditions)
    members = labels == cluster
    tp = int(np.count_nonzero(matched & members))
    support = int(np.count_nonzero(matched))
    size = int(np.count_nonzero(members))
    precision = tp / support if support else 0.0
    recall = tp / size if size else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClusterRule(
        cluster_id=cluster, conditions=conditions, precision=precision, recall=recall,
        support=support, text=rule_text(conditions), f1=f1, cluster_size=size,
    )


def _round_significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(abs(value))) - digits + 1
    return round(round(value / 10.0**exponent) * 10.0**exponent, max(0, -exponent))


def _roundest(below: float, above: float, digits: int) -> float | None:
    """A number with ``digits`` significant digits in ``(below, above]``, nearest the middle;
    None when there is none."""
    if below < 0 <= above:
        return 0.0
    if not math.isfinite(above):
        return None
    magnitude = max(abs(above), abs(below) if math.isfinite(below) else 0.0)
    if magnitude == 0:
        return None
    exponent = math.floor(math.log10(magnitude)) - digits + 1
    step = 10.0**exponent
    low = math.floor(below / step) + 1 if math.isfinite(below) else math.floor(above / step)
    high = math.floor(above / step)
    if low > high:
        return None
    middle = (below + above) / 2 if math.isfinite(below) else above
    multiple = min(max(round(middle / step), low), high)
    return round(multiple * step, max(0, -exponent))


def _roundest_date(below: float, above: float) -> float:
    """The first day of a year, else of a month, else a whole day in ``(below, above]``."""
    stamp = _EPOCH + pd.Timedelta(days=above)
    for candidate in (pd.Timestamp(stamp.year, 1, 1), pd.Timestamp(stamp.year, stamp.month, 1),
                      stamp.normalize()):
        days = float((candidate - _EPOCH) / pd.Timedelta(days=1))
        if below < days <= above:
            return days
    return above


def _json_number(value: float) -> int | float:
    return int(value) if value == math.floor(value) and abs(value) < 2**53 else value


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = [
    "ClusterRule",
    "Condition",
    "cluster_rules",
    "format_value",
    "rule_mask",
    "rule_text",
    "rules_to_cdp",
]
