"""The promotion gate's decisions and reasons."""

from followrec.registry.gate import decide

FLOORS = {"recall@100": 0.2, "map@100": 0.05}


def test_first_model_above_floors_is_promoted():
    d = decide({"recall@100": 0.4, "map@100": 0.1}, None, FLOORS, 0.97, 0.95)
    assert d.promote
    assert "no champion yet" in d.reasons


def test_challenger_must_beat_the_champion_on_every_gated_metric():
    champion = {"recall@100": 0.45, "map@100": 0.12}
    d = decide({"recall@100": 0.47, "map@100": 0.11}, champion, FLOORS, 0.99, 0.95)
    assert not d.promote
    assert any("map@100 0.1100 does not beat champion 0.1200" in r for r in d.reasons)
    assert decide({"recall@100": 0.47, "map@100": 0.13}, champion, FLOORS, 0.99, 0.95).promote


def test_floors_and_index_recall_block_promotion():
    d = decide({"recall@100": 0.1, "map@100": 0.1}, None, FLOORS, 0.99, 0.95)
    assert not d.promote and any("below floor" in r for r in d.reasons)
    d = decide({"recall@100": 0.4, "map@100": 0.1}, None, FLOORS, 0.90, 0.95)
    assert not d.promote and any("ANN recall" in r for r in d.reasons)
