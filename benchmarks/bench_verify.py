"""The deterministic verifier: hashing, sealing, and what cheating nodes achieve.

Three parts, each ours beside a reference:

* canonical hash of a results folder (``hash_tree``) vs a bare ``hashlib`` pass
  over the same files' bytes (the headline: the fastest honest reference, and the
  floor for any Python hashing) and ``sha256sum`` over them (coreutils; slower
  than hashlib here, kept as a second row), on big files and on many small ones;
* sealing and opening a proposal (ChaCha20-Poly1305 under the X25519 key a node
  keeps for a requester; and a node's first proposal for a requester, which makes
  that key: X25519 + HKDF on each side) vs libsodium's sealed box (PyNaCl, if
  installed: a fresh key per box) and vs the Ed25519 sign + verify every envelope
  already costs;
* adversarial trials (:func:`bacalhau.testing.malicious.run_trial`): 9 nodes,
  3 cheating, ``min_bids=9 concurrency=3 confidence=2``, for each kind of
  cheat, with random and reputation selection: the observed rates of completed
  jobs, honest majorities and wrong results accepted. The reference is the
  rate a perfect referee would get: completed exactly when 2 of the 3 chosen
  nodes are honest (77.4% for random choice).

* the ``audit`` verifier, simulated on the requester's pure state machine
  (``_audit_sim.py``): compute per verified job at p = 0.1 against concurrency 3
  and a single run; jobs until a node lying on 10% of its jobs is caught, over
  many seeds; 3 colluders of 9 under audits.

Run: ``python benchmarks/bench_verify.py [--quick] [--audit-only]``; writes
``benchmarks/results/verify.json`` (``verify_audit.json`` with ``--audit-only``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parent))
import _audit_sim
from _common import table, write

from bacalhau.identity import Identity, verify_signature
from bacalhau.protocol.requester import RequesterConfig
from bacalhau.testing.malicious import run_trial
from bacalhau.verifier.canonical import hash_tree
from bacalhau.verifier.deterministic import open_proposal, seal_proposal


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_tree(root: Path, files: int, size: int) -> list[Path]:
    paths = []
    rng = os.urandom(size)
    for i in range(files):
        path = root / f"out/{i % 17}/f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng[i % 7 :] + rng[: i % 7])
        paths.append(path)
    return paths


def hashing(quick: bool) -> list[dict[str, Any]]:
    shapes = [
        ("large files", 4 if quick else 16, 4 << 20),
        ("small files", 500 if quick else 5000, 200),
    ]
    rows = []
    for label, files, size in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            paths = make_tree(root, files, size)
            total = files * size
            repeat = 3

            def bare(paths: list[Path] = paths) -> None:
                for p in paths:
                    hashlib.sha256(p.read_bytes()).digest()

            def coreutils(paths: list[Path] = paths) -> None:
                subprocess.run(
                    ["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL
                )

            ours = best_of(lambda root=root: hash_tree(root), repeat)
            ref = best_of(coreutils, repeat)
            floor = best_of(bare, repeat)
            rows.append(
                {
                    "case": f"{label} ({files} x {size} B)",
                    "bytes": total,
                    "ours_s": ours,
                    "sha256sum_s": ref,
                    "hashlib_s": floor,
                    "ours_MBps": total / ours / 1e6,
                    "ratio_vs_sha256sum": ours / ref,
                    "ratio_vs_hashlib": ours / floor,
                }
            )
    return rows


def sealing(quick: bool) -> dict[str, Any]:
    n = 300 if quick else 3000
    requester = Identity.generate()
    node = Identity.generate().node_id
    digest = hashlib.sha256(b"results").digest()
    proposals = [b""] * n

    def seal() -> None:
        for i in range(n):
            proposals[i] = seal_proposal(
                digest, job_id=f"j-{i}", node_id=node, requester_key=requester.seal_public_key
            )

    def open_all() -> None:
        for i in range(n):
            open_proposal(requester, proposals[i], job_id=f"j-{i}", node_id=node)

    out: dict[str, Any] = {
        "n": n,
        "seal_us": best_of(seal, 3) / n * 1e6,
        "open_us": best_of(open_all, 3) / n * 1e6,
        "proposal_bytes": len(proposals[0]),
    }
    # a node's first proposal for a requester: a sender key to make and one exchange on
    # each side (a node keeps its key for a requester, and the requester the key it
    # derived, so the figures above are every later proposal's); each round's senders
    # are nodes that have not sealed for this requester before, so neither side holds a
    # key for them yet
    fresh = [[f"{node}-{k}-{i}" for i in range(n)] for k in range(3)]
    firsts = [[b""] * n for _ in range(3)]
    seal_rounds, open_rounds = iter(range(3)), iter(range(3))

    def seal_first() -> None:
        k = next(seal_rounds)
        for i in range(n):
            firsts[k][i] = seal_proposal(
                digest,
                job_id=f"j-{i}",
                node_id=fresh[k][i],
                requester_key=requester.seal_public_key,
            )

    def open_first() -> None:
        k = next(open_rounds)
        for i in range(n):
            open_proposal(requester, firsts[k][i], job_id=f"j-{i}", node_id=fresh[k][i])

    out["seal_first_us"] = best_of(seal_first, 3) / n * 1e6
    out["open_first_us"] = best_of(open_first, 3) / n * 1e6
    signer = Identity.generate()
    sigs = [b""] * n

    def sign() -> None:
        for i in range(n):
            sigs[i] = signer.sign(proposals[i])

    def verify() -> None:
        for i in range(n):
            verify_signature(signer.node_id, sigs[i], proposals[i])

    out["ed25519_sign_us"] = best_of(sign, 3) / n * 1e6
    out["ed25519_verify_us"] = best_of(verify, 3) / n * 1e6
    try:
        from nacl.public import PrivateKey, SealedBox
    except ImportError:
        out["nacl"] = None
        return out
    key = PrivateKey.generate()
    boxes = [b""] * n
    plain = b"j-0000" + node.encode() + digest

    def nacl_seal() -> None:
        for i in range(n):
            boxes[i] = SealedBox(key.public_key).encrypt(plain)

    def nacl_open() -> None:
        for i in range(n):
            SealedBox(key).decrypt(boxes[i])

    out["nacl"] = {
        "seal_us": best_of(nacl_seal, 3) / n * 1e6,
        "open_us": best_of(nacl_open, 3) / n * 1e6,
        "box_bytes": len(boxes[0]),
    }
    return out


async def trials(quick: bool) -> list[dict[str, Any]]:
    jobs = 10 if quick else 50
    behaviours = (
        ["liar", "copier"] if quick else ["liar", "colluder", "copier", "replayer", "forger"]
    )
    rows = []
    import attrs

    has_selection = "selection" in {f.name for f in attrs.fields(RequesterConfig)}
    for selection in ("random", "reputation") if has_selection else ("random",):
        extra = {"selection": selection} if has_selection else {}
        config = RequesterConfig(bid_timeout=5, execution_grace=3, publish_timeout=10, **extra)
        for behaviour in behaviours:
            r = await run_trial(behaviour, jobs=jobs, seed=1, requester=config, patience=0.5)
            rows.append(
                {
                    "behaviour": behaviour,
                    "selection": selection,
                    "jobs": r.jobs,
                    "completed": r.completed,
                    "honest_majority": r.honest_majority,
                    "wrong_accepted": r.wrong_accepted,
                    "wrong_published": r.wrong_published,
                    "published_unaccepted": r.published_unaccepted,
                    "unexpected": len(r.unexpected),
                    "failures": r.job_failures,
                    "rejections": r.rejections,
                    "forged_sent": r.forged_sent,
                    "forged_dropped": r.forged_dropped + r.invalid_dropped,
                    "seconds": r.seconds,
                }
            )
    return rows


def print_audit(audit: dict[str, Any]) -> None:
    cost, det, col = audit["cost"], audit["detection"], audit["colluders"]
    rows = [(name, f"{x:.3f}x") for name, x in cost["executions_per_job"].items()]
    rows.append(("reference: one run, unverified", "1.000x"))
    print(
        table(
            f"executions per verified job ({cost['jobs']} jobs, 9 honest nodes)",
            rows,
            ("scheme", "compute vs one run"),
        )
    )
    print()
    print(
        table(
            f"a node lying on {det['f']:.0%} of its jobs, audits at p={det['p']}",
            [
                (
                    str(det["seeds"]),
                    f"{det['caught_within_500']:.1%}",
                    f"{det['predicted_within_500']:.1%}",
                    str(det["median_jobs"]),
                    str(det["p99_jobs"]),
                    str(det["never_caught"]),
                )
            ],
            ("seeds", "caught within 500 jobs", "1-(1-pf)^500", "median", "p99", "never"),
        )
    )
    print()
    rows = []
    for c in (col, audit["colluders_tie_breaker"]):
        rows.append(
            (
                "re-runs it itself" if c["requester_reruns"] else "a third node decides",
                str(c["wrong_accepted"]),
                str(c["wrong_accepted_after_caught"]),
                f"{c['colluders_caught']}/{c['colluders']}",
                str(c["honest_branded"]),
                str(c["failed"]),
                f"{c['executions'] / c['jobs']:.3f}x",
            )
        )
    print(
        table(
            f"9 nodes, 3 colluders, audits at p={col['p']}, "
            f"{col['jobs']} jobs over {col['seeds']} seeds",
            rows,
            (
                "on a disagreement the requester",
                "wrong accepted",
                "after caught",
                "colluders caught",
                "honest branded",
                "failed",
                "compute",
            ),
        )
    )
    print()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke test)")
    parser.add_argument(
        "--audit-only", action="store_true", help="only the audit simulation (verify_audit.json)"
    )
    args = parser.parse_args(argv)
    audit = _audit_sim.run(args.quick)
    print_audit(audit)
    if args.audit_only:
        path = write("verify_audit", {"audit": audit, "quick": args.quick})
        print(f"\nwrote {path}")
        return {"audit": audit}
    hash_rows = hashing(args.quick)
    seal = sealing(args.quick)
    trial_rows = anyio.run(trials, args.quick)

    print(
        table(
            "canonical hash of a results folder (best of 3)",
            [
                (
                    r["case"],
                    f"{r['ours_s'] * 1e3:.1f} ms",
                    f"{r['ours_MBps']:.0f} MB/s",
                    f"{r['hashlib_s'] * 1e3:.1f} ms",
                    f"{r['ratio_vs_hashlib']:.2f}",
                    f"{r['sha256sum_s'] * 1e3:.1f} ms",
                    f"{r['ratio_vs_sha256sum']:.2f}",
                )
                for r in hash_rows
            ],
            ("case", "ours", "ours rate", "bare hashlib", "ratio", "sha256sum", "ratio"),
        )
    )
    print()
    seal_rows = [
        (
            "ours: ChaCha20-Poly1305 under a kept X25519 key",
            f"{seal['seal_us']:.0f}",
            f"{seal['open_us']:.0f}",
            str(seal["proposal_bytes"]),
        ),
        (
            "ours, a node's first for a requester (X25519+HKDF)",
            f"{seal['seal_first_us']:.0f}",
            f"{seal['open_first_us']:.0f}",
            str(seal["proposal_bytes"]),
        ),
    ]
    if seal.get("nacl"):
        nacl = seal["nacl"]
        seal_rows.append(
            (
                "libsodium sealed box (PyNaCl)",
                f"{nacl['seal_us']:.0f}",
                f"{nacl['open_us']:.0f}",
                str(nacl["box_bytes"]),
            )
        )
    seal_rows.append(
        (
            "Ed25519 sign / verify (every envelope)",
            f"{seal['ed25519_sign_us']:.0f}",
            f"{seal['ed25519_verify_us']:.0f}",
            "64",
        )
    )
    print(
        table(
            f"one proposal, us (n={seal['n']})",
            seal_rows,
            ("what", "seal/sign", "open/verify", "bytes"),
        )
    )
    print()
    print(
        table(
            "9 nodes, 3 cheating, concurrency 3, confidence 2, min_bids 9, retries 0",
            [
                (
                    r["behaviour"],
                    r["selection"],
                    f"{r['completed']}/{r['jobs']}",
                    f"{r['honest_majority']}/{r['jobs']}",
                    str(r["wrong_accepted"]),
                    str(r["wrong_published"]),
                    str(r["published_unaccepted"]),
                    str(r["unexpected"]),
                    f"{r['seconds']:.1f}s",
                )
                for r in trial_rows
            ],
            (
                "cheat",
                "selection",
                "completed",
                "honest majority (perfect referee)",
                "wrong accepted",
                "wrong published",
                "published unaccepted",
                "off-rule",
                "time",
            ),
        )
    )
    data = {
        "hashing": hash_rows,
        "sealing": seal,
        "trials": trial_rows,
        "audit": audit,
        "quick": args.quick,
    }
    path = write("verify", data)
    print(f"\nwrote {path}")
    return data


if __name__ == "__main__":
    main()
