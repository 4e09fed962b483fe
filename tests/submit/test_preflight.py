"""Preflight: parsing captured `scontrol`/`sinfo` text and checking requests against partition limits."""

from __future__ import annotations

import pytest

from hpc_ft.config.schema import ResourcesConf
from hpc_ft.errors import ConfigError, SubmissionError
from hpc_ft.submit.preflight import (Node, check_request, parse_gres, parse_minutes, parse_nodes, parse_partitions,
                                     preflight, run_command)

# Captured from scripts/local-slurm.sh's cluster (Slurm 22.05.8).
LOCAL_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=1-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=node[01-02] PriorityJobFactor=1 "
    "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP "
    "TotalCPUs=8 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=32G,node=2,billing=8,gres/gpu=4\n"
    "PartitionName=short AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=1 MaxTime=00:10:00 "
    "MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=node01 PriorityJobFactor=1 PriorityTier=1 RootOnly=NO "
    "ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=4 TotalNodes=1 "
    "SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=4,mem=16G,node=1,billing=4,gres/gpu=2\n")
LOCAL_NODES = ("node01|debug*|4|16384|gpu:testgpu:2|idle\nnode01|short|4|16384|gpu:testgpu:2|idle\n"
               "node02|debug*|4|16384|gpu:testgpu:2|idle\n")

# A mixed production-like cluster, in the same formats.
MIXED_PARTITIONS = (
    "PartitionName=cpu Default=YES MaxNodes=UNLIMITED MaxTime=2-00:00:00 State=UP MaxMemPerNode=UNLIMITED "
    "MaxCPUsPerNode=UNLIMITED TotalNodes=3\n"
    "PartitionName=gpu Default=NO MaxNodes=4 MaxTime=12:00:00 State=UP MaxMemPerNode=512000 MaxCPUsPerNode=64 "
    "TotalNodes=3\n"
    "PartitionName=old Default=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED State=DOWN TotalNodes=1\n")
MIXED_NODES = ("c1|cpu*|128|257000|(null)|idle\nc[2-3]|cpu*|128|257000|(null)|idle\n"
               "g1|gpu|64|1024000|gpu:a100:4(S:0-1)|mix\n"
               "g2|gpu|64|1024000|gpu:a100:4(S:0-1)|idle\n"
               "g3|gpu|32|515000|gpu:v100:2,shard:v100:8|idle\n"
               "o1|old|8|16000|gpu:2|down*\n")


def res(**kw) -> ResourcesConf:
    base = dict(nodes=1, gpus_per_node=0, cpus_per_task=2, mem_gb=1.0, timeout_min=60)
    return ResourcesConf(**{**base, **kw})


@pytest.mark.parametrize("text, minutes", [
    ("UNLIMITED", None), ("INFINITE", None), ("30", 30), ("10:30", 10.5), ("01:30:00", 90),
    ("1-00:00:00", 1440), ("2-12", 3600), ("1-02:03", 1563), ("00:10:00", 10),
])
def test_slurm_time_syntax(text, minutes):
    assert parse_minutes(text) == minutes


def test_partitions_from_real_scontrol_text():
    parts = parse_partitions(LOCAL_PARTITIONS)
    assert set(parts) == {"debug", "short"}
    assert parts["debug"].default and parts["debug"].max_time_min == 1440 and parts["debug"].max_nodes is None
    assert not parts["short"].default and parts["short"].max_time_min == 10 and parts["short"].max_nodes == 1
    assert parts["short"].max_mem_per_node_mb is None and parts["short"].state == "UP"


def test_nodes_and_gres_from_real_sinfo_text():
    nodes = parse_nodes(LOCAL_NODES)
    assert [(n.name, n.partition) for n in nodes] == [("node01", "debug"), ("node01", "short"), ("node02", "debug")]
    assert nodes[0] == Node("node01", "debug", 4, 16384, {"testgpu": 2}, "idle")


@pytest.mark.parametrize("gres, gpus", [
    ("(null)", {}), ("gpu:2", {"": 2}), ("gpu:a100:4(S:0-1)", {"a100": 4}),
    ("gpu:v100:2,shard:v100:8", {"v100": 2}), ("gpu:a100:2,gpu:v100:1(S:1)", {"a100": 2, "v100": 1}),
])
def test_gres_strings(gres, gpus):
    assert parse_gres(gres) == gpus


def check(r: ResourcesConf, parts=MIXED_PARTITIONS, nodes=MIXED_NODES):
    return check_request(r, parse_partitions(parts), parse_nodes(nodes))


def test_request_that_fits_passes():
    assert check(res()) == []
    assert check(res(partition="gpu", nodes=2, gpus_per_node=4, gpu_type="a100", cpus_per_task=32, mem_gb=400,
                     timeout_min=600)) == []
    assert check(res(nodes=2, gpus_per_node=2), LOCAL_PARTITIONS, LOCAL_NODES) == []


@pytest.mark.parametrize("kw, key, words, fix", [
    (dict(partition="nope"), "resources.partition", "no such partition", "cpu, gpu, old"),
    (dict(partition="old"), "resources.partition", "is DOWN", "another partition"),
    (dict(nodes=5), "resources.nodes", "has 3 node(s)", "resources.nodes=3"),
    (dict(partition="gpu", nodes=5), "resources.nodes", "MaxNodes=4", "resources.nodes=4"),
    (dict(partition="gpu", timeout_min=1000), "resources.timeout_min", "MaxTime=12:00:00", "timeout_min=720"),
    (dict(partition="gpu", mem_gb=600), "resources.mem_gb", "MaxMemPerNode=512000", "mem_gb=500"),
    (dict(mem_gb=300), "resources.mem_gb", "largest node in partition cpu has 257000 MB", "mem_gb=250.977"),
    (dict(partition="gpu", cpus_per_task=65), "resources.cpus_per_task", "MaxCPUsPerNode=64", "cpus_per_task=64"),
    (dict(cpus_per_task=200), "resources.cpus_per_task", "has 128 CPUs", "cpus_per_task=128"),
    (dict(gpus_per_node=1), "resources.gpus_per_node", "at most 0 GPUs", "gpus_per_node=0"),
    (dict(partition="gpu", gpus_per_node=8), "resources.gpus_per_node", "at most 4 GPUs", "gpus_per_node=4"),
    (dict(partition="gpu", gpus_per_node=4, gpu_type="v100"), "resources.gpus_per_node", "at most 2 v100 GPUs",
     "gpus_per_node=2"),
    (dict(partition="gpu", gpus_per_node=1, gpu_type="h100"), "resources.gpu_type", "(GRES types: a100, v100)",
     "gpu_type=<one of a100, v100>"),
    (dict(partition="gpu", nodes=3, gpus_per_node=4), "resources.nodes", "only 2 node(s)", "resources.nodes=2"),
])
def test_each_limit_is_named_with_a_fix(kw, key, words, fix):
    problems = check(res(**kw))
    assert problems, kw
    (p,) = [p for p in problems if p.key == key and words in p.rule] or [problems]
    assert fix in p.fix, p


def test_default_partition_is_checked_when_none_is_named():
    (p,) = check(res(timeout_min=2000), LOCAL_PARTITIONS, LOCAL_NODES)
    assert p.key == "resources.timeout_min" and "partition debug" in p.rule


def test_all_partition_problems_at_once():
    keys = sorted(p.key for p in check(res(partition="short", nodes=3, timeout_min=100, mem_gb=100),
                                       LOCAL_PARTITIONS, LOCAL_NODES))
    assert keys == ["resources.mem_gb", "resources.nodes", "resources.nodes", "resources.timeout_min"]


def test_preflight_raises_config_error_from_the_commands_output():
    calls = []

    def run(argv):
        calls.append(argv[0])
        return LOCAL_PARTITIONS if argv[0] == "scontrol" else LOCAL_NODES

    preflight(res(nodes=2), run)
    with pytest.raises(ConfigError) as info:
        preflight(res(nodes=3), run)
    assert "resources.nodes=3" in str(info.value) and "Fix: pass resources.nodes=2" in str(info.value)
    assert calls == ["scontrol", "sinfo", "scontrol", "sinfo"]


def test_missing_slurm_commands_say_how_to_skip(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SubmissionError, match="preflight=false"):
        run_command(["sinfo", "-h"])
