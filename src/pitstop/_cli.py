"""The ``pitstop`` command: inspect and manage the checkpoints in a store.

Usage: ``pitstop [--store PATH_OR_URL] [--json] COMMAND ...`` with the commands
runs, list, show, diff, prune, delete, export and stats. ``--store`` and
``--json`` may also follow the command. The store is a SQLite file or a database
URL; default ``$PITSTOP_STORE``, else ``pitstop.db``. A SQLite file that does not
exist is an error (inspecting never creates one).

Plain functions, no event loop. Read commands open the store read-only
(``SqlStore(target, readonly=True)``): they never create a file or a table,
never change the journal mode, and read beside a live writer. ``show``,
``diff`` and ``export`` load checkpoints with
``SyncCheckpointManager.load_checkpoint``, which verifies checksums and the
format version without adopting anything. Statuses need no decoding; only
``show --outputs``, ``diff --outputs`` and ``export`` decode values, and pickle
payloads only with ``--allow-pickle`` (unpickling can run code). ``prune`` and
``delete`` check the run read-only first, then write through the manager.

Exit status:
    0  success
    1  the run (or seq) does not exist (CheckpointNotFound)
    2  any other pitstop error (corrupt checkpoint, newer schema, undecodable
       payload, store failure, no pitstop tables), a bad store target or
       output file, or bad usage
    130 interrupted (Ctrl-C); 141 stdout closed early (``| head``)

Errors print ``pitstop: error: <one line>`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _cli_format as fmt
from ._errors import (
    CheckpointNotFound,
    CorruptCheckpoint,
    EncryptionKeyError,
    PitstopError,
    SerializationError,
)
from ._ops import DEFAULT_STORE
from ._serde import PickleSerializer
from ._sync import SyncCheckpointManager
from ._types import Checkpoint, CheckpointInfo, check_id
from .codecs import AesGcmKeys, Envelope, TypeCodec, TypedSerializer, load_codec
from .storage import _programs as P
from .storage._programs import Call
from .storage._urls import parse_target
from .storage.sql import SqlStore, Store

ENV_STORE = "PITSTOP_STORE"
PG_CONNECT_TIMEOUT = 10
"""Seconds to wait for a PostgreSQL server (unless the URL sets connect_timeout)."""

Handler = Callable[[Store, argparse.Namespace], Any]


class CliError(Exception):
    """A problem with the command's input (bad store target, unwritable file): exit 2."""


# -- store access --------------------------------------------------------------


def _open(target: str, *, readonly: bool) -> SqlStore:
    """A store for ``target`` (not yet connected); a missing SQLite file is an error."""
    try:
        found = parse_target(target)
    except (ValueError, TypeError) as exc:
        raise CliError(f"bad store target: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if found.kind == "sqlite":
        if not Path(found.location).is_file():
            raise CliError(f"no pitstop store at {target!r} (use --store or ${ENV_STORE})")
    elif "connect_timeout" not in found.location:
        kwargs["connect_timeout"] = PG_CONNECT_TIMEOUT
    return SqlStore(target, readonly=readonly, **kwargs)


def _manager(store: Store, args: argparse.Namespace) -> SyncCheckpointManager:
    codecs = [c for spec in getattr(args, "codec", None) or () for c in _codec(spec)]
    ser = TypedSerializer(codecs=codecs, allow=getattr(args, "allow_module", None) or ())
    readers = [PickleSerializer()] if getattr(args, "allow_pickle", False) else []
    keys = dict(_key(spec) for spec in getattr(args, "key", None) or ())
    envelope = Envelope(encryption=AesGcmKeys(keys, next(iter(keys)))) if keys else None
    return SyncCheckpointManager(args.run, store=store, enabled=True, serializer=ser,
                                 readers=readers, envelope=envelope)  # fmt: skip


def _codec(spec: str) -> list[TypeCodec]:
    try:
        return load_codec(spec)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise CliError(f"--codec {spec}: {exc}") from exc


def _key(spec: str) -> tuple[str, bytes]:
    """``ID=FILE``: the file holds the key as raw bytes or as hex text."""
    key_id, sep, path = spec.partition("=")
    if not sep or not key_id or not path:
        raise CliError(f"--key wants ID=FILE, got {spec!r}")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"--key {key_id}: cannot read {path}: {exc.strerror or exc}") from exc
    text = raw.strip()
    if len(raw) not in (16, 24, 32):
        try:
            raw = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CliError(f"--key {key_id}: {path} holds neither a raw nor a hex key") from exc
    return key_id, raw


def _infos(store: Store, run_id: str) -> list[CheckpointInfo]:
    """The run's live checkpoint headers (CorruptCheckpoint on a damaged one)."""
    return [r.info() for r in store.execute(Call(P.list_checkpoints, (run_id,), False))]


def _load(
    store: Store, mgr: SyncCheckpointManager, seq: int | None, *, outputs: bool
) -> Checkpoint:
    """A verified checkpoint (not adopted); outputs stay ``Undecoded`` unless ``outputs``."""
    try:
        return mgr.load_checkpoint(seq, outputs=outputs)
    except (ValueError, TypeError, OverflowError) as exc:
        # The arguments were checked by the parser, so this is a stored column no
        # writer produces that slipped past verification: name the checkpoint.
        if seq is None:
            run = store.execute(Call(P.run_info, (mgr.run_id,), False))
            seq = run.latest_seq if run is not None and run.latest_seq is not None else 0
        why = f"unreadable row ({type(exc).__name__}: {exc})"
        raise CorruptCheckpoint(mgr.run_id, seq, why) from exc


# -- commands ----------------------------------------------------------------


def _runs(store: Store, args: argparse.Namespace) -> Any:
    return [fmt.run_data(r) for r in store.execute(Call(P.list_runs, (), False))]


def _list(store: Store, args: argparse.Namespace) -> Any:
    infos = _infos(store, args.run)
    if not infos:
        raise CheckpointNotFound(args.run)
    return [fmt.list_data(i) for i in infos]


def _show(store: Store, args: argparse.Namespace) -> Any:
    with _manager(store, args) as mgr:
        cp = _load(store, mgr, args.seq, outputs=args.outputs)
    return fmt.show_data(cp, outputs=args.outputs)


def _diff(store: Store, args: argparse.Namespace) -> Any:
    with _manager(store, args) as mgr:
        a = _load(store, mgr, args.a, outputs=args.outputs)
        b = _load(store, mgr, args.b, outputs=args.outputs)
    return fmt.diff_data(a, b, outputs=args.outputs)


def _export(store: Store, args: argparse.Namespace) -> Any:
    with _manager(store, args) as mgr:
        doc = fmt.export_data(_load(store, mgr, args.seq, outputs=True))
    if args.output is None:
        return doc
    text = fmt.dumps(doc) + "\n"
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    info = doc["info"]
    return {"run_id": info["run_id"], "seq": info["seq"], "path": args.output, "bytes": len(text)}


def _stats(store: Store, args: argparse.Namespace) -> Any:
    runs = store.execute(Call(P.list_runs, (), False))
    node_rows = sum(i.nodes_written for r in runs for i in _infos(store, r.run_id))
    return fmt.stats_data(runs, node_rows, store.execute(Call(P.blob_stats, (), False)))


def _seqs(store: Store, run_id: str) -> list[int]:
    """The run's live seqs, headers unchecked: a damaged checkpoint can still be deleted."""
    seqs = [r.seq for r in store.execute(Call(P.list_checkpoints, (run_id,), False))]
    if not seqs:
        raise CheckpointNotFound(run_id)
    return seqs


def _prune(store: Store, args: argparse.Namespace) -> Any:
    _seqs(store, args.run)  # checked read-only first: a foreign file gets no tables
    with _open(args.target, readonly=False) as rw, _manager(rw, args) as mgr:
        removed = mgr.prune(args.keep)
        kept = [r.seq for r in rw.execute(Call(P.list_checkpoints, (args.run,), False))]
    return {"run_id": args.run, "removed": removed, "kept": kept}


def _delete(store: Store, args: argparse.Namespace) -> Any:
    seqs = _seqs(store, args.run)  # checked read-only first, as for prune
    if args.seq is not None:
        if args.seq not in seqs:
            raise CheckpointNotFound(args.run, args.seq)
        seqs = [args.seq]
    with _open(args.target, readonly=False) as rw, _manager(rw, args) as mgr:
        count = mgr.delete(args.seq)  # CheckpointNotFound if another writer was first
    return {"run_id": args.run, "removed": seqs[:count]}


_COMMANDS: dict[str, tuple[Handler, Callable[[Any], str], str]] = {
    "runs": (_runs, fmt.runs_text, "list the runs in the store and their status"),
    "list": (_list, fmt.list_text, "list the checkpoints of a run"),
    "show": (_show, fmt.show_text, "verify and summarize one checkpoint"),
    "diff": (_diff, fmt.diff_text, "node-level differences between two checkpoints"),
    "prune": (_prune, fmt.removed_text, "keep only the newest N checkpoints of a run"),
    "delete": (_delete, fmt.removed_text, "delete a run's checkpoints, or one (no prompt)"),
    "export": (_export, fmt.export_text, "write a verified checkpoint as JSON"),
    "stats": (_stats, fmt.stats_text, "totals over the whole store"),
}


# -- arguments -----------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_id(text: str) -> str:
    try:
        return check_id("run id", text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        cmds[name].add_argument("run", metavar="RUN", type=_run_id, help="run id")
    for name in ("show", "delete", "export"):
        cmds[name].add_argument("--seq", type=_positive, help="checkpoint seq (default: latest)")
    cmds["delete"].description = (
        "Delete every checkpoint of RUN, or only --seq N; no prompt. The run's row "
        "(status, highest seq) stays, so its seqs are never reused."
    )
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
    cmds["diff"].add_argument("--outputs", action="store_true", help="also compare outputs, state")
    cmds["export"].add_argument("-o", "--output", metavar="FILE", help="write to FILE")
    for name in ("show", "diff", "export"):
        cmd = cmds[name]
        cmd.add_argument(
            "--allow-pickle",
            action="store_true",
            help="decode pickle payloads (unpickling can run code)",
        )
        cmd.add_argument("--codec", metavar="MODULE:NAME", action="append",
                         help="load a TypeCodec (or a list of them) for custom types; "
                         "codecs in the 'pitstop.codecs' entry-point group load by "
                         "themselves")  # fmt: skip
        cmd.add_argument("--allow-module", metavar="MODULE", action="append",
                         help="rebuild dataclasses, enums and models of MODULE "
                         "(imports it)")  # fmt: skip
        cmd.add_argument(
            "--key",
            metavar="ID=FILE",
            action="append",
            help="an AES key (raw or hex in FILE) to open encrypted payloads",
        )
    return parser


# -- main ----------------------------------------------------------------------


def _target(args: argparse.Namespace) -> str:
    if args.store is not None:  # an explicit --store "" is a mistake, not "the default"
        return str(args.store)
    return os.environ.get(ENV_STORE) or DEFAULT_STORE


def _dispatch(args: argparse.Namespace, handler: Handler) -> Any:
    with _open(args.target, readonly=True) as store:
        return handler(store, args)


def _hint(exc: BaseException) -> str | None:
    if isinstance(exc, SerializationError) and exc.tag == "pickle":
        return "pass --allow-pickle to decode pickle payloads (only for stores you trust)"
    if isinstance(exc, EncryptionKeyError):
        return f"pass --key {exc.key_id}=FILE with the key that encrypted it"
    if isinstance(exc, SerializationError) and "is not allowed" in exc.message:
        return "pass --allow-module MODULE to rebuild its classes (this imports MODULE)"
    if isinstance(exc, SerializationError) and "no codec named" in exc.message:
        return "pass --codec MODULE:NAME, or install the package that publishes it"
    if isinstance(exc, CorruptCheckpoint):
        run = exc.run_id
        hint = f"other checkpoints may still load (`pitstop show {run} --seq N`)"
        if exc.seq > 0:
            hint += f"; `pitstop delete {run} --seq {exc.seq}` removes this one"
        return hint
    return None


def _one_line(text: str) -> str:
    """The message on one line, any URL password masked."""
    flat = " ".join(text.split())
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", flat)


def _fail(message: str, hint: str | None = None) -> None:
    print(f"pitstop: error: {_one_line(message)}", file=sys.stderr)
    if hint:
        print(f"pitstop: hint: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    # Not set_defaults: the parent's actions are shared, so that would reset them.
    args.store, args.json = getattr(args, "store", None), getattr(args, "json", False)
    args.target = _target(args)
    handler, render, _ = _COMMANDS[args.command]
    try:
        data = _dispatch(args, handler)
        print(fmt.dumps(data) if args.json else render(data), flush=True)
    except (PitstopError, CliError) as exc:
        _fail(str(exc), _hint(exc))
        return 1 if isinstance(exc, CheckpointNotFound) else 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``pitstop export x | head``); keep the interpreter
        # from failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug, or damage nothing above recognised
        _fail(f"unexpected {type(exc).__name__}: {exc} (please report this)")
        return 2
    return 0
