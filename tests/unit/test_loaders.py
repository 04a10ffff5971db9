"""Edge-list, node-attribute and Twitch loaders, and the errors they give on bad input."""

import gzip

import numpy as np
import pytest

from followrec.core.errors import InputError
from followrec.features.contract import read_dataset, write_dataset
from followrec.features.loaders import load_edgelist, load_twitch, read_node_attributes


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_header_and_timestamps(tmp_path):
    path = write(tmp_path, "g.csv", "src,dst,ts\na,b,100\nb,c,200\na,b,50\nc,c,300\n")
    ds = load_edgelist(path)
    assert ds.n_accounts == 3
    assert ds.load_report["header"] is True
    assert ds.load_report["self_follows_dropped"] == 1
    assert ds.load_report["duplicate_follows_dropped"] == 1
    assert len(ds.follows) == 2
    ids = dict(zip(ds.accounts["external_id"], ds.accounts["account_id"]))
    first = ds.follows[ds.follows["follower_id"] == ids["a"]]
    assert first["event_timestamp"].iloc[0].timestamp() == 50  # earliest of the repeats
    assert ds.has_timestamps()


def test_whitespace_gzip_comments_numeric_ids_undirected(tmp_path):
    path = tmp_path / "g.txt.gz"
    path.write_bytes(gzip.compress(b"# SNAP style\n10 20\n20\t30\n\n30 10\n20 10\n"))
    ds = load_edgelist(path, undirected=True)
    assert ds.accounts["external_id"].tolist() == ["10", "20", "30"]  # numeric order
    assert ds.load_report["header"] is False
    assert len(ds.follows) == 6  # 3 distinct pairs, both directions
    assert ds.load_report["duplicate_follows_dropped"] == 2
    assert not ds.has_timestamps()


def test_node_attributes_kinds_and_contract_columns(tmp_path):
    edges = write(tmp_path, "e.csv", "u,v\n1,2\n2,3\n")
    nodes = write(
        tmp_path,
        "n.csv",
        "id,language,country,score,tier,topics,created_at\n"
        "1,en,GB,0.5,gold,7|9,2020-01-01\n2,fr,FR,1.5,silver,[9],2021-01-01\n"
        "4,en,US,2,gold,,2019-06-01\n",
    )
    frame, kinds = read_node_attributes(nodes)
    assert kinds == {
        "language": "categorical",
        "country": "categorical",
        "score": "dense",
        "tier": "categorical",
        "topics": "bag",
        "created_at": "timestamp",
    }
    ds = load_edgelist(edges, nodes)
    assert ds.n_accounts == 4  # 4 has attributes but no follows: still in the catalog
    row = ds.accounts.set_index("external_id")
    assert row.loc["1", "language"] == "en"
    assert row.loc["1", "topics"].tolist() == [7, 9]
    assert row.loc["3", "topics"].tolist() == []
    assert row.loc["2", "score"] == 1.5
    assert ds.feature_kinds == {"score": "dense", "tier": "categorical"}
    assert ds.load_report["accounts_without_follows"] == 1


def test_contract_round_trip(tmp_path):
    ds = load_edgelist(write(tmp_path, "e.csv", "1,2,5\n2,3,6\n"))
    back = read_dataset(write_dataset(ds, tmp_path / "contract"))
    assert back.follows.equals(ds.follows)
    assert back.accounts["external_id"].tolist() == ds.accounts["external_id"].tolist()


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("a,b\nb,c\nc,\n", 3, "followee", "missing value"),  # truncated last line
        ("a b 1\nb c x9\n", 2, "timestamp", "not a number"),
        ("# c\nfrom,to\n1,2\n2,3,4,5\n", 4, None, "number of columns"),
        ("1,2,5\n2,3,1e30\n", 2, "timestamp", "out of range"),
        ("from,to\n1,2\nfrom,to\n2,3\n", 3, "header", "header line repeats"),
        ("från,till\nanna,bo\nbo,cai\n", 1, "header", "cannot tell whether the first line"),
        ("1,2\n\x00\x01\n", 2, None, "binary file"),
    ],
)
def test_malformed_edge_lists_name_file_line_and_field(tmp_path, text, line, field, words):
    path = write(tmp_path, "bad.csv", text)
    header = "no" if text.startswith("a") else "auto"  # letter ids, no header: say so
    with pytest.raises(InputError) as err:
        load_edgelist(path, header=header)
    assert err.value.path == str(path)
    assert err.value.line == line
    assert err.value.field == field
    assert words in str(err.value)
    assert f"bad.csv:{line}" in str(err.value)


def test_non_numeric_timestamp_message_names_the_value(tmp_path):
    with pytest.raises(InputError, match=r"bad.csv:3: field 'timestamp' value 'yesterday'"):
        load_edgelist(write(tmp_path, "bad.csv", "a,b,1\nb,c,2\nc,a,yesterday\n"), header="no")


def test_a_folder_or_an_empty_file_is_named_not_a_traceback(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_edgelist(tmp_path)
    with pytest.raises(InputError, match="empty"):
        load_edgelist(write(tmp_path, "empty.csv", ""))
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_edgelist(write(tmp_path, "e.csv", "1,2\n"), tmp_path)


def test_a_non_numeric_row_above_numeric_rows_is_a_header_and_ids_after_it_load(tmp_path):
    ds = load_edgelist(write(tmp_path, "e.csv", "från,till\n1,2\n2,3\n"))
    assert ds.load_report["header"] is True and len(ds.follows) == 2


def test_truncated_gzip(tmp_path):
    path = tmp_path / "g.csv.gz"
    path.write_bytes(gzip.compress(b"1,2\n" * 1000)[:-30])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        load_edgelist(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "from,to\n"])
def test_empty_graph(tmp_path, text):
    with pytest.raises(InputError, match="no edges"):
        load_edgelist(write(tmp_path, "empty.csv", text))


def test_graph_of_only_self_follows_is_empty(tmp_path):
    with pytest.raises(InputError, match="follows' is empty"):
        load_edgelist(write(tmp_path, "self.csv", "1,1\n2,2\n"))


def test_node_file_without_id_column(tmp_path):
    edges = write(tmp_path, "e.csv", "1,2\n")
    nodes = write(tmp_path, "n.csv", "name,language\n1,en\n")
    with pytest.raises(InputError) as err:
        load_edgelist(edges, nodes)
    assert err.value.field == "id" and err.value.line == 1


def test_node_file_with_repeated_id(tmp_path):
    nodes = write(tmp_path, "n.csv", "id,language\n1,en\n2,fr\n1,de\n")
    with pytest.raises(InputError, match=r"n.csv:4: field 'id' value '1'"):
        read_node_attributes(nodes)


def test_contract_table_missing_a_column(tmp_path):
    ds = load_edgelist(write(tmp_path, "e.csv", "1,2\n2,3\n"))
    out = write_dataset(ds, tmp_path / "contract")
    import pandas as pd

    pd.read_parquet(out / "follows.parquet").drop(columns=["followee_id"]).to_parquet(
        out / "follows.parquet"
    )
    with pytest.raises(InputError) as err:
        read_dataset(out)
    assert err.value.field == "followee_id" and "follows" in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.csv: file not found"):
        load_edgelist(tmp_path / "nope.csv")


def test_twitch_platform(twitch_dir):
    ds = load_twitch(twitch_dir)
    assert ds.n_accounts == 34_118  # the six languages, FR's repeated rows dropped
    assert ds.load_report["duplicate_account_rows_dropped"] == 2
    assert ds.load_report["edge_rows"] == 153_138 + 35_324 + 59_382 + 112_666 + 31_299 + 37_304
    assert len(ds.follows) == 2 * ds.load_report["edge_rows"]  # mutual links, both directions
    assert ds.accounts["external_id"].is_unique
    lang = ds.accounts["language"].to_numpy()
    src = lang[ds.follows["follower_id"].to_numpy()]
    dst = lang[ds.follows["followee_id"].to_numpy()]
    assert (src == dst).all()  # no cross-language edges in MUSAE
    sizes = ds.accounts["language"].value_counts()
    assert sizes["de"] == 9_498 and sizes["fr"] == 6_549
    assert ds.accounts["topics"].map(len).gt(0).mean() > 0.99
    assert np.all(ds.accounts["created_at"] < "2018-05-01")
