"""The sentence pool: size, vocabulary, normalization, split disjointness."""

import re

from moe_asr.synth.text import (
    generate_sentences,
    normalize,
    sentence_pool,
    split_sentences,
    vocabulary,
)


def test_pool_is_large_distinct_and_normalized():
    pool = sentence_pool()
    assert len(pool) >= 5000 and len(set(pool)) == len(pool)
    assert 1200 <= len(vocabulary(pool)) <= 3000
    assert all(re.fullmatch(r"[a-z']+( [a-z']+)*", s) for s in pool)
    assert "the birch canoe slid on the smooth planks" in pool


def test_splits_are_disjoint_and_cover_the_pool():
    parts = {s: set(split_sentences(s)) for s in ("train", "dev", "test")}
    assert not parts["train"] & parts["test"] and not parts["train"] & parts["dev"]
    assert not parts["dev"] & parts["test"]
    assert sum(map(len, parts.values())) == len(sentence_pool())
    assert len(parts["test"]) >= 500


def test_generator_is_deterministic_and_articles_agree():
    a = generate_sentences(300, seed=1)
    assert a == generate_sentences(300, seed=1) and a != generate_sentences(300, seed=2)
    for s in a:
        words = s.split()
        for w, nxt in zip(words, words[1:]):
            assert not (w == "a" and nxt[0] in "aeiou"), s


def test_normalize():
    assert normalize("It's easy, to TELL -- the man's fall.") == "it's easy to tell the man's fall"
    assert normalize("'quoted' words!") == "quoted words"
