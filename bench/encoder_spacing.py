"""One query text at a time through the photo package's text tower, with a pause before each call: how
much slower an encode is when the process was idle just before it, as an encode inside a search is
(it waits for the rest of the search; the "hops alone" baselines call it back to back).

    python -m bench.encoder_spacing                       # pauses 0 2 5 10 20 ms, 1 and 2 threads
    python -m bench.encoder_spacing --calls 50 --rounds 1 # quick

ONNX Runtime runs in this process with the service's session options (`session_options`), spinning
off as served, so no RPC, batching or other process is involved. Each round measures every
(pause, threads) pair, the thread counts in a rotated order, `--calls` calls each; a call's latency is
the run alone (the pause is outside it) and its CPU is this process's CPU over the pair's calls,
pauses included. `x back-to-back` is the mean over the same thread count's pause 0 in the same round.
With one intra-op thread ONNX Runtime runs on the calling thread and wakes no pool thread, so a
slowdown that remains at one thread is not the thread pool's wake-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import onnxruntime as ort

from bench.encoder import CAPTIONS
from services.encoder.backends.onnxruntime import session_options
from services.encoder.package import load_package
from services.encoder.tokenizer import tokenizer_for

REPO = Path(__file__).resolve().parents[1]


def measure(session: ort.InferenceSession, feeds: list[dict], calls: int, pause_s: float) -> dict[str, float]:
    latencies = []
    cpu_start = time.process_time()
    for i in range(calls):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        session.run(None, feeds[i % len(feeds)])
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    return {
        "mean_ms": statistics.mean(latencies) * 1000,
        "p50_ms": statistics.median(latencies) * 1000,
        "cpu_ms_per_call": cpu / calls * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=150, help="calls per (pause, threads) pair and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pauses-ms", type=float, nargs="+", default=[2, 5, 10, 20], help="besides 0")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="ONNX Runtime intra-op threads"
    )
    args = parser.parse_args()
    pauses = sorted({0.0, *args.pauses_ms})

    package = load_package("photo", REPO / "models", REPO / "triton_models")
    tok = package.manifest.tokenizer
    tokenizer = tokenizer_for(tok.kind, tok.max_length, package.tokenizer_file)
    names = {t.name for t in package.tower("text").inputs}
    feeds = [{k: v for k, v in tokenizer([c]).tensors().items() if k in names} for c in CAPTIONS]
    text_file = str(package.tower("text").file)
    sessions = {
        n: ort.InferenceSession(text_file, session_options(n, False), providers=["CPUExecutionProvider"])
        for n in args.threads
    }
    for session in sessions.values():  # warm-up: first runs allocate and plan
        measure(session, feeds, 30, 0)

    header = ("round", "pause ms", "threads", "mean ms", "p50 ms", "cpu ms", "x back-to-back")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 8, 7, 8, 7, 7, 14), strict=True)))
    for rnd in range(args.rounds):
        order = args.threads[rnd % len(args.threads) :] + args.threads[: rnd % len(args.threads)]
        back_to_back: dict[int, float] = {}
        for pause in pauses:
            for n in order:
                row = measure(sessions[n], feeds, args.calls, pause / 1000)
                if pause == 0:
                    back_to_back[n] = row["mean_ms"]
                ratio = row["mean_ms"] / back_to_back[n]
                print(
                    f"{rnd:>5} {pause:>8g} {n:>7} {row['mean_ms']:>8.2f} {row['p50_ms']:>7.2f} "
                    f"{row['cpu_ms_per_call']:>7.2f} {ratio:>14.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
