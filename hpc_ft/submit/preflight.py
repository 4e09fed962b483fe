"""Preflight: check a Slurm request against the cluster before submitting it.

``scontrol show partition -o`` gives each partition's limits and ``sinfo -N`` each node's CPUs,
memory and GRES. Parsing and checking are pure (tested on captured text); ``preflight(spec)`` runs
the two commands and raises ConfigError naming every limit the request exceeds and how to fix it.
``preflight=false`` skips it (e.g. when the login node can't see the partitions' nodes).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable

from hpc_ft.config.schema import ResourcesConf
from hpc_ft.errors import ConfigError, Problem, SubmissionError

SINFO_FORMAT = "%N|%P|%c|%m|%G|%t"
UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "")


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    state: str  # UP, DOWN, DRAIN, INACTIVE
    max_time_min: float | None  # None: no limit
    max_nodes: int | None
    max_mem_per_node_mb: int | None
    max_cpus_per_node: int | None


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: dict[str, int] = field(default_factory=dict)  # GPU type ("" when untyped) -> count
    state: str = "idle"

    def gpu_count(self, gpu_type: str | None) -> int:
        return sum(n for t, n in self.gpus.items() if gpu_type is None or t == gpu_type)


def parse_minutes(text: str) -> float | None:
    """Slurm's time syntax (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes; None if unlimited."""
    text = text.strip()
    if text.upper() in UNLIMITED:
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(x) for x in text.split(":")] + [0, 0]
        h, m, s = parts[0], parts[1], parts[2]
    else:
        parts = [int(x) for x in text.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts[0], parts[1], parts[2]
    return days * 1440 + h * 60 + m + s / 60


def _int_or_none(text: str) -> int | None:
    return None if text.upper() in UNLIMITED else int(text)


def parse_partitions(text: str) -> dict[str, Partition]:
    """``scontrol show partition -o`` (one partition per line, ``Key=Value`` words) -> partitions by name."""
    out: dict[str, Partition] = {}
    for line in text.splitlines():
        kv = dict(word.partition("=")[::2] for word in line.split() if "=" in word)
        if "PartitionName" not in kv:
            continue
        out[kv["PartitionName"]] = Partition(
            name=kv["PartitionName"], default=kv.get("Default", "NO") == "YES", state=kv.get("State", "UP"),
            max_time_min=parse_minutes(kv.get("MaxTime", "UNLIMITED")),
            max_nodes=_int_or_none(kv.get("MaxNodes", "UNLIMITED")),
            max_mem_per_node_mb=_int_or_none(kv.get("MaxMemPerNode", "UNLIMITED")),
            max_cpus_per_node=_int_or_none(kv.get("MaxCPUsPerNode", "UNLIMITED")))
    return out


def parse_gres(text: str) -> dict[str, int]:
    """GPU counts by type from a node's GRES (``gpu:a100:4(S:0-1),gpu:2,shard:8``); others ignored."""
    gpus: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        gpu_type, count = (parts[1], parts[2]) if len(parts) >= 3 else ("", parts[1])
        m = re.match(r"\d+", count)
        if m:
            gpus[gpu_type] = gpus.get(gpu_type, 0) + int(m.group())
    return gpus


def parse_nodes(text: str) -> list[Node]:
    """``sinfo -h -N -o '%N|%P|%c|%m|%G|%t'`` -> one Node per (node, partition) line."""
    from hpc_ft.node.hostlist import expand_hostlist

    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        names, part, cpus, mem, gres, state = line.split("|")[:6]
        for name in expand_hostlist(names):  # -N prints one node a line; expand in case a line groups some
            nodes.append(Node(name=name, partition=part.rstrip("*"), cpus=int(cpus.rstrip("+")),
                              mem_mb=int(mem.rstrip("+")), gpus=parse_gres(gres), state=state.strip()))
    return nodes


def _fmt_minutes(minutes: float) -> str:
    d, rem = divmod(int(minutes), 1440)
    return f"{d}-{rem // 60:02d}:{rem % 60:02d}:00" if d else f"{rem // 60:02d}:{rem % 60:02d}:00"


def check_request(r: ResourcesConf, partitions: dict[str, Partition], nodes: list[Node]) -> list[Problem]:
    """Every limit of the target partition that the request exceeds (pure)."""
    if not partitions:
        return [Problem("resources.partition", r.partition, "the cluster reports no partitions",
                        "check `scontrol show partition`, or pass preflight=false")]
    if r.partition is None:
        default = [p for p in partitions.values() if p.default]
        if not default:
            return [Problem("resources.partition", None, "the cluster has no default partition",
                            f"pass resources.partition=<one of {', '.join(sorted(partitions))}>")]
        part = default[0]
    elif r.partition not in partitions:
        return [Problem("resources.partition", r.partition, "no such partition on this cluster",
                        f"pass resources.partition=<one of {', '.join(sorted(partitions))}>")]
    else:
        part = partitions[r.partition]
    p: list[Problem] = []
    pname = part.name
    if not part.state.startswith("UP"):
        p.append(Problem("resources.partition", pname, f"partition {pname} is {part.state}",
                         "pick another partition or wait until it is UP"))
    members = [n for n in nodes if n.partition == pname]
    mem_mb = int(round(r.mem_gb * 1024))
    if r.nodes > len(members):
        p.append(Problem("resources.nodes", r.nodes, f"partition {pname} has {len(members)} node(s)",
                         f"pass resources.nodes={max(1, len(members))} or another resources.partition"))
    if part.max_nodes is not None and r.nodes > part.max_nodes:
        p.append(Problem("resources.nodes", r.nodes, f"partition {pname} allows at most MaxNodes={part.max_nodes}",
                         f"pass resources.nodes={part.max_nodes} or another resources.partition"))
    if part.max_time_min is not None and r.timeout_min > part.max_time_min:
        p.append(Problem("resources.timeout_min", r.timeout_min,
                         f"partition {pname} allows at most MaxTime={_fmt_minutes(part.max_time_min)} "
                         f"({part.max_time_min:g} min)",
                         f"pass resources.timeout_min={int(part.max_time_min)} (checkpoints let a requeued job "
                         f"continue) or another resources.partition"))
    if part.max_mem_per_node_mb is not None and mem_mb > part.max_mem_per_node_mb:
        p.append(Problem("resources.mem_gb", r.mem_gb,
                         f"partition {pname} allows at most MaxMemPerNode={part.max_mem_per_node_mb} MB",
                         f"pass resources.mem_gb={part.max_mem_per_node_mb / 1024:g}"))
    if part.max_cpus_per_node is not None and r.cpus_per_task > part.max_cpus_per_node:
        p.append(Problem("resources.cpus_per_task", r.cpus_per_task,
                         f"partition {pname} allows at most MaxCPUsPerNode={part.max_cpus_per_node}",
                         f"pass resources.cpus_per_task={part.max_cpus_per_node}"))
    if not members:
        return p
    flagged = {q.key for q in p}  # a partition limit already named for a key says enough about it
    p += [q for q in _node_limits(r, pname, members, mem_mb) if q.key not in flagged]
    return p


def _node_limits(r: ResourcesConf, pname: str, members: list[Node], mem_mb: int) -> list[Problem]:
    """What the partition's nodes can hold: each resource alone (the clearest message), then all together."""
    p: list[Problem] = []
    most_mem = max(n.mem_mb for n in members)
    most_cpus = max(n.cpus for n in members)
    if mem_mb > most_mem:
        p.append(Problem("resources.mem_gb", r.mem_gb, f"the largest node in partition {pname} has {most_mem} MB",
                         f"pass resources.mem_gb={most_mem / 1024:g} or less"))
    if r.cpus_per_task > most_cpus:
        p.append(Problem("resources.cpus_per_task", r.cpus_per_task,
                         f"the largest node in partition {pname} has {most_cpus} CPUs",
                         f"pass resources.cpus_per_task={most_cpus} or less"))
    if r.gpus_per_node:
        types = sorted({t for n in members for t, c in n.gpus.items() if c and t})
        most_gpus = max(n.gpu_count(r.gpu_type) for n in members)
        if r.gpu_type is not None and r.gpu_type not in types:
            p.append(Problem("resources.gpu_type", r.gpu_type, f"partition {pname} has no GPUs of this type "
                             f"(GRES types: {', '.join(types) or 'none'})",
                             f"pass resources.gpu_type=<one of {', '.join(types)}> or resources.gpu_type=null"
                             if types else "pass resources.gpus_per_node=0 or another resources.partition"))
        elif r.gpus_per_node > most_gpus:
            what = f"{r.gpu_type} GPUs" if r.gpu_type else "GPUs"
            p.append(Problem("resources.gpus_per_node", r.gpus_per_node,
                             f"nodes in partition {pname} have at most {most_gpus} {what}",
                             f"pass resources.gpus_per_node={most_gpus}" if most_gpus
                             else "pass resources.gpus_per_node=0 or another resources.partition"))
    if p:
        return p
    fit = [n for n in members if n.mem_mb >= mem_mb and n.cpus >= r.cpus_per_task
           and n.gpu_count(r.gpu_type) >= r.gpus_per_node]
    if r.nodes > len(fit):
        p.append(Problem("resources.nodes", r.nodes,
                         f"only {len(fit)} node(s) of partition {pname} have {r.cpus_per_task} CPUs, {mem_mb} MB "
                         f"and {r.gpus_per_node} GPU(s) each",
                         f"pass resources.nodes={max(1, len(fit))} or ask for less per node"))
    return p


Runner = Callable[[list[str]], str]


def run_command(argv: list[str]) -> str:
    """Run a Slurm client command; its stdout, or SubmissionError naming the command."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise SubmissionError(f"preflight: {argv[0]} not found: run on a Slurm login node, or pass "
                              f"preflight=false to skip the check") from exc
    except subprocess.TimeoutExpired as exc:
        raise SubmissionError(f"preflight: `{' '.join(argv)}` did not answer in 60 s "
                              f"(pass preflight=false to skip the check)") from exc
    if proc.returncode != 0:
        raise SubmissionError(f"preflight: `{' '.join(argv)}` failed: {proc.stderr.strip()} "
                              f"(pass preflight=false to skip the check)")
    return proc.stdout


def preflight(r: ResourcesConf, run: Runner = run_command) -> None:
    """Raise ConfigError if the request doesn't fit the cluster's partition; SubmissionError if Slurm can't say."""
    partitions = parse_partitions(run(["scontrol", "show", "partition", "-o"]))
    nodes = parse_nodes(run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT]))
    problems = check_request(r, partitions, nodes)
    if problems:
        raise ConfigError(problems)
