"""The learned router on synthetic records with a planted pattern: it learns who is right on
what from the prompt text alone, beats every single model on held-out records, routes by
the documented rule, stores itself as plain JSON, and refuses models it was not trained for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from persea.errors import PerseaError
from persea.evaluate.records import RunStore
from persea.route.learned import (char_ngrams, fit_features, load_router, messages_text,
                                  preference, read_router, train_router)
from persea.route.quality import compare
from persea.route.records import routing_data
from tests.route.learned_records import FINGERPRINTS, PRICES, write_split


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("records") / "evals")
    write_split(store, "dev", 400, seed=1)
    write_split(store, "test", 200, seed=2)
    return store


@pytest.fixture(scope="module")
def router(store):
    return train_router(routing_data(store, "dev"), PRICES)


def test_records_become_a_table_of_prompts_and_outcomes(store):
    data = routing_data(store, "dev")
    assert data.models == ["cheap", "digits", "letters"]
    assert len(data.ids) == 400 and data.correct.shape == (400, 3)
    assert data.prompts[0].startswith("please: ") and data.split == "dev"
    assert data.fingerprints["digits"] == FINGERPRINTS["digits"]
    assert 0.8 < data.accuracy()["digits"] + data.accuracy()["letters"] < 1.2
    assert data.digest != routing_data(store, "test").digest


def test_router_learns_the_planted_pattern_and_beats_every_single_model(store, router):
    test = routing_data(store, "test")
    result = compare(router, test, thresholds=(0.5, 1.0))
    best_single = max(r.accuracy for r in result.singles)
    top = result.row("learned @ 1.00")
    assert best_single < 0.65  # no single model is good at both kinds of prompt
    assert top.accuracy > best_single + 0.25 and top.accuracy > 0.8
    assert top.accuracy >= 0.95 * result.oracle.accuracy
    digits = router.predict([{"role": "user", "content": "please: 4821 739"}])
    letters = router.predict([{"role": "user", "content": "please: qwzk plm"}])
    assert digits["digits"] > 0.7 > digits["letters"]
    assert letters["letters"] > 0.7 > letters["digits"]
    assert router.choose("please: 4821 739", threshold=1.0)[0] == "digits"
    assert router.choose("please: qwzk plm", threshold=1.0)[0] == "letters"


def test_threshold_trades_quality_for_cost(store, router):
    result = compare(router, routing_data(store, "test"), thresholds=(0.0, 0.5, 1.0))
    always_cheap = result.row("learned @ 0.00")
    assert always_cheap.shares["cheap"] == 1.0
    assert always_cheap.cost_per_1k == pytest.approx(1000 * PRICES["cheap"])
    costs = [r.cost_per_1k for r in result.curve]
    assert costs[0] < costs[-1]  # the sweep runs from cheapest to most careful
    assert result.row("random").cost_per_1k == pytest.approx(1000 * np.mean(list(PRICES.values())))
    # the oracle's cost: the cheapest right model per item, the cheapest model when none is
    test = routing_data(store, "test")
    prices = np.array([PRICES[m] for m in test.models])
    expected = np.mean([prices[np.flatnonzero(row)].min() if row.any() else prices.min()
                        for row in test.correct])
    assert result.oracle.cost_per_1k == pytest.approx(1000 * expected)


def test_routing_rule_prefers_the_cheapest_qualified_model_then_the_most_likely():
    prices = [1.0, 2.0, 0.1]
    assert preference([0.9, 0.95, 0.2], prices, 0.8) == [0, 1, 2]
    assert preference([0.9, 0.95, 0.85], prices, 0.8) == [2, 0, 1]
    assert preference([0.3, 0.6, 0.2], prices, 0.8) == [1, 0, 2]  # none qualifies
    assert preference([0.3, 0.6, 0.2], prices, 0.0) == [2, 0, 1]  # all qualify: by price


def test_features_are_those_of_the_fitted_tfidf(router, store):
    data = routing_data(store, "dev")
    vec = fit_features(data.prompts)
    assert [g for g, _ in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])] == \
        router.vocabulary
    for text in ["please: 12 ab", "please: zz 9", "nothing known ~~"]:
        dense = np.zeros(len(router.vocabulary))
        idx, x = router.features(text)
        dense[idx] = x
        assert np.allclose(dense, vec.transform([text]).toarray()[0], atol=1e-12)


def test_char_ngrams_pad_words_and_keep_short_words_once():
    assert char_ngrams("Ab", 1, 3) == [" ", "a", "b", " ", " a", "ab", "b ", " ab", "ab "]
    assert char_ngrams("a", 2, 5) == [" a", "a ", " a "]


def test_messages_text_reads_what_a_client_sends():
    assert messages_text([{"role": "system", "content": "be brief"},
                          {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                       {"type": "image_url"}]}]) == \
        "be brief\nhi"
    assert messages_text("plain") == "plain"


def test_router_file_is_json_and_loads_back_the_same(router, tmp_path):
    path = router.save(tmp_path / "router.json")
    data = json.loads(path.read_text())
    assert data["format"] == "persea-router/1" and data["models"] == router.models
    assert data["fingerprints"] == FINGERPRINTS and data["trained_on"]["split"] == "dev"
    assert len(data["trained_on"]["digest"]) == 64
    again = load_router(path, dict(FINGERPRINTS))
    text = [{"role": "user", "content": "please: 77 xy"}]
    assert again.predict(text) == router.predict(text)
    assert again.choose(text, 0.6) == router.choose(text, 0.6)


def test_load_router_refuses_models_not_served_or_other_weights(router, tmp_path):
    path = router.save(tmp_path / "router.json")
    with pytest.raises(PerseaError, match="not served: letters"):
        load_router(path, {"digits": None, "cheap": None})
    served = dict(FINGERPRINTS, letters="9" * 64)
    with pytest.raises(PerseaError, match=r"other weights of letters \(trained on lllllll"):
        load_router(path, served)
    # an unknown fingerprint (None) is not checked; an extra served model is fine
    assert load_router(path, {"digits": None, "letters": None, "cheap": FINGERPRINTS["cheap"],
                              "other": "x"}).models == router.models


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "x"])
def test_threshold_out_of_range_is_refused(router, bad):
    with pytest.raises(PerseaError, match="expected a number from 0 to 1"):
        router.choose("please: 1", threshold=bad)


def test_damaged_router_file_is_one_clear_error(tmp_path, router):
    path = tmp_path / "router.json"
    path.write_text("{not json")
    with pytest.raises(PerseaError, match="not a router file"):
        read_router(path)
    data = router.to_dict()
    del data["coef"]["cheap"]
    path.write_text(json.dumps(data))
    with pytest.raises(PerseaError, match="damaged router file"):
        read_router(path)
    with pytest.raises(PerseaError, match="no router at"):
        read_router(tmp_path / "absent.json")


def test_missing_records_and_too_few_models_are_refused(tmp_path, store):
    with pytest.raises(PerseaError, match="no complete toyworld evaluation runs on the dev"):
        routing_data(RunStore(tmp_path / "empty"), "dev")
    with pytest.raises(PerseaError, match="at least two models"):
        routing_data(store, "dev", ["digits"])
    with pytest.raises(PerseaError, match="no complete toyworld run of nobody"):
        routing_data(store, "dev", ["digits", "nobody"])


def test_judging_refuses_records_of_other_weights(tmp_path, router):
    other = RunStore(tmp_path / "evals")
    write_split(other, "test", 20, seed=3, fingerprints={"cheap": "0" * 64})
    with pytest.raises(PerseaError, match="other weights than the router was trained on"):
        compare(router, routing_data(other, "test"))
