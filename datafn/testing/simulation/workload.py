"""The workload of a seed: a list of steps, and how each is told in plain words."""

from __future__ import annotations

import random

from datafn.testing.simulation.model import SimulationOptions, Step, SwarmConfig

__all__ = ["WRITE_KINDS", "describe_step", "generate_steps"]

#: Local writes (the record and its values are chosen when the step runs, from its seed).
WRITE_KINDS = ("insert", "merge", "replace", "delete", "guarded", "invalid", "vetoed")
#: Explicit sync calls, started in the background of the client (they overlap other steps).
SYNC_KINDS = ("push", "pull", "sync_all", "reconcile", "clone_up", "clone")
#: Faults armed for the next matching request of a client.
ARMED = {
    "drop": "drop",
    "reset": "reset",
    "duplicate": "duplicate",
    "delay": "delay",
    "timeout": "delay",
    "truncate": "truncate",
    "crash_after_commit": "crash",
}


def _weights(config: SwarmConfig) -> list[tuple[str, float]]:
    faults = set(config.faults)
    table: list[tuple[str, float]] = [
        ("insert", 9),
        ("merge", 7),
        ("replace", 3),
        ("delete", 3),
        ("guarded", 3),
        ("invalid", 1.5),
        ("vetoed", 1),
        ("push", 7),
        ("pull", 5),
        ("sync_all", 5),
        ("reconcile", 1.5),
        ("clone_up", 1.5),
        ("clone", 1),
        ("start", 2.5),
        ("stop", 1.5),
        ("discard", 0.5),
        ("announce", 1.5),
        ("focus", 0.5),
        ("wait", 2),
    ]
    if faults & set(ARMED.values()):
        table.append(("fault", 8))
    if "offline" in faults:
        table += [("offline", 1.5), ("online", 1.5)]
    if "crash" in faults:
        table += [("crash", 2), ("restart", 2)]
    if "replay" in faults:
        table.append(("replay", 2))
    if "server-crash" in faults:
        table.append(("server_crash", 1))
    return table


def generate_steps(seed: int, options: SimulationOptions, config: SwarmConfig) -> list[Step]:
    """The steps of ``seed``: every choice from ``random.Random`` seeded with the seed."""
    rng = random.Random(f"steps:{seed}")
    table = _weights(config)
    kinds = [k for k, _ in table]
    weights = [w for _, w in table]
    armable = [name for name, fault in ARMED.items() if fault in config.faults]
    steps: list[Step] = []
    for _ in range(options.steps):
        kind = rng.choices(kinds, weights)[0]
        client = rng.randint(1, config.clients)
        sub_seed = rng.getrandbits(32)
        # mostly short gaps, so that background sync overlaps the next steps; sometimes long
        after = rng.choice((0.0, 0.0, 0.01, 0.05, 0.2, 0.5, 1.0, 3.0))
        args: tuple[tuple[str, object], ...] = ()
        if kind == "fault":
            fault = rng.choice(armable)
            endpoint = rng.choice(("push", "push", "push", "pull", "clone", "any"))
            args = (("fault", fault), ("endpoint", endpoint))
        elif kind == "wait":
            after = rng.choice((1.0, 5.0, 30.0))
        elif kind == "server_crash":
            args = (("down", rng.choice((0.0, 0.5, 5.0))),)
        steps.append(Step(kind, client, sub_seed, after, args))
    return steps


def describe_step(step: Step) -> str:
    """The step in plain words (what is decided inside the step is told by the trace)."""
    who = f"client {step.client}"
    kind = step.kind
    if kind in WRITE_KINDS:
        return f"{who}: {kind} write"
    if kind in SYNC_KINDS:
        return f"{who} starts sync.{kind}()"
    if kind == "start":
        return f"{who} calls sync.start()"
    if kind == "stop":
        return f"{who} calls sync.stop()"
    if kind == "discard":
        return f"{who} discards its oldest queued write"
    if kind == "announce":
        return f"the real-time channel announces the server's seq to {who}"
    if kind == "focus":
        return f"{who}'s window gains focus (sync.notify('focus'))"
    if kind == "wait":
        return "time passes"
    if kind == "fault":
        fault = step.arg("fault")
        endpoint = step.arg("endpoint")
        target = "next request" if endpoint == "any" else f"next {endpoint} request"
        texts = {
            "drop": f"the network will drop {who}'s {target} before the server",
            "reset": f"the network will reset the connection after the server answers {who}'s "
            f"{target}",
            "duplicate": f"the network will deliver {who}'s {target} twice",
            "delay": f"the network will delay {who}'s {target}",
            "timeout": f"the network will hold {who}'s {target} beyond its timeout",
            "truncate": f"the network will cut short the answer to {who}'s {target}",
            "crash_after_commit": f"{who} will crash right after the server handles its {target}",
        }
        return texts[str(fault)]
    if kind == "offline":
        return f"{who} goes offline (its link drops every request)"
    if kind == "online":
        return f"{who} comes back online"
    if kind == "crash":
        return f"{who} crashes"
    if kind == "restart":
        return f"{who} restarts on its store"
    if kind == "replay":
        return "the network replays an earlier request"
    if kind == "server_crash":
        return f"the server crashes (down {step.arg('down')} s) and restarts on its store"
    return f"{who}: {kind}"
