"""Retrieval at scale: exact FAISS search against the factory's index and its peers in one run
on the same vectors: FAISS IVF-Flat, IVF-PQ, IVF fast-scan PQ with exact re-ranking and
IndexHNSWFlat; the `hnswlib`, `usearch` and `scann` libraries; HNSW graphs of several build
settings (M, efConstruction); a hash-sharded HNSW.

For each setting: Recall@100 against exact search, queries/s one query at a time (one
thread, as a serving worker does) and in one batch (all threads), build time and index
size. Prints a table, writes JSON, and logs the recall/QPS frontier plot to MLflow.

Vectors: with --from-run, the producer and consumer embeddings of a pipeline run's trained
model (benchmarks/pipeline.py --scale 1m makes one with 1M producers); otherwise synthetic
unit vectors of low intrinsic dimension (communities in a 16-d latent space mapped to 64-d).

    make bench   # the usearch and scann peers
    .venv/bin/python benchmarks/ann.py --from-run runs/bench/pipeline-1m --json runs/bench/ann.json
    .venv/bin/python benchmarks/ann.py --n 100000 --json /tmp/ann.json       # synthetic, quick

The verdict: the factory's index at Recall@100 >= 0.95, its speed-up over exact search, and
whether any peer answers single queries faster at that recall.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Keep benchmarks/ off the import path (its scripts are named like the packages).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

K = 100
TARGET = 0.95


def mixture(n: int, dim: int, seed: int, latent: int = 16) -> np.ndarray:
    """Unit vectors of low intrinsic dimension: community centres and members in a
    `latent`-d space, mapped into `dim` dimensions, plus a little full-rank noise."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((latent, dim)).astype(np.float32)
    centres = np.random.default_rng(1).standard_normal((2000, latent)).astype(np.float32)
    z = centres[rng.integers(0, 2000, n)] + 0.7 * rng.standard_normal((n, latent)).astype(
        np.float32
    )
    x = z @ basis + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def learned(run: Path, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Producer embeddings of every account and consumer embeddings of sampled users, from
    a pipeline run's champion (its registered weights) and its training set."""
    import torch

    from followrec.core.config import load_config
    from followrec.pipeline import read_training_set
    from followrec.registry import promote
    from followrec.registry.aliases import CHAMPION, alias_version
    from followrec.training.model_io import load_model_dir
    from followrec.training.train import encode

    cfg = load_config(run / "config.yaml")
    champion = alias_version(promote.client_for(cfg, run), CHAMPION)
    if champion is None:
        raise SystemExit(f"no champion in {run}: run the training DAG first")
    trained = load_model_dir(promote.model_dir_of(cfg, run, str(champion.version)))
    tables = read_training_set(run)
    consumer_t, producer_t = trained.tensors(tables)
    users = np.sort(np.random.default_rng(5).choice(len(tables.consumer), n_queries, replace=False))
    with torch.no_grad():
        items = encode(trained.model.producer, producer_t).numpy().astype(np.float32)
        queries = encode(trained.model.consumer, consumer_t, users).numpy().astype(np.float32)
    return np.ascontiguousarray(items), np.ascontiguousarray(queries)


def parse_builds(text: str) -> list[tuple[str | None, int, int]]:
    """'16:80,usearch=48:200' -> [(None, 16, 80), ('usearch', 48, 200)]."""
    builds = []
    for item in text.split(","):
        family, _, setting = item.rpartition("=")
        m, efc = (int(v) for v in setting.split(":"))
        builds.append((family or None, m, efc))
    return builds


def builds_of(family: str, builds: list[tuple[str | None, int, int]]) -> list[tuple[int, int]]:
    return [(m, efc) for f, m, efc in builds if f in (None, family)]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size


def timed_single(search, queries: np.ndarray, rounds: int = 3) -> float:  # noqa: ANN001
    """Queries/s answering one query per call: the best of `rounds` passes, since this
    shared machine's speed varies from second to second (noise only ever slows a pass)."""
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for q in queries:
            search(q[None, :])
        best = max(best, len(queries) / (time.perf_counter() - started))
    return best


def timed_batch(search, queries: np.ndarray) -> tuple[float, np.ndarray]:  # noqa: ANN001
    started = time.perf_counter()
    ids = search(queries)
    return len(queries) / (time.perf_counter() - started), ids


def faiss_size(index) -> int:  # noqa: ANN001
    import faiss

    from followrec.indexing.hnsw_graph import HnswGraph

    if isinstance(index, HnswGraph):
        return int(index.graph.index_file_size())
    return int(faiss.serialize_index(index).nbytes)


def run(args: argparse.Namespace) -> dict:
    import importlib.util

    import faiss
    import hnswlib

    missing = [f for f in ("usearch", "scann") if f in args.families and not
               importlib.util.find_spec(f)]  # fmt: skip
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: `make bench` installs the pinned "
                         "peers, or leave them out with --families")  # fmt: skip
    threads = args.threads or os.cpu_count() or 1
    if args.from_run:
        vectors, queries = learned(Path(args.from_run), args.queries)
        args.n, args.dim = vectors.shape
    else:
        vectors = mixture(args.n, args.dim, seed=2)
        queries = mixture(args.queries, args.dim, seed=3)
    single_q = queries[: args.single]
    rows: list[dict] = []

    def faiss_search(index):  # noqa: ANN001, ANN202
        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q, K)[1]

        return search

    # Exact search: ground truth and the peer every speedup is measured against.
    started = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(threads)
    batch_qps, truth = timed_batch(faiss_search(flat), queries)
    faiss.omp_set_num_threads(1)
    flat_single = timed_single(faiss_search(flat), single_q[: max(20, args.single // 5)])
    rows.append(
        {"family": "faiss", "kind": "flat", "params": {}, "recall": 1.0,
         "single_qps": flat_single, "batch_qps": batch_qps, "build_s": build_s,
         "bytes": faiss_size(flat)}
    )  # fmt: skip
    print(f"flat: {flat_single:.0f} q/s single, {batch_qps:.0f} q/s batch", flush=True)

    def sweep(family: str, kind: str, params: dict, index, build_s: float, size: int,  # noqa: ANN001
              set_effort, efforts, search,
              set_threads=faiss.omp_set_num_threads) -> None:  # fmt: skip
        # Threads are set outside the timed loops: one for single queries, all for batches.
        for effort in efforts:
            set_effort(effort)
            set_threads(threads)
            batch_qps, found = timed_batch(search, queries)
            r = recall(found, truth)
            set_threads(1)
            single = timed_single(search, single_q)
            rows.append(
                {"family": family, "kind": kind, "params": {**params, "effort": effort},
                 "recall": r, "single_qps": single, "batch_qps": batch_qps,
                 "build_s": build_s, "bytes": size}
            )  # fmt: skip
            print(f"{family} {kind} {params} effort {effort}: recall {r:.4f}, "
                  f"{single:.0f} q/s single", flush=True)  # fmt: skip
            if r >= 0.999:
                break

    faiss.omp_set_num_threads(threads)
    if "factory" in args.families:
        from followrec.indexing.factory import (
            HNSW_EF_CONSTRUCTION,
            HNSW_M,
            choose,
            set_search_effort,
        )
        from followrec.indexing.hnsw_graph import HnswGraph

        choice = choose(len(vectors))
        started = time.perf_counter()
        if choice.kind == "hnsw":
            index = HnswGraph.build(vectors, HNSW_M, HNSW_EF_CONSTRUCTION, threads=threads)
        else:
            from followrec.indexing.factory import build

            index = build(choice, vectors)
        build_s = time.perf_counter() - started

        def factory_search(q: np.ndarray, index=index) -> np.ndarray:  # noqa: ANN001
            return index.search(q, K)[1]

        def set_threads(n: int, index=index) -> None:  # noqa: ANN001
            faiss.omp_set_num_threads(n)
            if isinstance(index, HnswGraph):
                index.graph.set_num_threads(n)

        sweep("followrec", choice.kind, dict(choice.params), index, build_s, faiss_size(index),
              lambda e, index=index: set_search_effort(index, choice, e), args.ef,
              factory_search, set_threads=set_threads)  # fmt: skip
        del index

    for m, efc in builds_of("faiss_hnsw", args.builds) if "faiss_hnsw" in args.families else []:
        started = time.perf_counter()
        index = faiss.IndexHNSWFlat(args.dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
        index.add(vectors)
        build_s = time.perf_counter() - started

        def set_ef(ef: int, index=index) -> None:  # noqa: ANN001
            index.hnsw.efSearch = ef

        sweep("faiss", "faiss_hnsw", {"M": m, "efConstruction": efc}, index,
              build_s, faiss_size(index), set_ef, args.ef,
              faiss_search(index))  # fmt: skip
        del index

    nlist = args.nlist
    train = vectors[np.random.default_rng(2).choice(len(vectors), min(len(vectors), 64 * nlist))]
    ivf_kinds = [k for k in ("ivf_flat", "ivf_pq", "ivf_fastscan") if k in args.families]
    if "ivf" in args.families:
        ivf_kinds = ["ivf_flat", "ivf_pq", *ivf_kinds]
    for kind in dict.fromkeys(ivf_kinds):
        started = time.perf_counter()
        # Fast-scan PQ: 4-bit codes of 2 dimensions each scanned in SIMD registers, then the
        # k x refine best re-ranked exactly (RFlat keeps the full vectors).
        spec = {"ivf_flat": f"IVF{nlist},Flat", "ivf_pq": f"IVF{nlist},PQ{args.dim // 4}",
                "ivf_fastscan": f"IVF{nlist},PQ{args.dim // 2}x4fs,RFlat"}[kind]  # fmt: skip
        index = faiss.index_factory(args.dim, spec, faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        index.add(vectors)
        build_s = time.perf_counter() - started
        ivf = faiss.extract_index_ivf(index)
        for refine in args.refine if kind == "ivf_fastscan" else [None]:
            if refine is not None:
                faiss.downcast_index(index).k_factor = refine

            def set_nprobe(p: int, ivf=ivf) -> None:  # noqa: ANN001
                ivf.nprobe = p

            params = {"nlist": nlist} | ({"refine": refine} if refine else {})
            sweep("faiss", kind, params, index, build_s, faiss_size(index), set_nprobe,
                  args.nprobe, faiss_search(index))  # fmt: skip
        del index, ivf

    for m, efc in builds_of("hnswlib", args.builds) if "hnswlib" in args.families else []:
        started = time.perf_counter()
        peer = hnswlib.Index(space="ip", dim=args.dim)
        peer.init_index(max_elements=len(vectors), M=m, ef_construction=efc)
        peer.set_num_threads(threads)
        peer.add_items(vectors, np.arange(len(vectors)))
        build_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            peer.save_index(f"{tmp}/peer.bin")
            size = os.path.getsize(f"{tmp}/peer.bin")

        def peer_search(peer=peer):  # noqa: ANN001, ANN202
            def search(q: np.ndarray) -> np.ndarray:
                return peer.knn_query(q, k=K)[0]

            return search

        sweep("hnswlib", "hnsw", {"M": m, "efConstruction": efc}, peer, build_s, size,
              peer.set_ef, args.ef, peer_search(), set_threads=peer.set_num_threads)  # fmt: skip
        del peer

    for m, efc in builds_of("usearch", args.builds) if "usearch" in args.families else []:
        from usearch.index import Index as UsearchIndex

        started = time.perf_counter()
        peer = UsearchIndex(ndim=args.dim, metric="ip", dtype="f32", connectivity=m,
                            expansion_add=efc)  # fmt: skip
        peer.add(np.arange(len(vectors)), vectors, threads=threads)
        build_s = time.perf_counter() - started
        usearch_threads = {"n": threads}

        def usearch_search(q: np.ndarray, peer=peer, state=usearch_threads) -> np.ndarray:  # noqa: ANN001
            found = peer.search(q, K, threads=state["n"])
            return np.atleast_2d(found.keys)

        def set_expansion(ef: int, peer=peer) -> None:  # noqa: ANN001
            peer.expansion_search = ef

        sweep("usearch", "hnsw", {"M": m, "efConstruction": efc}, peer, build_s,
              int(peer.memory_usage), set_expansion, args.ef, usearch_search,
              set_threads=lambda n, state=usearch_threads: state.update(n=n))  # fmt: skip
        del peer

    if "scann" in args.families:
        import scann

        leaves = args.scann_leaves or max(1, int(2 * np.sqrt(len(vectors))))
        for reorder in args.scann_reorder:
            started = time.perf_counter()
            searcher = (
                scann.scann_ops_pybind.builder(vectors, K, "dot_product")
                .tree(
                    num_leaves=leaves,
                    num_leaves_to_search=args.scann_search[0],
                    training_sample_size=min(len(vectors), 250_000),
                )  # fmt: skip
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .reorder(reorder)
                .set_n_training_threads(threads)
                .build()
            )
            build_s = time.perf_counter() - started
            with tempfile.TemporaryDirectory() as tmp:
                searcher.serialize(tmp)
                size = sum(f.stat().st_size for f in Path(tmp).iterdir())
            searched = {"leaves": args.scann_search[0]}

            def scann_search(q: np.ndarray, searcher=searcher, state=searched) -> np.ndarray:  # noqa: ANN001
                if len(q) == 1:
                    return searcher.search(q[0], leaves_to_search=state["leaves"])[0][None]
                return searcher.search_batched_parallel(q, leaves_to_search=state["leaves"])[0]

            sweep("scann", "tree_ah", {"leaves": leaves, "reorder": reorder}, searcher,
                  build_s, size, lambda v, state=searched: state.update(leaves=v),
                  args.scann_search, scann_search,
                  set_threads=searcher.set_num_threads)  # fmt: skip
            del searcher

    if args.shards > 1 and "shards" in args.families:
        from followrec.indexing.factory import IndexChoice
        from followrec.indexing.shards import build_sharded

        m, efc = builds_of("shards", args.builds)[0]
        started = time.perf_counter()
        faiss.omp_set_num_threads(threads)
        sharded = build_sharded(
            IndexChoice("hnsw", {"M": m, "ef_construction": efc}),
            vectors, np.arange(len(vectors)), args.shards,
        )  # fmt: skip
        build_s = time.perf_counter() - started
        for shard in sharded.shards:
            shard.index.graph.set_num_threads(1)
        size = sum(faiss_size(s.index) for s in sharded.shards)
        choice = IndexChoice("hnsw", {})

        def sharded_search():  # noqa: ANN202
            def search(q: np.ndarray) -> np.ndarray:
                return sharded.search(q, K)[1]

            return search

        sweep("followrec", f"hnsw_{args.shards}_shards", {"M": m, "efConstruction": efc},
              sharded, build_s, size,
              lambda ef: sharded.set_search_effort(choice, ef), args.ef,
              sharded_search())  # fmt: skip

    for row in rows:
        row["speedup_single_vs_flat"] = row["single_qps"] / flat_single
    return {
        "n": args.n, "dim": args.dim, "queries": args.queries, "single_queries": args.single,
        "threads": threads, "k": K, "rows": rows, "verdict": verdict(rows, flat_single),
    }  # fmt: skip


def verdict(rows: list[dict], flat_single: float) -> dict:
    """The factory's index at the target recall against exact search and against every
    peer's fastest setting at that recall, all from this run."""

    def at_target(family: str | None, kind: str | None = None) -> dict | None:
        ok = [
            r for r in rows
            if r["kind"] != "flat" and r["recall"] >= TARGET and "shards" not in r["kind"]
            and (family is None or r["family"] == family) and (kind is None or r["kind"] == kind)
        ]  # fmt: skip
        return max(ok, key=lambda r: r["single_qps"]) if ok else None

    chosen = at_target("followrec")
    peers = {
        f"{r['family']} {r['kind']}": at_target(r["family"], r["kind"])
        for r in rows
        if r["family"] != "followrec" and r["kind"] != "flat"
    }
    fastest_peer = max((p for p in peers.values() if p), key=lambda r: r["single_qps"],
                       default=None)  # fmt: skip
    if chosen is None:
        return {"chosen": None, "passed": False, "peers_at_target": peers}
    speedup = chosen["single_qps"] / flat_single
    return {
        "target_recall": TARGET,
        "chosen": chosen,
        "peers_at_target": peers,
        "fastest_peer_at_target": fastest_peer,
        "speedup_vs_flat": speedup,
        "vs_fastest_peer": None if fastest_peer is None
        else chosen["single_qps"] / fastest_peer["single_qps"],
        "passed": speedup >= 40
        and (fastest_peer is None or chosen["single_qps"] >= fastest_peer["single_qps"]),
    }  # fmt: skip


def plot_and_log(result: dict, out: Path, tracking_uri: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    series: dict[tuple, list] = {}
    for r in result["rows"]:
        key = (r["family"], r["kind"], r["params"].get("M"))
        series.setdefault(key, []).append(r)
    for (family, kind, m), points in series.items():
        label = f"{family} {kind}" + (f" M={m}" if m else "")
        ax.plot([p["recall"] for p in points], [p["single_qps"] for p in points], "o-",
                label=label, markersize=4)  # fmt: skip
    ax.axvline(TARGET, color="grey", linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("Recall@100 against exact search")
    ax.set_ylabel("queries/s (one query per call, 1 thread)")
    ax.set_title(f"{result['n']:,} producers, {result['dim']}-d")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment("followrec-benchmarks")
        with mlflow.start_run(run_name=f"ann-{result['n']}"):
            mlflow.log_params({"n": result["n"], "dim": result["dim"], "k": K})
            chosen = result["verdict"].get("chosen") or {}
            mlflow.log_metrics({
                "chosen_recall": chosen.get("recall", 0.0),
                "chosen_single_qps": chosen.get("single_qps", 0.0),
                "speedup_vs_flat": result["verdict"].get("speedup_vs_flat", 0.0),
            })  # fmt: skip
            mlflow.log_artifact(str(path))
            mlflow.log_artifact(str(out))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--n", type=int, default=1_000_000, help="producers (synthetic)")
    parser.add_argument(
        "--from-run",
        help="use a pipeline run's learned embeddings (every producer; sampled users as "
        "queries) instead of synthetic vectors, e.g. runs/bench/pipeline-1m",
    )
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall/batch")
    parser.add_argument("--single", type=int, default=300, help="queries timed one by one")
    parser.add_argument(
        "--builds",
        type=parse_builds,
        default=parse_builds("16:80,16:200,32:200"),
        help="HNSW build settings M:efConstruction for the FAISS, hnswlib and usearch graphs; "
        "FAMILY=M:efConstruction for one family only, e.g. 32:200,usearch=48:200",
    )
    parser.add_argument("--ef", type=lambda s: [int(v) for v in s.split(",")],
                        default=[100, 128, 160, 192, 224, 256, 320, 384, 512, 768])  # fmt: skip
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobe", type=lambda s: [int(v) for v in s.split(",")],
                        default=[8, 16, 32, 64, 128])  # fmt: skip
    parser.add_argument("--refine", type=lambda s: [int(v) for v in s.split(",")], default=[4],
                        help="fast-scan PQ: re-rank k x this many candidates exactly")  # fmt: skip
    parser.add_argument("--scann-leaves", type=int, default=0,
                        help="scann partitions (0 = 2 sqrt(n))")  # fmt: skip
    parser.add_argument("--scann-search", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10, 20, 40, 80, 160], help="scann leaves searched")  # fmt: skip
    parser.add_argument("--scann-reorder", type=lambda s: [int(v) for v in s.split(",")],
                        default=[400], help="scann candidates re-ranked exactly")  # fmt: skip
    parser.add_argument("--shards", type=int, default=4, help="hash shards (1 = skip)")
    parser.add_argument(
        "--families",
        type=lambda v: set(v.split(",")),
        default={
            "factory",
            "faiss_hnsw",
            "ivf",
            "ivf_fastscan",
            "hnswlib",
            "usearch",
            "scann",
            "shards",
        },  # fmt: skip
        help="which to run: factory (the index followrec builds), faiss_hnsw, ivf (IVF-Flat "
        "and IVF-PQ), ivf_flat, ivf_pq, ivf_fastscan, hnswlib, usearch, scann, shards",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="threads for builds and batches (0 = all cores)"
    )
    parser.add_argument("--mlflow", default="sqlite:///runs/bench/mlflow.db",
                        help="tracking URI for the plot ('' = do not log)")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args)
    out.write_text(json.dumps(result, indent=2))
    plot = plot_and_log(result, out, args.mlflow or None)
    print(f"\n{'family':8s} {'kind':16s} {'params':38s} {'recall':>7s} {'1-q/s':>8s} "
          f"{'x flat':>7s} {'batch/s':>8s} {'build s':>8s} {'MB':>7s}")  # fmt: skip
    for r in result["rows"]:
        print(f"{r['family']:8s} {r['kind']:16s} {json.dumps(r['params']):38s} "
              f"{r['recall']:7.4f} {r['single_qps']:8.0f} {r['speedup_single_vs_flat']:7.1f} "
              f"{r['batch_qps']:8.0f} {r['build_s']:8.1f} {r['bytes'] / 2**20:7.1f}")  # fmt: skip
    v = result["verdict"]
    if v.get("chosen"):
        c, p = v["chosen"], v["fastest_peer_at_target"]
        peer = f"{p['family']} {p['kind']} {p['params']} {p['single_qps']:.0f} q/s" if p else "none"
        print(f"\nchosen: {c['kind']} {c['params']} recall {c['recall']:.4f}, "
              f"{c['single_qps']:.0f} q/s = {v['speedup_vs_flat']:.1f}x exact single-query; "
              f"fastest peer at the target: {peer}; passed: {v['passed']}")  # fmt: skip
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
