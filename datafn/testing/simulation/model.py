"""The data of a simulation: options, the per-seed configuration, steps, violations, results."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datafn.client.store import ClientStore
    from datafn.schema import Schema

__all__ = [
    "ALL_FAULTS",
    "INVARIANTS",
    "SCHEMA",
    "SimulationOptions",
    "SimulationResult",
    "Step",
    "SwarmConfig",
    "TraceLine",
    "Violation",
]

#: The faults the simulator can inject (``--faults``).
ALL_FAULTS: tuple[str, ...] = (
    "drop",  # a request lost before it reaches the server (connection refused or reset)
    "reset",  # the answer lost after the server handled the request
    "duplicate",  # a request delivered twice
    "replay",  # an earlier request delivered again, late
    "delay",  # a request held in the network (reorders clients; beyond the timeout: a timeout)
    "truncate",  # an answer cut short
    "crash",  # client crashes (at any await point, and right after the server committed a push)
    "server-crash",  # the server crashes and restarts on the same store
    "offline",  # a client's link goes down for a while
)

#: The invariants checked, by the name a violation carries.
INVARIANTS: dict[str, str] = {
    "lost": "no acknowledged local write is lost unless the server refused it and the client "
    "reported that",
    "applied-twice": "no write is applied twice, and nothing refused is applied",
    "diverged": "every client converges to the server's exact records, with an empty queue",
    "stuck": "settling (faults off, everyone online) completes within a bound",
    "visibility": "no change with seq <= n becomes visible after a client was given cursor n",
    "http-500": "no answer is an HTTP 500",
    "invalid-record": "every record the server holds satisfies the schema",
    "engine-error": "the client engine raises nothing but datafn errors",
    "unrecovered": "every sync_stuck episode of the watchdog ends (sync_recovered) once the run "
    "has settled; recovery times are in the stats (max_recovery_seconds, virtual seconds)",
    "conflict-dropped": "a write refused for a conflict (the reject policy) is kept by its client "
    "as a dead letter, never dropped; counted in the stats (conflicts_rejected)",
}

#: The schema of the workload: every write sets ``rev`` to a token naming that write, so each
#: change of the server's log can be traced back to the exact write that produced it.
SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "todos",
            "version": 1,
            "idPrefix": "todos",
            "fields": [
                {"name": "title", "type": "string", "required": True, "maxLength": 40},
                {"name": "done", "type": "boolean", "default": False},
                {"name": "n", "type": "number", "nullable": True},
                {"name": "rev", "type": "string"},
            ],
        }
    ]
}

#: Record ids of the workload: few, so that clients write the same records.
RECORD_IDS = tuple(f"todos:{n}" for n in range(1, 7))

StoreFactory = Callable[[int, "Schema"], "ClientStore"]


@dataclass(frozen=True)
class SimulationOptions:
    """What a simulation runs; with the seed, it determines the run exactly.

    :param clients: how many clients (default: 2 to 4, chosen by the seed).
    :param steps: workload steps per seed.
    :param faults: the faults that may be injected (a subset of :data:`ALL_FAULTS`); each seed
        enables a random part of them (swarm testing).
    :param plugins: plugin objects registered in every client (policies, phases, triggers…).
    :param server_plugins: plugin objects registered in the server.
    :param store_factory: ``factory(client_index, schema)`` → the client's durable store,
        built once per client and reopened by every restart (default: the memory store).
        It must not use threads, or the run is no longer deterministic.
    :param settle_rounds: full sync rounds allowed to settle before "stuck".
    :param request_timeout: ``sync.request-timeout`` of the clients (virtual seconds).
    :param sync: more ``[tool.datafn.sync]`` settings for every client.
    :param pyproject: a pyproject.toml to read ``[tool.datafn]`` from (default: none).
    :param conflicts: the server's conflict policy for every resource (``last-writer-wins``
        or ``reject``; docs/concepts.md, "Conflicts").
    """

    clients: int | None = None
    steps: int = 30
    faults: tuple[str, ...] = ALL_FAULTS
    plugins: Sequence[object] = ()
    server_plugins: Sequence[object] = ()
    store_factory: StoreFactory | None = None
    settle_rounds: int = 6
    request_timeout: float = 10.0
    sync: dict[str, Any] = field(default_factory=dict)
    pyproject: Path | str | None = None
    conflicts: str = "last-writer-wins"

    def __post_init__(self) -> None:
        from datafn.server.mutations import CONFLICT_POLICIES

        if self.conflicts not in CONFLICT_POLICIES:
            raise ValueError(
                f"unknown conflict policy {self.conflicts!r}; known: {', '.join(CONFLICT_POLICIES)}"
            )
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}")
        if self.clients is not None and not 1 <= self.clients <= 16:
            raise ValueError("clients must be between 1 and 16")

    def describe(self) -> str:
        parts = []
        if self.clients is not None:
            parts.append(f"clients={self.clients}")
        parts.append(f"steps={self.steps}")
        if tuple(self.faults) != ALL_FAULTS:
            parts.append(f"faults={','.join(self.faults) or 'none'}")
        if self.conflicts != "last-writer-wins":
            parts.append(f"conflicts={self.conflicts}")
        return " ".join(parts)


@dataclass(frozen=True)
class SwarmConfig:
    """The configuration a seed picks: how many clients, which faults, how often, batch sizes."""

    clients: int
    faults: tuple[str, ...]
    fault_rate: float
    push_batch_size: int
    pull_batch_size: int
    clone_page_size: int
    push_max_retries: int
    latency: float

    @classmethod
    def from_seed(cls, seed: int, options: SimulationOptions) -> SwarmConfig:
        rng = random.Random(f"swarm:{seed}")
        clients = options.clients if options.clients is not None else rng.randint(2, 4)
        faults = tuple(f for f in options.faults if rng.random() < 0.6)
        return cls(
            clients=clients,
            faults=faults,
            fault_rate=rng.choice((0.0, 0.02, 0.05, 0.1)) if faults else 0.0,
            push_batch_size=rng.choice((1, 2, 3, 100)),
            pull_batch_size=rng.choice((10, 200)),
            clone_page_size=rng.choice((1, 2, 1000)),
            push_max_retries=rng.choice((0, 1, 3)),
            latency=rng.choice((0.001, 0.02, 0.2)),
        )

    def describe(self) -> str:
        return (
            f"{self.clients} clients; faults {', '.join(self.faults) or 'none'}"
            f" (background rate {self.fault_rate}); push batch {self.push_batch_size}, pull "
            f"batch {self.pull_batch_size}, clone page {self.clone_page_size}, push retries "
            f"{self.push_max_retries}, latency {self.latency} s"
        )


@dataclass(frozen=True)
class Step:
    """One step of a workload: ``kind`` done by ``client`` (an index from 1), then ``after``
    virtual seconds pass. ``seed`` drives every random choice made inside the step, so that a
    step means the same thing when the steps before it are removed (shrinking)."""

    kind: str
    client: int
    seed: int
    after: float
    args: tuple[tuple[str, Any], ...] = ()

    def arg(self, name: str, default: Any = None) -> Any:
        for key, value in self.args:
            if key == name:
                return value
        return default


@dataclass(frozen=True)
class TraceLine:
    """One line of a run's history: virtual time, the step it happened in (None: settling),
    its text, and the record ids it concerns."""

    time: float
    step: int | None
    text: str
    records: tuple[str, ...] = ()
    is_step: bool = False


@dataclass(frozen=True)
class Violation:
    """An invariant that did not hold: its name (see :data:`INVARIANTS`), what happened, and
    the history of the records concerned."""

    invariant: str
    message: str
    records: tuple[str, ...] = ()
    history: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.message}"


@dataclass
class SimulationResult:
    """What one run did: ``ok``, the violations, the trace and some counts."""

    seed: int
    options: SimulationOptions
    config: SwarmConfig
    steps: list[Step]
    violations: list[Violation]
    trace: list[TraceLine]
    stats: dict[str, float]

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def invariants(self) -> list[str]:
        """The names of the invariants that failed, in order of first report, once each."""
        return list(dict.fromkeys(v.invariant for v in self.violations))

    def fingerprint(self) -> list[tuple[float, str]]:
        """The trace as (time, text) pairs: equal for two runs that went the same way."""
        return [(line.time, line.text) for line in self.trace]

    def format_trace(self, *, settle: bool = True) -> str:
        """The trace in plain words, one line per event, steps numbered."""
        out = []
        for line in self.trace:
            if line.step is None and not settle:
                continue
            prefix = f"{line.time:9.3f}s "
            if line.is_step:
                out.append(f"{prefix}{line.text}")
            else:
                out.append(f"{prefix}    {line.text}")
        return "\n".join(out)

    def report(self) -> str:
        """A readable report: the seed, the configuration, the violations with the history of
        their records, and the trace."""
        lines = [
            f"seed {self.seed} ({self.options.describe()}): "
            + ("ok" if self.ok else f"{len(self.violations)} violation(s)"),
            f"configuration: {self.config.describe()}",
        ]
        # a short trace is printed whole below; a long one is summed up per violation by the
        # history of the records concerned
        histories = len(self.trace) > 40
        shown: set[tuple[str, ...]] = set()
        for violation in self.violations:
            lines.append(f"violation {violation}")
            if histories and violation.history:
                if violation.history in shown:
                    lines.append("    (history as above)")
                    continue
                shown.add(violation.history)
                lines.append("  history of " + ", ".join(violation.records) + ":")
                for entry in violation.history:
                    lines.append(f"    {entry}")
        lines.append(f"trace ({len(self.steps)} steps):")
        lines.append(self.format_trace())
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(self.report())
