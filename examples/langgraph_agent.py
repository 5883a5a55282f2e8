"""A LangGraph support agent whose first process dies mid-run; a second one resumes it.

The graph is a real ``StateGraph`` of five nodes (no network, no LLM: every node is
deterministic so runs can be compared byte for byte):

    intake -> retrieve -> draft -> review -> reply

Its checkpointer is ``PitstopSaver`` on a SQLite file, one line
(``checkpointer=PitstopSaver(db)``); the thread id names the conversation.

    python examples/langgraph_agent.py --story           # crash in node 3, resume, compare
    python examples/langgraph_agent.py --crash-at draft  # dies (os._exit(3)) inside 'draft'
    python examples/langgraph_agent.py                   # resumes the thread if it can

The story runs the crashing process, shows what it left (``pitstop list``: the thread
is a pitstop run, one checkpoint per finished node), runs the same command again, which
resumes from the thread's latest checkpoint and skips the finished nodes, and compares
its result with a clean run in this process (no checkpointer): PASS and exit status 0,
or FAIL and 1.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

from _story import DIGEST_PREFIX, child, digest_in, fresh, pitstop_cli, say, story_parser, verdict
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from pitstop.adapters.langgraph import PitstopSaver, run_id_of

DEFAULT_DB = "pitstop-langgraph-demo.db"
THREAD = "ticket-4711"
CRASH_EXIT = 3
NODES = ("intake", "retrieve", "draft", "review", "reply")
TICKET = (
    "Hi, our nightly export job crashed at 3am for the third time this week. It restarts "
    "from scratch every time and takes four hours. Can it resume from where it stopped? "
    "We run it on PostgreSQL with two workers. -- Dana, Acme Corp (plan: business)"
)
KNOWLEDGE = {
    "kb-12 resume after a crash": "checkpoint resume crash restart stopped nightly job",
    "kb-31 several workers on PostgreSQL": "postgresql workers shared database lock",
    "kb-07 export performance": "export slow hours performance batch size",
    "kb-44 billing and plans": "plan invoice billing business enterprise",
    "kb-19 password reset": "password reset login account",
}


class Ticket(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    ticket: str
    customer: str
    plan: str
    keywords: list[str]
    sources: list[str]
    draft: str
    review: dict[str, Any]
    reply: str


CRASH_AT: str | None = None


def crash_here(node: str) -> None:
    if node == CRASH_AT:
        say(f"{node}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
        os._exit(CRASH_EXIT)


# --- the nodes (deterministic stand-ins for an LLM agent's steps) ------------------------


def intake(state: Ticket) -> Ticket:
    say("intake: executing")
    crash_here("intake")
    text = state["ticket"]
    words = sorted({w.strip(".,?()-:").lower() for w in text.split()} - {""})
    customer = text.rsplit("--", 1)[-1].split(",")[0].strip()
    plan = text.rsplit("plan:", 1)[-1].strip(" )") if "plan:" in text else "free"
    return {
        "customer": customer,
        "plan": plan,
        "keywords": [w for w in words if len(w) > 3],
        "messages": [HumanMessage(text, id="msg-ticket")],
    }


def retrieve(state: Ticket) -> Ticket:
    say("retrieve: executing")
    crash_here("retrieve")
    wanted = set(state["keywords"])
    scored = sorted(((len(wanted & set(body.split())), title)
                     for title, body in KNOWLEDGE.items()), reverse=True)  # fmt: skip
    sources = [title for score, title in scored if score > 0][:2]
    note = ToolMessage(json.dumps(sources), tool_call_id="search-1", id="msg-search")
    return {"sources": sources, "messages": [note]}


def draft(state: Ticket) -> Ticket:
    say("draft: executing")
    crash_here("draft")  # node 3 of 5
    lines = [f"Hello {state['customer'].split()[0]},", "",
             "thanks for the details. Here is what should help:"]  # fmt: skip
    lines += [
        f"- {title.split(' ', 1)[1]} ({title.split(' ', 1)[0]})" for title in state["sources"]
    ]
    lines += ["", "Your job can save a checkpoint after each step and, after a crash, "
              "restart from the last one instead of from scratch."]  # fmt: skip
    text = "\n".join(lines)
    return {"draft": text, "messages": [AIMessage(text, id="msg-draft")]}


def review(state: Ticket) -> Ticket:
    say("review: executing")
    crash_here("review")
    text = state["draft"]
    checks = {
        "greets the customer": text.startswith("Hello "),
        "cites a source": "(kb-" in text,
        "no promises of dates": not any(w in text.lower() for w in ("tomorrow", "guarantee")),
        "short enough": len(text) < 800,
    }
    return {"review": {"passed": all(checks.values()), "checks": checks}}


def reply(state: Ticket) -> Ticket:
    say("reply: executing")
    crash_here("reply")
    signature = "Support (priority queue)" if state["plan"] == "business" else "Support"
    text = f"{state['draft']}\n\n-- {signature}"
    return {"reply": text, "messages": [AIMessage(text, id="msg-reply")]}


def build() -> StateGraph[Ticket]:
    graph = StateGraph(Ticket)
    for name, fn in zip(NODES, (intake, retrieve, draft, review, reply), strict=True):
        graph.add_node(name, fn)
    graph.add_edge(START, NODES[0])
    for a, b in itertools.pairwise(NODES):
        graph.add_edge(a, b)
    graph.add_edge(NODES[-1], END)
    return graph


def digest(state: Ticket) -> str:
    """sha256 of the final state (messages by type, id and content)."""
    doc = {k: v for k, v in state.items() if k != "messages"}
    doc["messages"] = [[m.type, m.id, m.content] for m in state.get("messages", [])]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# --- running: the pitstop line is marked -------------------------------------------------


def run(graph: CompiledStateGraph[Ticket, Any, Ticket, Ticket], config: RunnableConfig) -> Ticket:
    """Start the thread, or resume it from its latest checkpoint if it has one."""
    state = graph.get_state(config)
    if state.next:  # a checkpoint with work left: resume it (input None)
        say(f"resuming thread {THREAD!r} at {list(state.next)} "
            f"(checkpoint {state.config['configurable']['checkpoint_id']})")  # fmt: skip
        result = cast(Ticket, graph.invoke(None, config, durability="sync"))
    else:
        result = cast(Ticket, graph.invoke({"ticket": TICKET}, config, durability="sync"))
    return result


def run_with_pitstop(db: Path) -> Ticket:
    config: RunnableConfig = {"configurable": {"thread_id": THREAD}}
    with PitstopSaver(db) as saver:  # pitstop: the whole integration
        return run(build().compile(checkpointer=saver), config)


def run_clean() -> Ticket:
    return cast(Ticket, build().compile().invoke({"ticket": TICKET}))


# --- the story -----------------------------------------------------------------------


def story(db: Path) -> int:
    fresh(db)
    say(f"== 1/4 a run that dies inside 'draft' (node 3 of {len(NODES)})")
    crashed = child(__file__, db, "--crash-at", "draft")
    say("== 2/4 what the crash left: the thread is a pitstop run")
    listed = pitstop_cli(db, "list", run_id_of(THREAD, ""))
    say("== 3/4 the same command without --crash-at: resumes the thread")
    resumed = child(__file__, db)
    say("== 4/4 a clean run in this process, no checkpointer")
    want = digest(run_clean())
    say(f"  {DIGEST_PREFIX}{want}")
    got = digest_in(resumed.stdout)
    out = resumed.stdout
    seqs = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
    checks = {
        f"crashing run died in draft (exit code {crashed.returncode})": crashed.returncode
        == CRASH_EXIT
        and "draft: CRASH" in crashed.stdout,
        "pitstop list shows 4 checkpoints (input, start, after intake, after retrieve)": (
            listed.returncode == 0 and seqs == ["1", "2", "3", "4"]
        ),
        "resume started at draft": "resuming thread 'ticket-4711' at ['draft']" in out,
        "resume did not run intake or retrieve": "intake: executing" not in out
        and "retrieve: executing" not in out,
        "resume ran draft, review, reply": all(f"{n}: executing" in out for n in NODES[2:]),
        f"resumed digest == clean digest ({got})": got == want,
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    global CRASH_AT
    parser = story_parser(__doc__, DEFAULT_DB, NODES, crash_help="kill the process in this node")
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db)
    CRASH_AT = args.crash_at
    state = run_with_pitstop(args.db)
    say(f"reply: {state['reply'].splitlines()[0]} ... ({len(state['messages'])} messages)")
    say(f"{DIGEST_PREFIX}{digest(state)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
