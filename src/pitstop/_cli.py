"""The ``pitstop`` command: inspect and manage the checkpoints in a store.

Usage: ``pitstop [--store PATH_OR_URL] [--json] COMMAND ...`` with the commands
runs, list, show, diff, prune, delete, export and stats. ``--store`` and
``--json`` may also follow the command. The store is a SQLite file or a database
URL; default ``$PITSTOP_STORE``, else ``pitstop.db``. A SQLite file that does not
exist is an error (inspecting never creates one).

Every checkpoint that ``show``, ``diff`` and ``export`` print is loaded through
the same verification as ``CheckpointManager.restore_checkpoint`` (checksums and
schema version). Only JSON payloads are decoded unless ``--allow-pickle`` is
given, because unpickling can run code.

Exit status:
    0  success
    1  the run (or seq) does not exist (CheckpointNotFound)
    2  any other pitstop error (corrupt checkpoint, newer schema, undecodable
       payload, store failure), a bad store URL or output file, or bad usage
    130 interrupted (Ctrl-C)

Errors print ``pitstop: error: <message>`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import _cli_format as fmt
from ._codec import decode_checkpoint
from ._errors import CheckpointNotFound, CorruptCheckpoint, PitstopError, SerializationError
from ._manager import DEFAULT_STORE
from ._serde import JsonSerializer, PickleSerializer, Serializer
from ._types import Checkpoint
from .storage.base import Store

ENV_STORE = "PITSTOP_STORE"

Handler = Callable[[Store, argparse.Namespace], Awaitable[Any]]


class CliError(Exception):
    """A problem with the command's input (bad store target, unwritable file): exit 2."""


async def _verified(store: Store, args: argparse.Namespace, seq: int | None) -> Checkpoint:
    serializers: dict[str, Serializer] = {"json": JsonSerializer()}
    if args.allow_pickle:
        serializers["pickle"] = PickleSerializer()
    record, rows = await store.load(args.run, seq)
    return decode_checkpoint(record, rows, serializers)


async def _runs(store: Store, args: argparse.Namespace) -> Any:
    return [fmt.run_data(r) for r in await store.list_runs()]


async def _list(store: Store, args: argparse.Namespace) -> Any:
    infos = await store.list_checkpoints(args.run)
    if not infos:
        raise CheckpointNotFound(args.run)
    return [{**fmt.info_data(i), "metadata": dict(i.metadata)} for i in infos]


async def _show(store: Store, args: argparse.Namespace) -> Any:
    return fmt.show_data(await _verified(store, args, args.seq), outputs=args.outputs)


async def _diff(store: Store, args: argparse.Namespace) -> Any:
    a = await _verified(store, args, args.a)
    b = await _verified(store, args, args.b)
    return fmt.diff_data(a, b)


async def _prune(store: Store, args: argparse.Namespace) -> Any:
    if await store.latest_seq(args.run) is None:
        raise CheckpointNotFound(args.run)
    removed = await store.prune(args.run, args.keep)
    kept = [i.seq for i in await store.list_checkpoints(args.run)]
    return {"run_id": args.run, "removed": removed, "kept": kept}


async def _delete(store: Store, args: argparse.Namespace) -> Any:
    if args.seq is None:
        seqs = [i.seq for i in await store.list_checkpoints(args.run)]
    else:
        seqs = [args.seq]
    count = await store.delete(args.run, args.seq)  # raises CheckpointNotFound
    if count != len(seqs):  # a writer changed the run between listing and deleting
        seqs = seqs[:count]
    return {"run_id": args.run, "removed": seqs}


async def _export(store: Store, args: argparse.Namespace) -> Any:
    doc = fmt.export_data(await _verified(store, args, args.seq))
    if args.output is None:
        return doc
    text = fmt.dumps(doc) + "\n"
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    info = doc["info"]
    return {"run_id": info["run_id"], "seq": info["seq"], "path": args.output, "bytes": len(text)}


async def _stats(store: Store, args: argparse.Namespace) -> Any:
    runs = await store.list_runs()
    node_rows = 0
    for r in runs:
        node_rows += sum(i.nodes_written for i in await store.list_checkpoints(r.run_id))
    largest = max(runs, key=lambda r: r.size, default=None)
    return {
        "runs": len(runs),
        "checkpoints": sum(r.checkpoints for r in runs),
        "bytes": sum(r.size for r in runs),
        "node_rows_written": node_rows,
        "latest_at": fmt.iso(max((r.latest_at for r in runs), default=None)),
        "largest_run": None if largest is None else largest.run_id,
    }


def _export_text(data: Any) -> str:
    if "path" in data:
        return f"exported run {data['run_id']!r} seq {data['seq']} to {data['path']}"
    return fmt.dumps(data)


_COMMANDS: dict[str, tuple[Handler, Callable[[Any], str], str]] = {
    "runs": (_runs, fmt.runs_text, "list the runs in the store"),
    "list": (_list, fmt.list_text, "list the checkpoints of a run"),
    "show": (_show, fmt.show_text, "restore, verify and summarize one checkpoint"),
    "diff": (_diff, fmt.diff_text, "node-level differences between two checkpoints"),
    "prune": (_prune, fmt.removed_text, "keep only the newest N checkpoints of a run"),
    "delete": (_delete, fmt.removed_text, "delete a run, or one checkpoint (no prompt)"),
    "export": (_export, _export_text, "write a verified checkpoint as JSON"),
    "stats": (_stats, fmt.stats_text, "totals over the whole store"),
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS,
        help=f"SQLite file or database URL (default: ${ENV_STORE}, else {DEFAULT_STORE})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable JSON output",
    )
    parser = argparse.ArgumentParser(
        prog="pitstop", parents=[common], description="Inspect and manage pitstop checkpoints."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cmds = {
        name: sub.add_parser(name, parents=[common], help=h, description=h)
        for name, (_, _, h) in _COMMANDS.items()
    }
    for name in ("list", "show", "diff", "prune", "delete", "export"):
        cmds[name].add_argument("run", metavar="RUN", help="run id")
    for name in ("show", "delete", "export"):
        cmds[name].add_argument("--seq", type=_positive, help="checkpoint seq (default: latest)")
    cmds["delete"].description = "Delete every checkpoint of RUN, or only --seq N; no prompt."
    cmds["diff"].add_argument("a", metavar="A", type=_positive, help="seq to compare from")
    cmds["diff"].add_argument("b", metavar="B", type=_positive, help="seq to compare to")
    cmds["prune"].add_argument(
        "--keep",
        metavar="N",
        type=_positive,
        required=True,
        help="how many of the newest checkpoints to keep",
    )
    cmds["show"].add_argument("--outputs", action="store_true", help="also print outputs, state")
    cmds["export"].add_argument("-o", "--output", metavar="FILE", help="write to FILE")
    for name in ("show", "diff", "export"):
        cmds[name].add_argument(
            "--allow-pickle",
            action="store_true",
            help="decode pickle payloads (unpickling can run code)",
        )
    return parser


def _open(target: str) -> Store:
    from .storage.sql import open_store

    if "://" not in target and target != ":memory:" and not Path(target).is_file():
        raise CliError(f"no pitstop store at {target!r} (use --store or ${ENV_STORE})")
    try:
        return open_store(target)
    except ValueError as exc:
        raise CliError(f"bad store {target!r}: {exc}") from exc


async def _dispatch(args: argparse.Namespace, handler: Handler) -> Any:
    target = args.store or os.environ.get(ENV_STORE) or DEFAULT_STORE
    async with _open(target) as store:
        return await handler(store, args)


def _hint(exc: PitstopError) -> str | None:
    if isinstance(exc, SerializationError) and exc.tag == "pickle":
        return "pass --allow-pickle to decode pickle payloads (only for stores you trust)"
    if isinstance(exc, CorruptCheckpoint):
        return f"older checkpoints may still load: see `pitstop list {exc.run_id}`, then --seq"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    # Not set_defaults: the parent's actions are shared, so that would reset them.
    args.store, args.json = getattr(args, "store", None), getattr(args, "json", False)
    handler, render, _ = _COMMANDS[args.command]
    try:
        data = asyncio.run(_dispatch(args, handler))
    except (PitstopError, CliError) as exc:
        print(f"pitstop: error: {exc}", file=sys.stderr)
        hint = _hint(exc) if isinstance(exc, PitstopError) else None
        if hint:
            print(f"pitstop: hint: {hint}", file=sys.stderr)
        return 1 if isinstance(exc, CheckpointNotFound) else 2
    except KeyboardInterrupt:
        return 130
    print(fmt.dumps(data) if args.json else render(data))
    return 0
