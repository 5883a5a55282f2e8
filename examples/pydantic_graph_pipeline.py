"""A pydantic-graph research agent that dies in step 3 and resumes: the same report.

    Plan -> Search -> Extract -> Assess -(topics left)-> Search ... -> Draft -> Publish

Six ``BaseNode`` classes run as a pydantic-graph ``Graph``; ``Assess`` loops
back to ``Search`` until every subtopic has facts (three rounds, twelve steps).
The state is a pydantic model holding nested models and datetimes (a simulated
clock, so runs are reproducible); the search "service" is a seeded generator
passed as ``deps`` (never saved). ``run_with_checkpoints`` saves after every
step into a SQLite file; a second process resumes: the finished steps are
skipped, the state they left is restored, the rest runs.

    python examples/pydantic_graph_pipeline.py --story              # crash, resume, compare
    python examples/pydantic_graph_pipeline.py --crash-at-step 3    # dies inside step 3
    python examples/pydantic_graph_pipeline.py                      # resumes if it can

pitstop takes 5 lines here, each marked ``# pitstop``: two imports, the policy, the
manager and the call that runs the graph (where ``graph.run(...)`` was).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import logging
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _story import DIGEST_PREFIX, child, digest_in, fresh, say, verdict
from pydantic import BaseModel
from pydantic_graph import BaseNode, End, Graph, GraphBuilder, GraphRunContext

from pitstop import CheckpointManager, CheckpointPolicy  # pitstop 1/5
from pitstop.adapters.pydantic_graph import node_id, run_with_checkpoints  # pitstop 2/5

DEFAULT_DB = "pitstop-pydantic-graph-demo.db"
RUN_ID = "research-agent"
CRASH_EXIT = 3
TOPIC = "grid-scale batteries"
SUBTOPICS = (
    "chemistry", "cost", "safety", "recycling", "supply chain",
    "grid services", "degradation", "regulation", "deployment",
)  # fmt: skip
PER_ROUND = 3
"""Subtopics searched per round: nine subtopics take three rounds."""
STEPS = (
    "plan", "search (round 1)", "extract (round 1)", "assess (round 1)",
    "search (round 2)", "extract (round 2)", "assess (round 2)",
    "search (round 3)", "extract (round 3)", "assess (round 3)", "draft", "publish",
)  # fmt: skip
"""What the twelve steps print when they run, in order."""
STEP_NODES = ("Plan", "Search", "Extract", "Assess", "Search", "Extract", "Assess",
              "Search", "Extract", "Assess", "Draft", "Publish")  # fmt: skip
"""The node class of each step: the adapter's node ids are ``node_id(k, class name)``."""
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


# --- the state: pydantic models, datetimes -----------------------------------------------


class Document(BaseModel):
    url: str
    subtopic: str
    published: dt.date
    fetched_at: dt.datetime
    body: str


class Fact(BaseModel):
    subtopic: str
    text: str
    source: str
    confidence: float
    noted_at: dt.datetime


class ResearchState(BaseModel):
    topic: str
    clock: dt.datetime  # simulated time: each step advances it
    queries: list[str] = []
    documents: list[Document] = []
    facts: list[Fact] = []
    rounds: int = 0
    outline: dict[str, list[str]] = {}


class Report(BaseModel):
    topic: str
    rounds: int
    sources: int
    sections: dict[str, list[str]]
    started_at: dt.datetime
    finished_at: dt.datetime
    sha256: str = ""


# --- deps: services and the crash switch (never saved) ------------------------------------


@dataclass
class Services:
    say: Callable[[str], None] = say
    crash_at_step: int | None = None
    steps_run: int = 0
    """Steps this process ran (the crash switch counts these)."""

    def step(self, label: str, state: ResearchState, minutes: int) -> None:
        self.steps_run += 1
        self.say(f"{label}: executing")
        state.clock += dt.timedelta(minutes=minutes)

    def maybe_crash(self, label: str) -> None:
        if self.steps_run == self.crash_at_step:
            self.say(f"{label}: CRASH (simulated power cut: os._exit({CRASH_EXIT}))")
            os._exit(CRASH_EXIT)

    def search(self, query: str, subtopic: str, when: dt.datetime) -> list[Document]:
        """A seeded stand-in for a web search: the same query gives the same documents."""
        rng = random.Random(query)
        words = ["capacity", "price", "fire", "lithium", "sodium", "iron", "grid", "permit",
                 "cycle", "warranty", "cobalt", "storage", "hours", "peak", "market"]  # fmt: skip
        docs = []
        for i in range(6):
            sentences = [" ".join(rng.choices(words, k=8)) + f" {rng.randint(2, 400)}"
                         for _ in range(5)]  # fmt: skip
            docs.append(Document(
                url=f"https://example.org/{subtopic.replace(' ', '-')}/{i}",
                subtopic=subtopic,
                published=dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 700)),
                fetched_at=when + dt.timedelta(seconds=i),
                body=". ".join(sentences),
            ))  # fmt: skip
        return docs


Ctx = GraphRunContext[ResearchState, Services]


# --- the steps ------------------------------------------------------------------------------


@dataclass
class Plan(BaseNode[ResearchState, Services, Report]):
    async def run(self, ctx: Ctx) -> Search:
        ctx.deps.step("plan", ctx.state, minutes=2)
        ctx.state.queries = [f"{ctx.state.topic} {s}" for s in SUBTOPICS]
        ctx.deps.maybe_crash("plan")
        return Search(round=1, subtopics=list(SUBTOPICS[:PER_ROUND]))


@dataclass
class Search(BaseNode[ResearchState, Services, Report]):
    round: int
    subtopics: list[str] = field(default_factory=list)

    async def run(self, ctx: Ctx) -> Extract:
        label = f"search (round {self.round})"
        ctx.deps.step(label, ctx.state, minutes=7)
        ctx.state.rounds = self.round
        found = []
        for subtopic in self.subtopics:
            query = f"{ctx.state.topic} {subtopic}"
            found += ctx.deps.search(query, subtopic, ctx.state.clock)
        ctx.deps.maybe_crash(label)
        ctx.state.documents += found
        return Extract(round=self.round, urls=[d.url for d in found])


@dataclass
class Extract(BaseNode[ResearchState, Services, Report]):
    round: int
    urls: list[str] = field(default_factory=list)

    async def run(self, ctx: Ctx) -> Assess:
        label = f"extract (round {self.round})"
        ctx.deps.step(label, ctx.state, minutes=11)
        wanted = set(self.urls)
        for n, doc in enumerate(d for d in ctx.state.documents if d.url in wanted):
            for sentence in doc.body.split(". "):
                numbers = [int(w) for w in sentence.split() if w.isdigit()]
                score = len(set(sentence.split())) / 9
                if numbers and score > 0.7:
                    ctx.state.facts.append(Fact(
                        subtopic=doc.subtopic, text=sentence, source=doc.url,
                        confidence=round(score, 3), noted_at=ctx.state.clock,
                    ))  # fmt: skip
            if n == 0:  # midway: the state holds the first document's facts only
                ctx.deps.maybe_crash(label)
        return Assess(round=self.round)


@dataclass
class Assess(BaseNode[ResearchState, Services, Report]):
    round: int

    async def run(self, ctx: Ctx) -> Search | Draft:
        ctx.deps.step(f"assess (round {self.round})", ctx.state, minutes=3)
        covered = {f.subtopic for f in ctx.state.facts}
        left = [s for s in SUBTOPICS if s not in covered]
        ctx.deps.maybe_crash(f"assess (round {self.round})")
        if left:
            return Search(round=self.round + 1, subtopics=left[:PER_ROUND])
        return Draft()


@dataclass
class Draft(BaseNode[ResearchState, Services, Report]):
    async def run(self, ctx: Ctx) -> Publish:
        ctx.deps.step("draft", ctx.state, minutes=17)
        best: dict[str, list[Fact]] = {}
        for fact in ctx.state.facts:
            best.setdefault(fact.subtopic, []).append(fact)
        ctx.state.outline = {
            s: [f.text for f in sorted(best[s], key=lambda f: (-f.confidence, f.text))[:3]]
            for s in SUBTOPICS
        }
        ctx.deps.maybe_crash("draft")
        return Publish()


@dataclass
class Publish(BaseNode[ResearchState, Services, Report]):
    async def run(self, ctx: Ctx) -> End[Report]:
        ctx.deps.step("publish", ctx.state, minutes=1)
        ctx.deps.maybe_crash("publish")
        report = Report(
            topic=ctx.state.topic, rounds=ctx.state.rounds,
            sources=len({f.source for f in ctx.state.facts}), sections=ctx.state.outline,
            started_at=START, finished_at=ctx.state.clock,
        )  # fmt: skip
        report.sha256 = hashlib.sha256(report.model_dump_json().encode()).hexdigest()
        return End(report)


def build_graph() -> Graph:
    g = GraphBuilder(name="research", state_type=ResearchState, deps_type=Services,
                     input_type=Plan, output_type=Report)  # fmt: skip
    g.add(
        g.edge_from(g.start_node).to(Plan),
        *(g.node(n) for n in (Plan, Search, Extract, Assess, Draft, Publish)),
    )
    return g.build()


GRAPH = build_graph()


# --- the run: the pitstop lines are marked ------------------------------------------------


async def research(db: Path | None, services: Services) -> Report:
    """Run (or resume, with ``db``) the agent; ``db=None`` runs it with checkpoints off."""
    state = ResearchState(topic=TOPIC, clock=START)
    on = db is not None
    policy = CheckpointPolicy(every_n_nodes=1)  # pitstop 3/5: save after every step
    async with CheckpointManager(RUN_ID, store=db, enabled=on, policy=policy) as mgr:  # pitstop 4/5
        report: Report = await run_with_checkpoints(  # pitstop 5/5
            GRAPH, state=state, deps=services, inputs=Plan(), manager=mgr
        )
    return report


# --- the story: crash, resume, compare ---------------------------------------------------


def clean_digest() -> str:
    """The reference: one uninterrupted run in this process, checkpoints off."""
    return asyncio.run(research(None, Services(say=lambda message: None))).sha256


def story(db: Path, crash_at: int) -> int:
    fresh(db)
    crashed_in = STEPS[crash_at - 1]
    say(f"== 1/3 a run that dies inside step {crash_at} of {len(STEPS)} ({crashed_in})")
    crashed = child(__file__, db, "--crash-at-step", str(crash_at))
    say("== 2/3 the same command without --crash-at-step: resumes from the SQLite file")
    resumed = child(__file__, db)
    say("== 3/3 a clean run in this process, checkpoints off")
    want = clean_digest()
    say(f"  {DIGEST_PREFIX}{want}")
    got = digest_in(resumed.stdout)
    ran = [line.removesuffix(": executing") for line in resumed.stdout.splitlines()
           if line.endswith(": executing")]  # fmt: skip
    done = list(STEPS[: crash_at - 1])

    async def inspect_run() -> tuple[str, list[str]]:
        async with CheckpointManager(RUN_ID, store=db, enabled=True) as reader:
            run = await reader.run_info()
            cp = await reader.load_checkpoint(outputs=False)  # statuses: nothing decoded
        return ("missing" if run is None else run.status.value), sorted(cp.completed)

    status, completed = asyncio.run(inspect_run())
    ids = [node_id(k, name) for k, name in enumerate(STEP_NODES, start=1)]
    checks = {
        f"crashing run died (exit code {crashed.returncode})": crashed.returncode == CRASH_EXIT,
        "crashing run printed no report": digest_in(crashed.stdout) is None,
        f"resume restored {len(done)} finished steps": (
            f"({len(done)} finished steps restored from checkpoint" in resumed.stdout
        ),
        f"resume skipped {', '.join(done) or 'nothing'}": not any(s in ran for s in done),
        f"resume ran the other {len(ran)} steps, in order": ran == list(STEPS[crash_at - 1 :]),
        "resumed run exited 0": resumed.returncode == 0,
        f"resumed digest == clean digest ({got})": got == want,
        f"run marked {status}, so the next run starts fresh": status == "succeeded",
        f"its checkpoint holds the {len(ids)} steps {ids[0]} .. {ids[-1]}": completed == ids,
    }
    return verdict(checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", type=Path, default=Path(DEFAULT_DB), help="SQLite file")
    parser.add_argument("--crash-at-step", type=int, choices=range(1, len(STEPS) + 1),
                        metavar=f"1..{len(STEPS)}", help="die inside the N-th step this "
                        "process runs")  # fmt: skip
    parser.add_argument("--story", action="store_true", help="crash, resume, compare (PASS/FAIL)")
    args = parser.parse_args(argv)
    if args.story:
        return story(args.db, args.crash_at_step or 3)
    logging.basicConfig(level=logging.INFO, format="  [%(name)s] %(message)s", stream=sys.stdout)
    say(f"research agent {RUN_ID!r} on {TOPIC!r}, checkpoints in {args.db}")
    report = asyncio.run(research(args.db, Services(crash_at_step=args.crash_at_step)))
    facts = sum(map(len, report.sections.values()))
    say(f"report: {report.rounds} rounds, {report.sources} sources, {facts} facts, "
        f"finished {report.finished_at}")  # fmt: skip
    say(f"{DIGEST_PREFIX}{report.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
