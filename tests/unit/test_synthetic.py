"""The synthetic generator: reproducible, and shaped like a social network."""

import numpy as np
import pytest

from followrec.core.config import SyntheticConfig
from followrec.core.errors import InputError
from followrec.features.synthetic import generate, true_follow_probability

CFG = SyntheticConfig(n_accounts=3000, mean_follows=15, seed=5)


@pytest.fixture(scope="module")
def ds():
    return generate(CFG, progress=False)


def test_same_seed_same_graph_other_seed_other_graph(ds):
    again = generate(CFG, progress=False)
    assert again.follows.equals(ds.follows)
    assert again.engagements.equals(ds.engagements)
    other = generate(SyntheticConfig(n_accounts=3000, mean_follows=15, seed=6), progress=False)
    assert not other.follows.equals(ds.follows)


def test_popularity_is_heavy_tailed(ds):
    indegree = np.bincount(ds.follows["followee_id"], minlength=ds.n_accounts)
    assert indegree.max() > 20 * np.median(indegree)


def test_homophily(ds):
    lang = ds.accounts["language"].to_numpy()
    same = (lang[ds.follows["follower_id"]] == lang[ds.follows["followee_id"]]).mean()
    base = (ds.accounts["language"].value_counts(normalize=True) ** 2).sum()
    assert same > base + 0.3


def transitivity(ds):
    import scipy.sparse as sp

    n = ds.n_accounts
    f = sp.csr_matrix(
        (np.ones(len(ds.follows)), (ds.follows["follower_id"], ds.follows["followee_id"])),
        shape=(n, n),
    )
    two_hop = f @ f
    return two_hop.multiply(f).sum() / two_hop.sum()


def test_triadic_closure_raises_transitivity(ds):
    # Share of 2-hop paths closed by a direct follow grows with the triadic share.
    by_share = [
        transitivity(
            generate(
                SyntheticConfig(n_accounts=3000, mean_follows=15, seed=5, triadic_share=share),
                progress=False,
            )
        )
        for share in (0.0, 0.5)
    ]
    assert by_share[0] * 1.1 < transitivity(ds) < by_share[1]


def test_timestamps_engagements_and_true_propensity(ds):
    assert ds.has_timestamps()
    assert set(ds.engagements["kind"]) == {"like", "reply", "repost"}
    rng = np.random.default_rng(0)
    f = ds.follows.sample(2000, random_state=1)
    followed = true_follow_probability(
        ds.truth, f["follower_id"].to_numpy(), f["followee_id"].to_numpy()
    )
    random = true_follow_probability(
        ds.truth, f["follower_id"].to_numpy(), rng.integers(0, ds.n_accounts, 2000)
    )
    assert followed.mean() > 10 * random.mean()
    user_total = true_follow_probability(
        ds.truth, np.zeros(ds.n_accounts, dtype=np.int64), np.arange(ds.n_accounts)
    ).sum()
    assert 0 < user_total <= 1 + 1e-9


def test_bad_settings_name_the_field():
    with pytest.raises(InputError, match="synthetic.homophily"):
        generate(SyntheticConfig(n_accounts=100, homophily=1.5), progress=False)
