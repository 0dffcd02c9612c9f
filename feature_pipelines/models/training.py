"""Train a feature service's classifier on its training frame: the past fits, the later part judges.

The frame is `training.frames.training_frame`'s, so the model sees exactly the columns, order,
dtypes and fitted transformations that the feature server serves for the same service. The split
is by prediction time: rows before `split_at` train, rows at or after it are the holdout (a model
is always used on a future it has not seen). The same estimator is also fitted on a random split
of the same rows; a random-split AUC well above the time-ordered one means the rows carry
information about their own future (a leak, or a world that changes faster than the model is
retrained), which the model asset reports as a check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from feature_pipelines.features.services import FeatureService, service_schema, vector_dtype_problem
from feature_pipelines.models.metrics import ClassifierMetrics, classifier_metrics
from feature_pipelines.training.frames import TrainingFrame
from feature_pipelines.training.spec import PREDICTION_TIMESTAMP, TrainingSetSpec

SCORE = "score"  # the column a scored frame gains: P(label) by the model
# The estimator's OpenMP threads, capped: on a busy 2-core machine its default (one thread per core,
# spin-waiting) took 17 s to fit 1,400 rows that one thread fits in 0.3 s; a request is scored alone.
OPENMP_THREADS = 1


class ModelTrainingError(ValueError):
    """A training frame the model cannot be trained or judged on (too few rows, one class, a missing column)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model of one feature service, trained on one training set.

    `holdout_share` of the rows (the latest by prediction time) are held out; at most
    `max_train_rows` rows (a seeded sample) are fitted, which keeps training to seconds;
    `leakage_gap` is how far the random-split AUC may exceed the time-ordered one."""

    name: str
    training: TrainingSetSpec
    service: FeatureService
    holdout_share: float = 0.25
    max_train_rows: int = 20_000
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    seed: int = 0
    leakage_gap: float = 0.05
    min_rows: int = 200

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {"max_iter": self.max_iter, "learning_rate": self.learning_rate, "max_leaf_nodes": self.max_leaf_nodes,
                "random_state": self.seed}


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and how good it was: its service, its data, and its holdout figures."""

    name: str
    service: str
    service_version: str
    statistics_version: int | None
    training_set: str
    training_set_version: int
    label: str
    feature_columns: tuple[str, ...]
    train_rows: int
    holdout_rows: int
    split_at: datetime
    holdout: ClassifierMetrics
    random_split: ClassifierMetrics
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def leakage_gap(self) -> float:
        """Random-split AUC minus time-ordered holdout AUC."""
        return self.random_split.auc - self.holdout.auc

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["feature_columns"] = list(self.feature_columns)
        record["split_at"] = self.split_at.isoformat()
        record["holdout"], record["random_split"] = self.holdout.as_record(), self.random_split.as_record()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelCard:
        return cls(**{**record, "feature_columns": tuple(record["feature_columns"]),
                      "split_at": datetime.fromisoformat(record["split_at"]),
                      "holdout": ClassifierMetrics.from_record(record["holdout"]),
                      "random_split": ClassifierMetrics.from_record(record["random_split"])})


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator, its card, and its holdout rows scored (the reference outcome monitors compare with)."""

    estimator: HistGradientBoostingClassifier
    card: ModelCard
    holdout: pl.DataFrame


def feature_matrix(frame: pl.DataFrame, service: FeatureService) -> np.ndarray:
    """The service's vector as the estimator's input: its columns in declared order, with the dtypes
    the service serves, as float64 (nulls as NaN, which the estimator reads as missing).

    Raises:
        ModelTrainingError: a vector column is missing or has another dtype than the service's.
    """
    expected = service_schema(service)
    problem = vector_dtype_problem(frame.schema, expected)
    if problem:
        raise ModelTrainingError(f"feature service {service.name!r} (version {service.version}): {problem}")
    return frame.select(pl.col(name).cast(pl.Float64) for name in expected).to_numpy()


def _labels(frame: pl.DataFrame, label: str) -> np.ndarray:
    if frame[label].null_count():
        raise ModelTrainingError(f"label {label!r} has {frame[label].null_count()} null(s); labels are never imputed")
    return frame[label].cast(pl.Float64).to_numpy()


def _fit(spec: ModelSpec, x: np.ndarray, y: np.ndarray) -> HistGradientBoostingClassifier:
    if len(np.unique(y)) < 2:
        raise ModelTrainingError(f"model {spec.name!r}: the training rows hold one class only ({y.size} rows)")
    return HistGradientBoostingClassifier(**spec.hyperparameters).fit(x, y)


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= rows else frame.sample(n=rows, seed=seed)


def split_instant(frame: pl.DataFrame, holdout_share: float) -> datetime:
    """The prediction time from which the latest `holdout_share` of rows are held out."""
    times = frame.get_column(PREDICTION_TIMESTAMP).sort()
    return times[min(times.len() - 1, int(times.len() * (1 - holdout_share)))]


def train_model(data: TrainingFrame, spec: ModelSpec) -> TrainedModel:
    """Fit and judge `spec`'s model on `data` (see `_train`), with the estimator's threads capped."""
    with threadpool_limits(limits=OPENMP_THREADS, user_api="openmp"):
        return _train(data, spec)


def _train(data: TrainingFrame, spec: ModelSpec) -> TrainedModel:
    """Fit `spec`'s classifier on the rows before the split instant, judge it on those after it,
    and fit it once more on a seeded random split of the same rows to measure the leakage gap.

    Raises:
        ModelTrainingError: fewer than `min_rows` rows, one class on a side, or a wrong vector.
    """
    service, label = data.service, spec.training.label
    frame = data.frame.drop_nulls(PREDICTION_TIMESTAMP)
    if frame.height < spec.min_rows:
        raise ModelTrainingError(
            f"model {spec.name!r}: training set {spec.training.name!r} version {data.table_version} has "
            f"{frame.height} rows, fewer than {spec.min_rows}"
        )
    split_at = split_instant(frame, spec.holdout_share)
    past = frame.filter(pl.col(PREDICTION_TIMESTAMP) < split_at)
    future = frame.filter(pl.col(PREDICTION_TIMESTAMP) >= split_at)
    if past.height == 0 or future.height == 0:
        raise ModelTrainingError(f"model {spec.name!r}: every row is predicted at {split_at}; no time-ordered split exists")
    fitted = _sample(past, spec.max_train_rows, spec.seed)
    estimator = _fit(spec, feature_matrix(fitted, service), _labels(fitted, label))
    scores = estimator.predict_proba(feature_matrix(future, service))[:, 1]
    holdout = classifier_metrics(_labels(future, label), scores)

    shuffled = _sample(frame, spec.max_train_rows + future.height, spec.seed).sample(fraction=1.0, shuffle=True, seed=spec.seed)
    cut = int(shuffled.height * (1 - spec.holdout_share))
    random_estimator = _fit(spec, feature_matrix(shuffled.head(cut), service), _labels(shuffled.head(cut), label))
    random_scores = random_estimator.predict_proba(feature_matrix(shuffled.tail(shuffled.height - cut), service))[:, 1]
    random_split = classifier_metrics(_labels(shuffled.tail(shuffled.height - cut), label), random_scores)

    card = ModelCard(
        name=spec.name, service=service.name, service_version=service.version,
        statistics_version=data.statistics.version if data.statistics is not None else None,
        training_set=spec.training.name, training_set_version=data.table_version, label=label,
        feature_columns=tuple(service.column_names), train_rows=fitted.height, holdout_rows=future.height,
        split_at=split_at, holdout=holdout, random_split=random_split, hyperparameters=spec.hyperparameters,
    )
    scored = future.select(PREDICTION_TIMESTAMP, *service.column_names, label).with_columns(pl.Series(SCORE, scores))
    return TrainedModel(estimator, card, scored)


def score(estimator: HistGradientBoostingClassifier, frame: pl.DataFrame, service: FeatureService) -> np.ndarray:
    """P(label) for each row of a service's vector (served or offline), through `feature_matrix`."""
    matrix = feature_matrix(frame, service)
    with threadpool_limits(limits=OPENMP_THREADS, user_api="openmp"):
        return estimator.predict_proba(matrix)[:, 1]
