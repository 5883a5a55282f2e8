"""How fast could a SQLite restore at K=10,000 be? Floors beside the real restore.

Not a target check: evidence for docs/performance.md ("SQLite restore at
K=10,000 against SqliteSaver.get_tuple"). Run by hand, with the bench extra:

    .venv/bin/pip install -e ".[bench,dev]"
    .venv/bin/python benchmarks/restore_floor.py [K] [rounds]

The workload is the suite's ``peer_restore`` (bench_peers.py): K nodes with
~200-byte outputs, one full save, then 19 one-node saves; LangGraph's
``SqliteSaver`` the same. Interleaved round by round in one process, p50 and p95:

- ``pitstop``: ``restore_checkpoint()`` by a new manager, then ``.completed``
  (as the suite times it).
- ``row floor``: only the work any restore of pitstop's node rows must do,
  on the first save's snapshot: one ``SELECT`` of the latest seq, the snapshot
  blob read with ``blobopen``, its xxh3-128 digest, the blob decoded into
  ``NodeRow``s, the rows by node id, the outputs decoded (``loads_many``) and the
  dict of outputs by node id. No header, no chain, no check of a status or tag,
  no core state, no ``Checkpoint``.
- ``columnar floor``: the same rows stored as one msgpack array of columns,
  decoded with typed columns (no object per row): node ids, statuses, ...,
  outputs; the outputs decoded one by one (``loads_many``) into the dict by
  node id. The floor of a restore that keeps no object per node.
- ``columnar, outputs joined``: as above, with the outputs embedded in one
  msgpack array (each as its own msgpack, not as bytes) and decoded in one call.
- ``get_tuple``: ``SqliteSaver.get_tuple`` on the latest checkpoint, then
  ``channel_values``.

Each floor's result is held until its clock stopped, as in the suite.
"""

from __future__ import annotations

import gc
import operator
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import msgspec
import xxhash
from bench_peers import HISTORY, LangGraphSync, PitstopSync, _output
from langgraph.checkpoint.sqlite import SqliteSaver  # type: ignore[import-not-found,unused-ignore]

from pitstop import SqlStore
from pitstop._records import NodeRow
from pitstop.codecs import TypedSerializer

Status = Literal["pending", "running", "completed", "failed"]
Columns = tuple[list[str], list[Status], list[int], list[str | None], list[float | None],
                list[float | None], list[tuple[str, ...]], list[str], list[bytes | None],
                list[str | None]]  # fmt: skip
COLUMNS = ("node_id", "status", "attempt", "error", "started_at", "finished_at", "deps",
           "serializer", "output", "fingerprint")  # fmt: skip
Joined = tuple[list[str], list[Status], list[int], list[str | None], list[float | None],
               list[float | None], list[tuple[str, ...]], list[str], msgspec.Raw,
               list[str | None]]  # fmt: skip
_ROWS = msgspec.msgpack.Decoder(list[NodeRow])
_COLUMNS = msgspec.msgpack.Decoder(Columns)
_JOINED = msgspec.msgpack.Decoder(Joined)
_ID, _OUT = operator.attrgetter("node_id"), operator.attrgetter("output")


class Floors:
    """The floors: the row floor reads the first save's snapshot blob, the columnar ones
    its rows re-encoded (untimed) into a table of their own in the same file."""

    def __init__(self, path: Path, k: int) -> None:
        self.k = k
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.ser = TypedSerializer()
        (self.rowid,) = self.conn.execute("SELECT rowid FROM pitstop_snapshots").fetchone()
        rows = _ROWS.decode(self._blob("pitstop_snapshots", "nodes", self.rowid))
        cols = [list(map(operator.attrgetter(name), rows)) for name in COLUMNS]
        joined = [*cols[:8], [msgspec.Raw(out) for out in cols[8]], cols[9]]
        self.conn.execute("CREATE TABLE floor (id INTEGER PRIMARY KEY, data BLOB)")
        blobs = (msgspec.msgpack.encode(cols), msgspec.msgpack.encode(joined))
        self.conn.execute("INSERT INTO floor VALUES (1, ?), (2, ?)", blobs)

    def _blob(self, table: str, column: str, rowid: int) -> bytes:
        with self.conn.blobopen(table, column, rowid, readonly=True) as blob:
            return blob.read()

    def _timed(self, body: Callable[[], dict[str, Any]]) -> int:
        gc.disable()  # pitstop's restore pauses the collector the same way
        try:
            t0 = time.perf_counter_ns()
            self.conn.execute("SELECT seq FROM pitstop_checkpoints WHERE run_id = 'r' "
                              "ORDER BY seq DESC LIMIT 1").fetchall()  # fmt: skip
            done = body()
            ns = time.perf_counter_ns() - t0
        finally:
            gc.enable()
        assert len(done) == self.k
        return ns

    def rows(self) -> int:
        def body() -> dict[str, Any]:
            blob = self._blob("pitstop_snapshots", "nodes", self.rowid)
            xxhash.xxh3_128_hexdigest(blob)
            snap = _ROWS.decode(blob)
            view = dict(zip(map(_ID, snap), snap, strict=True))
            values = self.ser.loads_many(list(map(_OUT, snap)))
            return dict(zip(view, values, strict=True))

        return self._timed(body)

    def columns(self) -> int:
        def body() -> dict[str, Any]:
            blob = self._blob("floor", "data", 1)
            xxhash.xxh3_128_hexdigest(blob)
            cols = _COLUMNS.decode(blob)
            return dict(zip(cols[0], self.ser.loads_many(cols[8]), strict=True))

        return self._timed(body)

    def joined(self) -> int:
        def body() -> dict[str, Any]:
            blob = self._blob("floor", "data", 2)
            xxhash.xxh3_128_hexdigest(blob)
            cols = _JOINED.decode(blob)
            # loads reads any buffer: the Raw column, not a copy of it
            return dict(zip(cols[0], self.ser.loads(cast(bytes, memoryview(cols[8]))), strict=True))

        return self._timed(body)


def _p(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main(k: int, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pitstop-floor-"))
    with SqlStore.sqlite(tmp / "pitstop.db") as store, \
            SqliteSaver.from_conn_string(str(tmp / "langgraph.db")) as saver:  # fmt: skip
        pitstop, langgraph = PitstopSync(store, "r"), LangGraphSync(saver, "t")
        for subject in (pitstop, langgraph):
            subject.first(k)
            for j in range(HISTORY - 1):
                subject.save(j % k, _output(j % k, j + 1))
        floors = Floors(tmp / "pitstop.db", k)
        variants: dict[str, Callable[[], int]] = {
            "pitstop": lambda: pitstop.restore(k),
            "row floor": floors.rows,
            "columnar floor": floors.columns,
            "columnar, outputs joined": floors.joined,
            "get_tuple": lambda: langgraph.restore(k),
        }
        times: dict[str, list[int]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                times[name].append(run())
    peer = _p(times["get_tuple"], 0.5)
    print(f"K={k:,}, {rounds} interleaved rounds, p50 / p95 ms, p50 ratio to get_tuple")
    for name, samples in times.items():
        p50 = _p(samples, 0.5)
        print(f"{name:26s} {p50:8.3f} {_p(samples, 0.95):8.3f}   {p50 / peer:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 40)  # fmt: skip
