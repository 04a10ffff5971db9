"""Loaders that turn real follow graphs into the raw contract (`features.contract.Dataset`)."""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from followrec.core.errors import InputError
from followrec.features.bags import csr_to_bag, empty_bags, group_to_bag
from followrec.features.contract import Dataset, validate_contract

REPO_ROOT = Path(__file__).resolve().parents[1]

# The MUSAE Twitch snapshot was taken in May 2018; `days` (account age) counts back from it.
TWITCH_SNAPSHOT = pd.Timestamp("2018-05-01", tz="UTC")
TWITCH_LANGUAGE = {"DE": "de", "ENGB": "en", "ES": "es", "FR": "fr", "PTBR": "pt", "RU": "ru"}

HEADER_NAMES = {
    "from", "to", "src", "dst", "source", "target", "follower", "followee", "follower_id",
    "followee_id", "u", "v", "node1", "node2", "id1", "id2", "user", "account", "user_id",
    "account_id", "timestamp", "time", "ts", "t", "event_timestamp", "weight",
}  # fmt: skip
ID_COLUMN_NAMES = ("id", "account_id", "node_id", "node", "user_id", "new_id")
COMMENT_PREFIXES = ("#", "%")
MAX_UNIX_SECONDS = 9.2e9  # pandas' nanosecond timestamps end in 2262


def fail_at_first(
    bad: np.ndarray,
    reason: str,
    *,
    path: str | Path,
    field: str,
    values: pd.Series | np.ndarray | None = None,
    line_of: Callable[[int], int] = lambda row: row + 2,
) -> None:
    """Raise naming the first row where `bad` holds (by default: CSV with a header line)."""
    bad = np.asarray(bad)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    value = None
    if values is not None:
        value = values.iloc[row] if isinstance(values, pd.Series) else values[row].item()
    raise InputError(reason, path=str(path), line=line_of(row), field=field, value=value)


def resolve_path(path: str | Path) -> Path:
    """A path as given, or relative to the repository when it does not exist from here."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


# ----------------------------------------------------------------------------- Twitch


def load_twitch(root: str | Path, languages: tuple[str, ...] | None = None) -> Dataset:
    """The six MUSAE Twitch graphs as one platform; mutual links become follows both ways."""
    root = resolve_path(root)
    if not root.is_dir():
        raise InputError("Twitch data folder not found (set data.twitch_dir)", path=str(root))
    languages = tuple(languages or TWITCH_LANGUAGE)
    accounts_parts, edge_parts = [], []
    dup_rows = 0
    offset = 0
    for lang in languages:
        if lang not in TWITCH_LANGUAGE:
            raise InputError(
                f"unknown Twitch language; known: {', '.join(TWITCH_LANGUAGE)}",
                field="data.twitch_languages",
                value=lang,
            )
        folder = root / lang
        target_path = folder / f"musae_{lang}_target.csv"
        target = _read_csv_checked(
            target_path, ["id", "days", "mature", "views", "partner", "new_id"]
        )
        before = len(target)
        # FR repeats two accounts (views differ by one); keep the latest row per account.
        target = target.drop_duplicates("new_id", keep="last").sort_values("new_id")
        dup_rows += before - len(target)
        local = target["new_id"].to_numpy(dtype=np.int64)
        lookup = np.full(int(local.max()) + 1, -1, dtype=np.int64)
        lookup[local] = np.arange(len(local)) + offset

        topics_raw = json.loads((folder / f"musae_{lang}_features.json").read_text())
        owner = lookup[np.fromiter((int(k) for k in topics_raw), dtype=np.int64)]
        lengths = np.fromiter((len(v) for v in topics_raw.values()), dtype=np.int64)
        flat = np.fromiter((t for v in topics_raw.values() for t in v), dtype=np.int64)
        indptr, values = group_to_bag(np.repeat(owner - offset, lengths), flat, len(local))
        # A game listed twice in a profile is one topic.
        topics = csr_to_bag(indptr, values).map(np.unique)

        accounts_parts.append(
            pd.DataFrame(
                {
                    "external_id": target["id"].astype(str).to_numpy(),
                    "created_at": TWITCH_SNAPSHOT
                    - pd.to_timedelta(target["days"].to_numpy(), unit="D"),
                    "language": TWITCH_LANGUAGE[lang],
                    "country": None,
                    "topics": topics.to_numpy(),
                    "views": target["views"].to_numpy(dtype=np.int64),
                    "partner": target["partner"].to_numpy(dtype=bool),
                    "mature": target["mature"].to_numpy(dtype=bool),
                }
            )
        )
        edges_path = folder / f"musae_{lang}_edges.csv"
        edges = _read_csv_checked(edges_path, ["from", "to"])
        src, dst = edges["from"].to_numpy(np.int64), edges["to"].to_numpy(np.int64)
        for name, ids in (("from", src), ("to", dst)):
            unknown = (
                (ids < 0) | (ids >= len(lookup)) | (lookup[np.clip(ids, 0, len(lookup) - 1)] < 0)
            )
            fail_at_first(
                unknown, "id not in the target file", path=edges_path, field=name, values=ids
            )
        edge_parts.append(np.stack([lookup[src], lookup[dst]], axis=1))
        offset += len(local)

    accounts = pd.concat(accounts_parts, ignore_index=True)
    accounts.insert(0, "account_id", np.arange(len(accounts), dtype=np.int64))
    edges = np.concatenate(edge_parts)
    follows, report = _finish_follows(edges[:, 0], edges[:, 1], None, undirected=True)
    report["duplicate_account_rows_dropped"] = int(dup_rows)
    ds = Dataset(
        name="twitch"
        if len(languages) == len(TWITCH_LANGUAGE)
        else "twitch-" + "-".join(languages),
        accounts=accounts,
        follows=follows,
        load_report=report,
        feature_kinds={"views": "dense", "partner": "categorical", "mature": "categorical"},
    )
    validate_contract(ds, str(root))
    return ds


def require_file(path: Path) -> None:
    """The path is an existing regular file (not a folder), or an error naming it."""
    if not path.exists():
        raise InputError("file not found", path=str(path))
    if not path.is_file():
        raise InputError("is a folder, not a file", path=str(path))


def _read_csv_checked(path: Path, columns: list[str]) -> pd.DataFrame:
    require_file(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"malformed CSV: {exc}", path=str(path)) from None
    for col in columns:
        if col not in frame.columns:
            raise InputError("missing column", path=str(path), line=1, field=col)
    for col in columns:
        fail_at_first(
            frame[col].isna().to_numpy(), "empty value (truncated file?)", path=path, field=col
        )
    return frame


# -------------------------------------------------------------------------- edge lists


def _read_text(path: Path) -> str:
    require_file(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise InputError(f"truncated or corrupt gzip stream ({exc})", path=str(path)) from None
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise InputError("a binary file, not text (NUL byte)", path=str(path), line=line)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not UTF-8 text", path=str(path), line=line) from None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _data_lines(text: str) -> list[int]:
    """1-based file line numbers of the non-blank, non-comment lines (error path only)."""
    return [
        i + 1
        for i, line in enumerate(text.splitlines())
        if line.strip() and not line.lstrip().startswith(COMMENT_PREFIXES)
    ]


def read_edgelist(
    path: str | Path, *, undirected: bool = False, header: str = "auto"
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Parse an edge list: CSV/TSV/whitespace, optional header and timestamp, `.gz` accepted.

    Returns raw rows (source, target as strings, timestamp as float seconds or NaN) and
    a small report; errors name the file, line and field.
    """
    path = resolve_path(path)
    text = _read_text(path)
    first = [
        ln
        for ln in text.splitlines()[:50]
        if ln.strip() and not ln.lstrip().startswith(COMMENT_PREFIXES)
    ]
    if not first:
        raise InputError("no edges: the file is empty", path=str(path))
    sep = "," if "," in first[0] else ("\t" if "\t" in first[0] else r"\s+")
    split = (lambda ln: ln.split(sep)) if sep != r"\s+" else str.split
    tokens0 = [t.strip() for t in split(first[0].strip())]
    if header not in ("auto", "yes", "no"):
        raise InputError("expected auto, yes or no", field="data.header", value=header)
    has_header = header == "yes" or (
        header == "auto" and _looks_like_header(tokens0, first, split, path, _data_lines(text)[0])
    )
    if len(tokens0) < 2:
        raise InputError(
            "expected at least two columns (follower, followee)",
            path=str(path),
            line=_data_lines(text)[0],
        )
    n_cols = len(tokens0)
    names = ["source", "target", "timestamp"][: min(n_cols, 3)] + [
        f"extra_{i}" for i in range(3, n_cols)
    ]
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None,
            names=names,
            dtype=str,
            skip_blank_lines=True,
            engine="c",
            skiprows=_comment_rows(text),
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.ParserError as exc:
        # The C parser counts physical file lines, comments included.
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match is None:
            raise InputError(f"malformed ({exc})", path=str(path)) from None
        expected, line, saw = (int(g) for g in match.groups())
        raise InputError(
            f"wrong number of columns: expected {expected}, saw {saw}", path=str(path), line=line
        ) from None
    if has_header:
        names_row = frame.iloc[0]
        frame = frame.iloc[1:].reset_index(drop=True)
        repeated = (frame["source"] == names_row["source"]) & (
            frame["target"] == names_row["target"]
        )
        fail_at_first(
            repeated.to_numpy(),
            "the header line repeats here (files joined together?)",
            path=path,
            field="header",
            values=frame["source"] + sep.replace("\\s+", " ") + frame["target"],
            line_of=lambda row: _data_lines(text)[row + 1],
        )
    if frame.empty:
        raise InputError("no edges: the file has a header but no rows", path=str(path))
    row_offset = 1 if has_header else 0

    def line_of(row: int) -> int:  # only called on the error path
        return _data_lines(text)[row + row_offset]

    for col, label in (("source", "follower"), ("target", "followee")):
        fail_at_first(
            frame[col].isna().to_numpy(),
            "missing value (truncated line?)",
            path=path,
            field=label,
            line_of=line_of,
        )
    ts = np.full(len(frame), np.nan)
    if "timestamp" in frame.columns:
        raw_ts = frame["timestamp"]
        ts = pd.to_numeric(raw_ts, errors="coerce").to_numpy(dtype=float)
        fail_at_first(
            np.isnan(ts) & raw_ts.notna().to_numpy(),
            "not a number (expected Unix seconds)",
            path=path,
            field="timestamp",
            values=raw_ts,
            line_of=line_of,
        )
        fail_at_first(
            np.abs(np.nan_to_num(ts)) > MAX_UNIX_SECONDS,
            "out of range (expected Unix seconds between the years 1678 and 2261)",
            path=path,
            field="timestamp",
            values=raw_ts,
            line_of=line_of,
        )
        missing = raw_ts.isna().to_numpy()
        if not missing.all():
            fail_at_first(
                missing,
                "missing while other rows have one",
                path=path,
                field="timestamp",
                line_of=line_of,
            )
    out = pd.DataFrame(
        {
            "source": frame["source"].str.strip(),
            "target": frame["target"].str.strip(),
            "timestamp": ts,
        }
    )
    return out, {
        "rows_read": int(len(out)),
        "header": bool(has_header),
        "undirected": bool(undirected),
        "separator": "whitespace" if sep == r"\s+" else sep,
    }


def _comment_rows(text: str) -> list[int] | None:
    if "#" not in text and "%" not in text:
        return None
    rows = [
        i for i, line in enumerate(text.splitlines()) if line.lstrip().startswith(COMMENT_PREFIXES)
    ]
    return rows or None


def _looks_like_header(
    tokens0: list[str], first: list[str], split: Callable, path: Path, line: int
) -> bool:
    """Known column names, or a non-numeric row above numeric ones, are a header; a
    numeric first row is data. Anything else is a guess, and `auto` does not guess."""
    if all(t.lower() in HEADER_NAMES for t in tokens0):
        return True
    if all(_is_number(t) for t in tokens0[:2]):
        return False
    if len(first) >= 2:
        tokens1 = [t.strip() for t in split(first[1].strip())]
        if all(_is_number(t) for t in tokens1[:2]):
            return True
    raise InputError(
        "cannot tell whether the first line is a header: its values are not numbers nor "
        "known column names (e.g. from,to or follower,followee[,timestamp]); "
        "pass --header yes or --header no",
        path=str(path),
        line=line,
        field="header",
        value=",".join(tokens0),
    )


def _finish_follows(
    src: np.ndarray, dst: np.ndarray, ts: np.ndarray | None, *, undirected: bool
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Mirror (if undirected), drop self-follows and duplicates, and count what was dropped."""
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    ts = np.full(len(src), np.nan) if ts is None else np.asarray(ts, dtype=float)
    self_mask = src == dst
    report: dict[str, object] = {
        "edge_rows": int(len(src)),
        "self_follows_dropped": int(self_mask.sum()),
    }
    src, dst, ts = src[~self_mask], dst[~self_mask], ts[~self_mask]
    if undirected:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        ts = np.concatenate([ts, ts])
    frame = pd.DataFrame({"follower_id": src, "followee_id": dst, "ts": ts})
    before = len(frame)
    # Keep the earliest time of a repeated follow.
    frame = frame.sort_values(["follower_id", "followee_id", "ts"], kind="stable")
    frame = frame.drop_duplicates(["follower_id", "followee_id"], keep="first")
    report["duplicate_follows_dropped"] = int(before - len(frame))
    report["follows"] = int(len(frame))
    stamp = pd.to_datetime(frame["ts"].to_numpy(), unit="s", utc=True)
    follows = pd.DataFrame(
        {
            "follower_id": frame["follower_id"].to_numpy(),
            "followee_id": frame["followee_id"].to_numpy(),
            "event_timestamp": stamp,
        }
    )
    return follows, report


def read_node_attributes(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Node-attribute CSV: one row per id; numbers -> dense, strings -> categorical,
    lists (`a|b|c` or `[a, b]`) -> bags. Returns the frame (id column `external_id`)
    and the kind of each column."""
    path = resolve_path(path)
    text = _read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as exc:
        raise InputError(f"malformed CSV ({exc})", path=str(path)) from None
    if frame.empty:
        raise InputError("no rows", path=str(path))
    lowered = {c.lower().strip(): c for c in frame.columns}
    id_col = next((lowered[c] for c in ID_COLUMN_NAMES if c in lowered), None)
    if id_col is None:
        raise InputError(
            f"no id column (expected one of: {', '.join(ID_COLUMN_NAMES)})",
            path=str(path),
            line=1,
            field="id",
        )
    frame = frame.rename(columns={id_col: "external_id"})
    frame.columns = [c.strip() for c in frame.columns]
    ids = frame["external_id"]
    fail_at_first(ids.isna().to_numpy(), "empty id", path=path, field=id_col)
    frame["external_id"] = ids.str.strip()
    fail_at_first(
        frame["external_id"].duplicated().to_numpy(),
        "id appears twice (one row per id)",
        path=path,
        field=id_col,
        values=frame["external_id"],
    )
    kinds: dict[str, str] = {}
    for col in frame.columns:
        if col == "external_id":
            continue
        values = frame[col].dropna()
        if col == "created_at":
            kinds[col] = "timestamp"
            numeric = pd.to_numeric(frame[col], errors="coerce")
            if values.map(_is_number).all():
                frame[col] = pd.to_datetime(numeric, unit="s", utc=True)
            else:
                parsed = pd.to_datetime(frame[col], utc=True, errors="coerce")
                fail_at_first(
                    parsed.isna().to_numpy() & frame[col].notna().to_numpy(),
                    "not a date or Unix seconds",
                    path=path,
                    field=col,
                    values=frame[col],
                )
                frame[col] = parsed
        elif (
            len(values)
            and values.str.match(r"^\s*\[.*\]\s*$").all()
            or (len(values) and values.str.contains("|", regex=False).any())
        ):
            kinds[col] = "bag"
            frame[col] = frame[col].fillna("").map(_parse_bag)
        elif len(values) and values.map(_is_number).all():
            kinds[col] = "dense"
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
        else:
            kinds[col] = "categorical"
    return frame, kinds


def _parse_bag(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts = re.split(r"[|,;]", text)
    return [p.strip().strip("'\"") for p in parts if p.strip().strip("'\"")]


def _encode_bag_column(column: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """Token lists -> int64 arrays; numeric tokens keep their value, others get codes."""
    lengths = column.map(len).to_numpy()
    flat = pd.Series([t for bag in column for t in bag], dtype=object)
    numeric = pd.to_numeric(flat, errors="coerce")
    vocab = None
    if len(flat) and numeric.notna().all() and (numeric % 1 == 0).all():
        codes = numeric.to_numpy(dtype=np.int64)
    else:
        codes_raw, uniques = pd.factorize(flat.astype(str), sort=True)
        codes, vocab = codes_raw.astype(np.int64), list(uniques)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return csr_to_bag(indptr, codes), vocab


def load_edgelist(
    edges: str | Path,
    nodes: str | Path | None = None,
    *,
    undirected: bool = False,
    header: str = "auto",
    name: str | None = None,
) -> Dataset:
    """Any edge list (+ optional node attributes) as a Dataset; ids of any type are remapped."""
    raw, report = read_edgelist(edges, undirected=undirected, header=header)
    attrs, kinds = (None, {})
    if nodes is not None:
        attrs, kinds = read_node_attributes(nodes)
    pieces = [raw["source"], raw["target"]]
    if attrs is not None:
        pieces.insert(0, attrs["external_id"])
    all_ids = pd.unique(pd.concat(pieces, ignore_index=True))
    numeric = pd.to_numeric(pd.Series(all_ids), errors="coerce")
    if numeric.notna().all():
        all_ids = all_ids[np.argsort(numeric.to_numpy(), kind="stable")]
    index = pd.Index(all_ids)
    src = index.get_indexer(raw["source"])
    dst = index.get_indexer(raw["target"])
    has_ts = not np.isnan(raw["timestamp"].to_numpy()).all()
    follows, finish = _finish_follows(
        src, dst, raw["timestamp"].to_numpy() if has_ts else None, undirected=undirected
    )
    report.update(finish)
    n = len(index)
    accounts = pd.DataFrame(
        {
            "account_id": np.arange(n, dtype=np.int64),
            "external_id": index.astype(str).to_numpy(dtype=object),
            "created_at": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]"),
            "language": pd.Series([None] * n, dtype=object),
            "country": pd.Series([None] * n, dtype=object),
            "topics": empty_bags(n),
        }
    )
    extra_kinds: dict[str, str] = {}
    vocabularies: dict[str, list[str]] = {}
    if attrs is not None:
        rows = index.get_indexer(attrs["external_id"])
        report["attribute_rows"] = int(len(attrs))
        report["accounts_without_attributes"] = int(n - len(attrs))
        for col, kind in kinds.items():
            values = attrs[col]
            if kind == "bag":
                values, vocab = _encode_bag_column(values)
                if vocab is not None:
                    vocabularies[col] = vocab
                target = empty_bags(n)
                target.iloc[rows] = values.to_numpy()
                accounts[col] = target
            else:
                if col not in accounts.columns:
                    fill = np.nan if kind == "dense" else None
                    accounts[col] = pd.Series(
                        [fill] * n, dtype=float if kind == "dense" else object
                    )
                column = accounts[col].copy()
                column.iloc[rows] = values.to_numpy()
                accounts[col] = column
            if col not in ("created_at", "language", "country", "topics"):
                extra_kinds[col] = kind
    report["accounts"] = n
    report["accounts_without_follows"] = int(
        n - len(np.union1d(follows["follower_id"], follows["followee_id"]))
    )
    if vocabularies:
        report["vocabularies"] = {k: len(v) for k, v in vocabularies.items()}
    ds = Dataset(
        name=name or Path(edges).name.split(".")[0],
        accounts=accounts,
        follows=follows,
        load_report=report,
        feature_kinds=extra_kinds,
    )
    validate_contract(ds, str(edges))
    return ds
