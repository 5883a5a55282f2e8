"""The typed codec against pickle and LangGraph's JsonPlusSerializer, on three workloads.

Run: ``python benchmarks/bench_codecs.py [--quick] [--json OUT]``

Workloads (built from a fixed seed):

- ``scalars``: a dict of 10,000 mixed scalars (int, float, str, naive and UTC
  datetimes, bool, None, date);
- ``frame``: a 1,000,000-row x 8-column pandas DataFrame (int64, float64,
  float64 with NaN, bool, datetime64[ns], int32, category, str);
- ``array``: a 100 MB float64 numpy array (12.5M normal floats).

Variants, interleaved in one process (each repetition runs every variant once,
the first one rotating from repetition to repetition, after one untimed round
that also checks every round trip):

- ``pitstop typed``: ``TypedSerializer().dumps`` / ``loads``;
- ``pitstop stored``: the whole stored path: dumps, ``Envelope().seal``, the
  stored bytes (a row's data, or the blob's bytes), ``open`` / ``open_blob``, loads;
- ``pickle``: protocol 5, in band;
- ``langgraph jsonplus``: ``dumps_typed`` / ``loads_typed`` (recorded as an
  error or skipped when it cannot save the workload or one call exceeds 30 s).

Targets (printed as PASS/FAIL; the exit status is 1 when one fails):

- ``frame`` and ``array``: ``pitstop typed`` encode+decode p50 <= 1.5x pickle's,
  and its bytes <= pickle's (the same for ``pitstop stored`` is printed, not checked);
- ``scalars``: ``pitstop typed`` encode+decode p50 < ``langgraph jsonplus``'s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pitstop.codecs import Envelope, TypedSerializer

SEED = 20240601
SLOW_LIMIT_S = 30.0
"""A variant whose encode or decode takes longer than this (once) is not repeated."""
PICKLE = "pickle"
TYPED = "pitstop typed"
STORED = "pitstop stored"
JSONPLUS = "langgraph jsonplus"
VARIANTS = (TYPED, STORED, PICKLE, JSONPLUS)


# -- workloads ------------------------------------------------------------------


def scalars(n: int = 10_000) -> dict[str, Any]:
    """``k0``..``k{n-1}``: values cycling over 8 scalar types."""
    rng = np.random.default_rng(SEED)
    floats = rng.normal(size=n).tolist()
    base = dt.datetime(2024, 1, 1, 12, 0, 0)
    out: dict[str, Any] = {}
    for i in range(n):
        kind = i % 8
        value: Any
        if kind == 0:
            value = i * 7919 - 10_000_000
        elif kind == 1:
            value = floats[i]
        elif kind == 2:
            value = f"value-{i}-{i * 31 % 977}"
        elif kind == 3:
            value = base + dt.timedelta(seconds=i, microseconds=i % 1000)
        elif kind == 4:
            value = (base + dt.timedelta(minutes=i)).replace(tzinfo=dt.UTC)
        elif kind == 5:
            value = (i // 8) % 2 == 0
        elif kind == 6:
            value = None
        else:
            value = dt.date(2000, 1, 1) + dt.timedelta(days=i)
        out[f"k{i}"] = value
    return out


def frame(rows: int = 1_000_000) -> Any:
    """8 columns: int64, float64, float64 with NaN, bool, datetime64[ns], int32, category, str."""
    rng = np.random.default_rng(SEED)
    with_nan = rng.normal(size=rows)
    with_nan[rng.random(rows) < 0.05] = np.nan
    categories = ["red", "green", "blue", "cyan", "magenta"]
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": rng.normal(size=rows),
            "y": with_nan,
            "flag": rng.random(rows) < 0.5,
            "when": pd.date_range("2024-01-01", periods=rows, freq="s", unit="ns"),
            "small": rng.integers(0, 100, size=rows, dtype=np.int32),
            "color": pd.Categorical.from_codes(rng.integers(0, 5, size=rows), categories),
            "user": pd.Series([f"user{i % 1000}" for i in range(rows)]),
        }
    )


def array(elements: int = 12_500_000) -> Any:
    """100 MB of normal float64s."""
    return np.random.default_rng(SEED).normal(size=elements)


def same_scalars(a: Any, b: Any) -> None:
    if type(b) is not dict or a != b:
        raise AssertionError("the dict differs")
    for key, value in a.items():
        if type(b[key]) is not type(value):
            raise AssertionError(f"{key}: {type(value).__name__} came back as {type(b[key])}")


def same_frame(a: Any, b: Any) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def same_array(a: Any, b: Any) -> None:
    if type(b) is not np.ndarray or b.dtype != a.dtype or not np.array_equal(a, b):
        raise AssertionError(f"the array differs (got {type(b).__name__}, {b.dtype})")


@dataclass(frozen=True)
class Workload:
    name: str
    what: str
    build: Callable[[], Any]
    check: Callable[[Any, Any], None]
    reps: int
    quick_reps: int


WORKLOADS = (
    Workload("scalars", "dict of 10,000 mixed scalars and datetimes", scalars, same_scalars, 30, 5),
    Workload("frame", "DataFrame 1,000,000 rows x 8 columns", frame, same_frame, 7, 3),
    Workload("array", "numpy float64 array, 12.5M elements (100 MB)", array, same_array, 7, 3),
)


# -- variants -------------------------------------------------------------------


@dataclass
class Variant:
    """One way to save and load a value: ``encode`` gives (payload, stored bytes)."""

    name: str
    encode: Callable[[Any], tuple[Any, int]]
    decode: Callable[[Any], Any]
    enc_s: list[float] = field(default_factory=list)
    dec_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    nbytes: int | None = None
    status: str = "ok"
    """ok, or why there are no numbers (an error, or skipped as too slow)."""
    check: str = "-"

    def sample(self, value: Any) -> tuple[Any, float, float, int]:
        """(decoded value, encode seconds, decode seconds, stored bytes)."""
        gc.collect()
        t0 = time.perf_counter_ns()
        payload, nbytes = self.encode(value)
        t1 = time.perf_counter_ns()
        back = self.decode(payload)
        t2 = time.perf_counter_ns()
        del payload
        return back, (t1 - t0) / 1e9, (t2 - t1) / 1e9, nbytes


def typed_variant() -> Variant:
    ser = TypedSerializer()

    def encode(value: Any) -> tuple[Any, int]:
        data = ser.dumps(value)
        return data, len(data)

    return Variant(TYPED, encode, ser.loads)


def stored_variant() -> Variant:
    ser = TypedSerializer()
    env = Envelope()

    def encode(value: Any) -> tuple[Any, int]:
        sealed = env.seal(ser.tag, ser.dumps(value))
        if sealed.blob is not None:
            _, recipe, stored = sealed.blob
            return ("blob", recipe, stored), len(stored)
        return ("row", sealed.tag, sealed.data), len(sealed.data)

    def decode(payload: Any) -> Any:
        where, how, stored = payload
        if where == "blob":
            return ser.loads(env.open_blob(ser.tag, how, stored))
        _, data = env.open(how, stored)
        return ser.loads(data)

    return Variant(STORED, encode, decode)


def pickle_variant() -> Variant:
    def encode(value: Any) -> tuple[Any, int]:
        data = pickle.dumps(value, protocol=5)
        return data, len(data)

    return Variant(PICKLE, encode, pickle.loads)


def jsonplus_variant() -> Variant:
    try:
        mod: Any = importlib.import_module("langgraph.checkpoint.serde.jsonplus")
    except ImportError as exc:
        v = Variant(JSONPLUS, pickle_variant().encode, pickle.loads)
        v.status = f"not installed ({exc})"
        return v
    ser = mod.JsonPlusSerializer()

    def encode(value: Any) -> tuple[Any, int]:
        typed = ser.dumps_typed(value)
        return typed, len(typed[1])

    return Variant(JSONPLUS, encode, ser.loads_typed)


# -- running --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def first_round(variant: Variant, workload: Workload, value: Any) -> None:
    """The untimed round: one round trip, checked; marks a failing or too slow variant."""
    try:
        back, enc, dec, nbytes = variant.sample(value)
    except Exception as exc:
        variant.status = f"error: {type(exc).__name__}: {str(exc)[:160]}"
        return
    try:
        workload.check(value, back)
        variant.check = "ok"
    except AssertionError as exc:
        variant.check = f"MISMATCH: {str(exc).splitlines()[0][:160]}"
    variant.nbytes = nbytes
    if max(enc, dec) > SLOW_LIMIT_S:
        variant.status = (
            f"skipped: one call took {max(enc, dec):.1f} s (> {SLOW_LIMIT_S:.0f} s); "
            f"encode {enc:.1f} s, decode {dec:.1f} s"
        )


def run_workload(workload: Workload, reps: int) -> tuple[list[Variant], float]:
    t_build = time.perf_counter()
    value = workload.build()
    print(f"  built {workload.name} in {time.perf_counter() - t_build:.1f} s", file=sys.stderr)
    variants = [typed_variant(), stored_variant(), pickle_variant(), jsonplus_variant()]
    for v in variants:
        if v.status == "ok":
            first_round(v, workload, value)
    live = [v for v in variants if v.status == "ok"]
    started = time.perf_counter()
    for r in range(reps):
        start = r % len(live)
        for v in live[start:] + live[:start]:
            back, enc, dec, _ = v.sample(value)
            del back
            v.enc_s.append(enc)
            v.dec_s.append(dec)
            v.total_s.append(enc + dec)
    return variants, time.perf_counter() - started


# -- reporting ------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds >= 0.01 else f"{seconds * 1e3:.2f}"


def human(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def summarize(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    base = next((v for v in variants if v.name == PICKLE and v.total_s), None)
    out: dict[str, dict[str, Any]] = {}
    for v in variants:
        row: dict[str, Any] = {"status": v.status, "check": v.check, "bytes": v.nbytes}
        if v.total_s:
            row.update(
                rounds=len(v.total_s),
                p50_ms=percentile(v.total_s, 50) * 1e3,
                p95_ms=percentile(v.total_s, 95) * 1e3,
                encode_p50_ms=percentile(v.enc_s, 50) * 1e3,
                encode_p95_ms=percentile(v.enc_s, 95) * 1e3,
                decode_p50_ms=percentile(v.dec_s, 50) * 1e3,
                decode_p95_ms=percentile(v.dec_s, 95) * 1e3,
                samples_ms=[s * 1e3 for s in v.total_s],
            )
            if base is not None:
                row["p50_vs_pickle"] = row["p50_ms"] / (percentile(base.total_s, 50) * 1e3)
                if base.nbytes and v.nbytes is not None:
                    row["bytes_vs_pickle"] = v.nbytes / base.nbytes
        out[v.name] = row
    return out


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    head = (
        "| variant | p50 enc+dec ms | p95 enc+dec ms | p50 encode ms | p50 decode ms "
        "| stored bytes | p50 / pickle | bytes / pickle | round trip |"
    )
    lines = [head, "|" + "---|" * 9]
    for name, row in rows.items():
        if "p50_ms" not in row:
            lines.append(f"| {name} | {row['status']} |  |  |  |  |  |  |  |")
            continue
        ratio = f"{row['p50_vs_pickle']:.2f}x" if "p50_vs_pickle" in row else "-"
        bratio = f"{row['bytes_vs_pickle']:.3f}x" if "bytes_vs_pickle" in row else "-"
        lines.append(
            f"| {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['encode_p50_ms']:.1f} "
            f"| {row['decode_p50_ms']:.1f} | {row['bytes']:,} ({human(row['bytes'])}) "
            f"| {ratio} | {bratio} | {row['check']} |"
        )
    return lines


@dataclass(frozen=True)
class Target:
    workload: str
    text: str
    passed: bool | None
    """None: informational, not a target."""


def targets(name: str, rows: dict[str, dict[str, Any]]) -> list[Target]:
    out: list[Target] = []
    base = rows.get(PICKLE, {})
    if name in ("frame", "array"):
        for variant, checked in ((TYPED, True), (STORED, False)):
            row = rows.get(variant, {})
            if "p50_ms" not in row or "p50_ms" not in base:
                out.append(
                    Target(
                        name,
                        f"{variant}: no timings ({row.get('status')})",
                        False if checked else None,
                    )
                )
                continue
            speed = row["p50_ms"] <= 1.5 * base["p50_ms"]
            size = row["bytes"] <= base["bytes"]
            out.append(
                Target(
                    name,
                    f"{variant} p50 enc+dec {row['p50_ms']:.1f} ms <= 1.5x pickle "
                    f"({1.5 * base['p50_ms']:.1f} ms): {row['p50_vs_pickle']:.2f}x",
                    speed if checked else None,
                )
            )
            out.append(
                Target(
                    name,
                    f"{variant} bytes {row['bytes']:,} <= pickle {base['bytes']:,}: "
                    f"{row['bytes_vs_pickle']:.3f}x",
                    size if checked else None,
                )
            )
            if row["check"] != "ok":
                out.append(
                    Target(
                        name, f"{variant} round trip: {row['check']}", False if checked else None
                    )
                )
    else:
        row, peer = rows.get(TYPED, {}), rows.get(JSONPLUS, {})
        if "p50_ms" not in row or "p50_ms" not in peer:
            why = peer.get("status") if "p50_ms" not in peer else row.get("status")
            out.append(Target(name, f"{TYPED} vs {JSONPLUS}: no timings ({why})", False))
        else:
            out.append(
                Target(
                    name,
                    f"{TYPED} p50 enc+dec {row['p50_ms']:.2f} ms < {JSONPLUS} "
                    f"{peer['p50_ms']:.2f} ms: {row['p50_ms'] / peer['p50_ms']:.2f}x",
                    row["p50_ms"] < peer["p50_ms"],
                )
            )
        if row.get("check") != "ok":
            out.append(Target(name, f"{TYPED} round trip: {row.get('check')}", False))
    return out


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "msgspec": version("msgspec"),
        "zstandard": version("zstandard"),
        "langgraph-checkpoint": version("langgraph-checkpoint"),
        "ormsgpack": version("ormsgpack"),
        "loadavg_start": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5/3/3 repetitions, not 30/7/7")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write all numbers here")
    args = parser.parse_args(argv)

    info = machine()
    print(
        f"# bench_codecs: python {info['python']}, numpy {info['numpy']}, pandas "
        f"{info['pandas']}, msgspec {info['msgspec']}, zstandard {info['zstandard']}, "
        f"langgraph-checkpoint {info['langgraph-checkpoint']}, ormsgpack {info['ormsgpack']}; "
        f"nproc {info['nproc']} ({info['cpu']}); load average "
        + " ".join(f"{x:.2f}" for x in info["loadavg_start"])
        + (" [quick]" if args.quick else "")
    )
    report: dict[str, Any] = {"machine": info, "quick": args.quick, "workloads": {}}
    checks: list[Target] = []
    for workload in WORKLOADS:
        reps = workload.quick_reps if args.quick else workload.reps
        variants, seconds = run_workload(workload, reps)
        rows = summarize(variants)
        load = list(os.getloadavg())
        print(
            f"\n## {workload.name}: {workload.what}; {reps} repetitions, interleaved "
            f"({seconds:.0f} s; load average after {' '.join(f'{x:.2f}' for x in load)})\n"
        )
        print("\n".join(table(rows)))
        for name, row in rows.items():
            if row["status"] != "ok":
                print(f"\n- {name}: {row['status']}")
        report["workloads"][workload.name] = {
            "what": workload.what,
            "reps": reps,
            "seconds": seconds,
            "loadavg_after": load,
            "variants": rows,
        }
        checks.extend(targets(workload.name, rows))
        del variants
        gc.collect()

    print("\n## targets\n")
    failed = 0
    for t in checks:
        mark = "INFO" if t.passed is None else ("PASS" if t.passed else "FAIL")
        failed += t.passed is False
        print(f"{mark} [{t.workload}] {t.text}")
    info["loadavg_end"] = list(os.getloadavg())
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in info['loadavg_end'])}")
    report["targets"] = [
        {"workload": t.workload, "text": t.text, "passed": t.passed} for t in checks
    ]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
