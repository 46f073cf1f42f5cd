"""The learned router: for each model, the probability that it answers a request right,
predicted from the request's text alone; then the cheapest model that is likely enough to be
right.

The predictor follows the simplest router of RouteLLM (Ong et al. 2024, "RouteLLM: Learning
to Route LLMs with Preference Data", arXiv:2406.18665), which scores a query with a learned
model of each candidate's win chance and sends it to the cheap model unless the strong one is
predicted to be needed. Here there are any number of models and the labels are exact: the
evaluation records say, item by item, which model answered right (`persea.route.records`).

Features: character n-grams of the text, within word boundaries (each word padded with one
space), TF-IDF weighted (`1 + ln tf` times the smoothed idf `ln((1 + n) / (1 + df)) + 1`),
L2-normalised. Per model: a logistic regression of "answered right" on those features,
regularisation strength chosen by 5-fold cross-validated log-loss on the training records.

The routing rule, for predictions `p_m`, prices `c_m` and a threshold `t` in [0, 1]:

1. the models with `p_m >= t` qualify; when some do, the preference order is the qualified
   models by price (cheapest first; ties: higher `p_m`, then the order of training), then
   the others by `p_m` (highest first);
2. when none does, every model by `p_m` (highest first; ties: cheaper first).

Predictions are clipped to [1e-6, 1 - 1e-6], so at `t = 1` no model qualifies and the router
always picks the model most likely to be right; at `t = 0` it always picks the cheapest.

The router file is JSON (no pickle: loading it runs no code): the vocabulary, idf, one
weight vector and bias per model, the prices, the weight fingerprint of every model and the
digest of the records it was trained on. `load_router` refuses one whose models are not all
served, or were trained on other weights than the served ones.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path

import numpy as np

from persea.errors import PerseaError
from persea.route.records import RoutingData

FORMAT = "persea-router/1"
EPS = 1e-6
DEFAULT_THRESHOLD = 0.5
DEFAULT_PRICE = 1.0
NGRAM = (1, 4)
MIN_DF = 2
CS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse regularisation strengths tried
FOLDS = 5


def messages_text(messages) -> str:
    """What a client sent, as text: every message's content joined by newlines (a list
    content gives its text parts). A plain string is taken as it is; an evaluation prompt is
    one user message, so its text is the prompt itself."""
    if isinstance(messages, str):
        return messages
    parts: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", None)
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text") or "" for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def char_ngrams(text: str, low: int = NGRAM[0], high: int = NGRAM[1],
                lowercase: bool = True) -> list[str]:
    """Character n-grams (`low` to `high` long) of each whitespace-separated word padded with
    one space on each side; a padded word shorter than n gives itself once."""
    if lowercase:
        text = text.lower()
    grams: list[str] = []
    for word in text.split():
        w = f" {word} "
        size = len(w)
        for n in range(low, high + 1):
            if n >= size:
                grams.append(w)
                break
            grams.extend(w[i:i + n] for i in range(size - n + 1))
    return grams


def check_threshold(value) -> float:
    """A threshold is a number from 0 to 1; anything else is a one-line error."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise PerseaError(f"threshold {value!r}: expected a number from 0 to 1") from None
    if not (0.0 <= t <= 1.0):  # also refuses nan
        raise PerseaError(f"threshold {value!r}: expected a number from 0 to 1")
    return t


def check_prices(prices: dict[str, float]) -> dict[str, float]:
    bad = [f"{m}={p!r}" for m, p in prices.items()
           if not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0]
    if bad:
        raise PerseaError(f"price {', '.join(bad)}: a price is a positive number (the cost of "
                          "one request, in any unit shared by all models)")
    return {m: float(p) for m, p in prices.items()}


def preference(probs, prices, threshold: float) -> list[int]:
    """Model indices in preference order under the routing rule (module docstring)."""
    def key(j: int):
        if probs[j] >= threshold:
            return (0, prices[j], -probs[j], j)
        return (1, -probs[j], prices[j], j)
    return sorted(range(len(probs)), key=key)


def first_choice(probs: np.ndarray, prices: np.ndarray, threshold: float) -> np.ndarray:
    """The routing rule's first choice for every row of `probs` (items x models)."""
    return np.array([preference(row, prices, threshold)[0] for row in probs], dtype=np.intp)


@dataclass
class Router:
    models: list[str]
    prices: dict[str, float]
    fingerprints: dict[str, str]  # model -> the weights the training records came from
    trained_on: dict  # suite, split, metric, items, digest and run ids of the records
    vocabulary: list[str]
    idf: np.ndarray  # (features,)
    weights: np.ndarray  # (features, models)
    bias: np.ndarray  # (models,)
    ngram: tuple[int, int] = NGRAM
    lowercase: bool = True
    threshold: float = DEFAULT_THRESHOLD  # used when choose() is given none
    settings: dict = field(default_factory=dict)  # how it was fitted, for the record

    def __post_init__(self):
        self._index = {g: i for i, g in enumerate(self.vocabulary)}
        self._prices = np.array([self.prices[m] for m in self.models], dtype=np.float64)

    # -- prediction -----------------------------------------------------------------------
    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The TF-IDF vector of `text` as (feature indices, values)."""
        counts: dict[int, int] = {}
        index = self._index
        for g in char_ngrams(text, self.ngram[0], self.ngram[1], self.lowercase):
            j = index.get(g)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        idx = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        x = (1.0 + np.log(tf)) * self.idf[idx]
        return idx, x / math.sqrt(float(x @ x))

    def probabilities(self, text: str) -> np.ndarray:
        """P(right) per model, in the order of `models`."""
        idx, x = self.features(text)
        z = self.bias + x @ self.weights[idx]
        return np.clip(1.0 / (1.0 + np.exp(-z)), EPS, 1.0 - EPS)

    def predict(self, messages) -> dict[str, float]:
        """`{model: probability that it answers these messages right}`."""
        return dict(zip(self.models, self.probabilities(messages_text(messages)).tolist()))

    def choose(self, messages, threshold: float | None = None) -> list[str]:
        """Every model, most preferred first (the routing rule); the first is the choice, the
        rest a fallback order."""
        t = self.threshold if threshold is None else check_threshold(threshold)
        probs = self.probabilities(messages_text(messages))
        return [self.models[j] for j in preference(probs, self._prices, t)]

    def predict_many(self, texts: list[str]) -> np.ndarray:
        return np.array([self.probabilities(t) for t in texts]).reshape(len(texts),
                                                                        len(self.models))

    def check_served(self, served: dict[str, str | None], where: str = "router") -> None:
        """Refuse to route to a model that is not served, or whose served weights are not the
        ones the router learned about (a served fingerprint of None is not checked)."""
        missing = [m for m in self.models if m not in served]
        if missing:
            raise PerseaError(f"{where} was trained for {', '.join(self.models)}; not served: "
                              f"{', '.join(missing)}; serve them or train a router for the "
                              "served models (`persea route train`)")
        changed = [m for m in self.models
                   if served[m] is not None and served[m] != self.fingerprints[m]]
        if changed:
            shown = ", ".join(f"{m} (trained on {self.fingerprints[m][:12]}, served "
                              f"{str(served[m])[:12]})" for m in changed)
            raise PerseaError(f"{where} was trained on other weights of {shown}; evaluate the "
                              "served weights and train it again (`persea route train`)")

    # -- the file -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "models": self.models, "prices": self.prices,
                "fingerprints": self.fingerprints, "trained_on": self.trained_on,
                "threshold": self.threshold, "settings": self.settings,
                "features": {"analyzer": "char_wb", "ngram": list(self.ngram),
                             "lowercase": self.lowercase, "tf": "sublinear", "norm": "l2"},
                "vocabulary": self.vocabulary, "idf": self.idf.tolist(),
                "coef": {m: self.weights[:, j].tolist() for j, m in enumerate(self.models)},
                "intercept": {m: float(self.bias[j]) for j, m in enumerate(self.models)}}

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        os.replace(tmp, path)
        return path


def router_from_dict(data, where: str = "router") -> Router:
    """A router from its JSON form; anything malformed is a one-line error."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PerseaError(f"{where}: not a persea router file (format {found!r}, expected "
                          f"{FORMAT!r}); write one with `persea route train`")
    try:
        models = [str(m) for m in data["models"]]
        vocabulary = [str(g) for g in data["vocabulary"]]
        idf = np.asarray(data["idf"], dtype=np.float64)
        weights = np.array([data["coef"][m] for m in models], dtype=np.float64).T
        bias = np.array([data["intercept"][m] for m in models], dtype=np.float64)
        feats = data["features"]
        router = Router(models=models, prices=check_prices(dict(data["prices"])),
                        fingerprints={m: str(data["fingerprints"][m]) for m in models},
                        trained_on=dict(data["trained_on"]), vocabulary=vocabulary, idf=idf,
                        weights=weights.reshape(len(vocabulary), len(models)), bias=bias,
                        ngram=(int(feats["ngram"][0]), int(feats["ngram"][1])),
                        lowercase=bool(feats["lowercase"]),
                        threshold=check_threshold(data["threshold"]),
                        settings=dict(data.get("settings") or {}))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise PerseaError(f"{where}: damaged router file ({type(err).__name__}: {err}); "
                          "write it again with `persea route train`") from None
    if idf.shape != (len(vocabulary),) or len(set(models)) != len(models) or len(models) < 2:
        raise PerseaError(f"{where}: damaged router file (sizes do not agree); write it again "
                          "with `persea route train`")
    return router


def read_router(path) -> Router:
    """The router stored at `path`, not yet checked against what is served."""
    path = Path(path)
    if not path.is_file():
        raise PerseaError(f"no router at {path}; train one with `persea route train`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PerseaError(f"{path}: not a router file (not JSON: {err}); write it again with "
                          "`persea route train`") from None
    return router_from_dict(data, str(path))


def load_router(path, served_models: dict[str, str | None]) -> Router:
    """The router at `path`, refused (one line) unless every model it routes to is in
    `served_models` ({name: weights fingerprint, or None when unknown}) with the weights it
    was trained for."""
    router = read_router(path)
    router.check_served(served_models, f"router {path}")
    return router


# -- training -------------------------------------------------------------------------------
def fit_features(texts: list[str], ngram: tuple[int, int] = NGRAM, lowercase: bool = True,
                 min_df: int = MIN_DF):
    """The fitted TF-IDF vectorizer (scikit-learn) over `texts`, with this module's n-grams;
    `Router.features` computes the same vector without it."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: scikit-learn

    vec = TfidfVectorizer(analyzer=partial(char_ngrams, low=ngram[0], high=ngram[1],
                                           lowercase=lowercase),
                          min_df=min(min_df, len(texts)), sublinear_tf=True, norm="l2",
                          use_idf=True, smooth_idf=True, dtype=np.float64)
    vec.fit(texts)
    return vec


def _fit_one(x, y: np.ndarray) -> tuple[np.ndarray, float, float | None]:
    """(weights, bias, chosen C) of one model's logistic regression, C chosen from `CS` by
    the mean log-loss of stratified `FOLDS`-fold cross-validation. A model right on every
    training item (or on none) gets no weights and the smoothed base rate as its bias; one
    with fewer than `FOLDS` items of either outcome gets C = 1."""
    from sklearn.linear_model import LogisticRegression  # heavy: scikit-learn
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    right = int(y.sum())
    fewer = min(right, len(y) - right)
    if fewer == 0:
        rate = (right + 0.5) / (len(y) + 1.0)
        return np.zeros(x.shape[1]), math.log(rate / (1 - rate)), None
    c = 1.0
    if fewer >= FOLDS:
        folds = StratifiedKFold(n_splits=FOLDS)
        losses = [-cross_val_score(LogisticRegression(C=c, max_iter=2000), x, y, cv=folds,
                                   scoring="neg_log_loss").mean() for c in CS]
        c = CS[int(np.argmin(losses))]
    lr = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    return lr.coef_[0].astype(np.float64), float(lr.intercept_[0]), c


def train_router(data: RoutingData, prices: dict[str, float],
                 threshold: float = DEFAULT_THRESHOLD, ngram: tuple[int, int] = NGRAM,
                 min_df: int = MIN_DF) -> Router:
    """Fit one predictor per model of `data` from its prompts and outcomes."""
    missing = [m for m in data.models if m not in prices]
    if missing:
        raise PerseaError(f"no price for {', '.join(missing)}")
    prices = check_prices({m: prices[m] for m in data.models})
    threshold = check_threshold(threshold)
    vec = fit_features(data.prompts, ngram, True, min_df)
    x = vec.transform(data.prompts)
    vocabulary = [""] * len(vec.vocabulary_)
    for gram, j in vec.vocabulary_.items():
        vocabulary[j] = gram
    weights = np.zeros((len(vocabulary), len(data.models)))
    bias = np.zeros(len(data.models))
    chosen = {}
    for j, model in enumerate(data.models):
        weights[:, j], bias[j], chosen[model] = _fit_one(x, data.correct[:, j].astype(int))
    trained_on = {"suite": data.suite, "split": data.split, "metric": data.metric,
                  "items": len(data.ids), "digest": data.digest, "runs": data.runs,
                  "accuracy": data.accuracy()}
    return Router(models=list(data.models), prices=prices, fingerprints=dict(data.fingerprints),
                  trained_on=trained_on, vocabulary=vocabulary,
                  idf=np.asarray(vec.idf_, dtype=np.float64), weights=weights, bias=bias,
                  ngram=tuple(ngram), lowercase=True, threshold=threshold,
                  settings={"model": "tfidf-char-logreg", "min_df": min_df, "folds": FOLDS,
                            "C": chosen, "Cs": list(CS)})


# -- prices -----------------------------------------------------------------------------------
# A served model's price is money per 1,000 prompt and per 1,000 completion tokens (`price:
# {input, output}` on an entry of `serve.models`). The router weighs whole requests, so such a
# price becomes the cost of one reference request of this many (prompt, completion) tokens:
# the sum of the two prices. Models whose input and output prices keep one ratio rank the same
# whatever the reference size.
REQUEST_TOKENS = (1000, 1000)


def _number(value) -> float | None:
    """A price as written in a config: a number, a Decimal or a numeric string."""
    if isinstance(value, bool):
        return None
    try:
        return float(value) if isinstance(value, (int, float, str, Decimal)) else None
    except ValueError:
        return None


def request_price(price, tokens: tuple[int, int] = REQUEST_TOKENS) -> float | None:
    """The cost of one request at a served model's `price`: a per-token price
    (`{input, output}` per 1,000 tokens, or an object with those fields) at the reference
    request `tokens`; a plain number is already per request. None when there is no price."""
    if price is None:
        return None
    if not isinstance(price, dict) and hasattr(price, "input") and hasattr(price, "output"):
        price = {"input": price.input, "output": price.output}
    if isinstance(price, dict):
        given = _number(price.get("input")), _number(price.get("output"))
        if None in given:
            return None
        return (given[0] * tokens[0] + given[1] * tokens[1]) / 1000.0
    return _number(price)


def serve_prices(project, tokens: tuple[int, int] = REQUEST_TOKENS) -> dict[str, float]:
    """Prices per request from the project's `serve.models`: each entry with a `price:`, by
    its served name (`request_price`). The names are the ones the gateway serves, so a
    router trained with them routes between exactly those models."""
    section = getattr(project.spec, "serve", None)
    if section is None:
        return {}
    models = getattr(section, "models", None)
    if models is None and isinstance(section, dict):
        models = section.get("models")
    found: dict[str, float] = {}
    for entry in models or []:
        name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", None)
        price = entry.get("price") if isinstance(entry, dict) else getattr(entry, "price", None)
        amount = request_price(price, tokens)
        if name and amount is not None:
            found[str(name)] = amount
    return found


def resolve_prices(models: list[str], from_serve: dict[str, float],
                   given: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """(price, where it came from) per model: the project's serve section, else `--price`,
    else 1.0. A `--price` that contradicts the serve section is an error, not a choice."""
    clash = [f"{m} ({given[m]:g} given, {from_serve[m]:g} in serve:)" for m in given
             if m in from_serve and not math.isclose(given[m], from_serve[m])]
    if clash:
        raise PerseaError(f"--price disagrees with the project's serve section for "
                          f"{', '.join(clash)}; prices live in one place: drop the flag or "
                          "change the section")
    unknown = sorted(set(given) - set(models))
    if unknown:
        raise PerseaError(f"--price names {', '.join(unknown)}, which the records do not "
                          f"hold; the models are {', '.join(models)}")
    prices, source = {}, {}
    for m in models:
        if m in from_serve:
            prices[m], source[m] = from_serve[m], "serve"
        elif m in given:
            prices[m], source[m] = given[m], "--price"
        else:
            prices[m], source[m] = DEFAULT_PRICE, "default"
    return check_prices(prices), source
