"""The canonical seed-match rule."""

from __future__ import annotations

import itertrain as it
from itertrain.baselines import SITE_TYPES, seed_match_scores

from conftest import DATA_DIR, needs_shared_data

MIRNA = "TGAGGTAGTAGGTTGTATAG"  # let-7a: nt 2-8 GAGGTAG, its partner on the target reads CTACCTC
SITE = "CTACCTC"


def test_site_types():
    targets = {
        "none": "G" * 50,
        "6mer": "G" * 20 + SITE[1:] + "G" * 24,
        "7mer-A1": "G" * 20 + SITE[1:] + "A" + "G" * 23,
        "7mer-m8": "G" * 20 + SITE + "G" * 23,
        "8mer": "G" * 20 + SITE + "A" + "G" * 22,
    }
    pairs = it.PairTable.from_sequences(list(targets.values()), [MIRNA] * len(targets))
    assert [SITE_TYPES[s] for s in seed_match_scores(pairs)] == list(targets)


def test_sites_at_the_ends_and_lowercase_rna():
    pairs = it.PairTable.from_sequences(["G" * 42 + SITE + "A", SITE[1:] + "A" + "G" * 43],
                                        [MIRNA.lower().replace("t", "u")] * 2)
    assert seed_match_scores(pairs).tolist() == [4, 2]


def test_best_site_wins():
    pairs = it.PairTable.from_sequences(["G" * 5 + SITE[1:] + "G" * 10 + SITE + "A" + "G" * 21], [MIRNA])
    assert seed_match_scores(pairs).tolist() == [4]


@needs_shared_data
def test_reference_point_on_the_1_10_set():
    pairs = it.load_pairs(DATA_DIR / "evaluation_set_1_10_CLASH2013_paper.tsv")
    assert abs(it.average_precision(pairs.labels, seed_match_scores(pairs)) - 0.18) < 0.01
