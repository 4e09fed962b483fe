"""Typed job configuration. Hydra composes conf/ onto these dataclasses; unknown keys are rejected.

Units are in the field names (``_s``, ``_min``, ``_gb``). ``model``, ``data`` and ``optim`` are
plain mappings with a ``_target_`` so a user's own model, dataset or optimizer drops in without
editing hpc_ft.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# omegaconf.MISSING, spelled out (tests/test_job.py checks they agree): the node task imports this schema to read
# the spec it carries, and importing OmegaConf would add ~65 ms to every node's start.
MISSING = "???"


DEFAULT_TASK = "hpc_ft.train.tasks.classification.SequenceClassification"


@dataclass
class PrecisionConf:
    # auto | fp32 | bf16 | fp16: autocast dtype; fp16 adds a GradScaler. auto: what each node's device computes
    # natively (bf16 from CUDA compute capability 8.0 or a CPU with AVX512-BF16/AMX, fp16 on older GPUs, else fp32)
    dtype: str = "auto"


@dataclass
class ResourcesConf:
    nodes: int = 1  # nodes in the allocation; one task (one torchrun agent) per node
    gpus_per_node: int = 0  # GPUs per node; 0 trains on CPU with gloo
    workers_per_node: Optional[int] = None  # torchrun --nproc-per-node; None: gpus_per_node, or 2 on CPU
    gpu_type: Optional[str] = None  # Slurm GRES type, e.g. a100 (None: any)
    gpu_mem_gb: Optional[float] = None  # memory of one GPU (None: from gpu_type, hpc_ft.estimate.GPU_MEMORY_GIB)
    memory_check: bool = True  # GPU jobs: estimate peak memory per worker before submission; refuse what can't fit
    cpus_per_task: int = 2  # CPUs for the node task and all its workers
    mem_gb: float = 8.0  # memory per node
    timeout_min: int = 60  # wall-clock limit of the job
    partition: Optional[str] = None  # Slurm partition (None: the cluster default)
    account: Optional[str] = None  # Slurm account to charge
    qos: Optional[str] = None  # Slurm QOS
    constraint: Optional[str] = None  # Slurm node features, e.g. "a100&ib"


@dataclass
class ExecutorConf:
    name: str = "local"  # local | debug | slurm
    # Slurm only: signal sent before the time limit so training can checkpoint (never USR1: NCCL uses it).
    preempt_signal: str = "USR2"
    preempt_signal_delay_s: int = 120  # how long before the limit the signal comes
    max_requeues: int = 3  # requeues after preemption or time-out before giving up
    max_restarts: int = 0  # torchrun restarts of failed workers on a node
    setup: List[str] = field(default_factory=list)  # shell lines before the task, e.g. "module load cuda"
    env: Dict[str, str] = field(default_factory=dict)  # environment variables exported to every node
    extra_sbatch: Dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {mail-type: END}
    poll_interval_s: float = 1.0  # how often the submitter checks the job while waiting


@dataclass
class TrainConf:
    max_steps: int = 200  # optimizer steps
    # Samples per optimizer step, across all workers and accumulation steps. Each worker's micro-batch is
    # global_batch_size / (world size x grad_accum_steps) (the dry run shows it as micro_batch_per_worker).
    global_batch_size: int = 16
    grad_accum_steps: int = 1  # micro-batches per optimizer step on each worker
    # Evaluation samples per forward pass on each worker (per worker, unlike global_batch_size: evaluation
    # reads the whole test split, so its batching changes memory and speed, never the result).
    eval_micro_batch_size: int = 64
    eval_every_steps: int = 100  # 0: only at the end
    ckpt_every_steps: int = 50  # 0: only at the end
    keep_checkpoints: int = 2  # newest complete checkpoints kept in run_dir/checkpoints
    log_every_steps: int = 10
    warmup_steps: int = 20  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip_norm: float = 1.0  # 0 disables clipping
    seed: int = 0
    deterministic: bool = True  # torch deterministic algorithms (bitwise-repeatable on CPU)
    num_threads: Optional[int] = None  # torch intra-op threads per worker (None: validate.threads_per_worker)
    compile: bool = False  # torch.compile the model (first steps slower while it compiles; GPUs gain most)
    # Recompute each transformer block's activations in the backward pass instead of keeping them: activation
    # memory of one block instead of all, for about one more forward pass of compute (hpc_ft.train.ac).
    activation_checkpointing: bool = False
    # ddp: every worker holds the whole model, its gradients and optimizer state (all-reduced gradients);
    # fsdp: FSDP2 (fully_shard per transformer block and the root) shards all three over the workers,
    # checkpoints sharded through torch.distributed.checkpoint (hpc_ft.train.fsdp).
    strategy: str = "ddp"


PEFT_METHODS = ("none", "lora")
QUANTIZE = ("none", "4bit")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class PeftConf:
    """Parameter-efficient fine-tuning (conf/peft/): ``none`` trains every weight; ``lora`` trains low-rank
    adapters through the ``peft`` library, the base weights frozen (hpc_ft.train.lora)."""

    method: str = "none"  # none | lora
    r: int = 8  # LoRA rank: adapter parameters per target matrix (in + out features) x r
    alpha: float = 16  # scaling of the adapter's update: alpha / r
    dropout: float = 0.05  # dropout on the adapter's input
    target_modules: Optional[List[str]] = None  # module names to adapt; None: the architecture's default
    quantize: str = "none"  # none | 4bit: the frozen base in 4-bit NF4 through bitsandbytes (QLoRA)


@dataclass
class TelemetryConf:
    enabled: bool = True
    interval_s: float = 1.0  # sampling period on every node
    max_report_points: int = 600  # downsampled series carried back in each NodeReport
    idle_util_pct: float = 5.0  # a GPU below this utilization counts as idle
    price_per_gpu_hour: float = 2.0  # currency units per GPU-hour (for the cost line)
    price_per_kwh: float = 0.25  # currency units per kWh
    price_per_node_hour: float = 0.5  # currency units per node-hour of a CPU-only job (its cost line and plans)
    gpu_peak_tflops: Optional[float] = None  # dense bf16 peak for MFU (None: looked up from the GPU name)


# The names tracking.backend accepts (hpc_ft.train.tracking implements each).
TRACKING_BACKENDS = ("tensorboard", "mlflow", "off")


@dataclass
class TrackingConf:
    # tensorboard | mlflow | off: training and telemetry curves beside metrics.jsonl (mlflow: TensorBoard too, and
    # rank 0's curves in one MLflow run across requeues; needs the optional extra hpc_ft[mlflow])
    backend: str = "tensorboard"
    mlflow_uri: Optional[str] = None  # MLflow tracking URI; None: a local file store in the run dir (mlruns/)


# The names sched.policy, sched.order and sched.objective accept. They live with the schema so validation
# needs no import of hpc_ft.sched (which sits above config); hpc_ft.sched implements each name.
SCHED_POLICIES = ("equal", "priority", "proportional", "lp")
SCHED_ORDERS = ("fcfs", "sjf", "priority")
SCHED_OBJECTIVES = ("throughput", "makespan")


@dataclass
class SchedConf:
    """How a -m sweep is planned and submitted (hpc_ft.sched); a single run ignores it.

    policy, order, objective, budgets and array_parallelism hold for the whole sweep (one value);
    est_duration_h, priority and the GPU range may differ per sweep point.
    """

    policy: str = "equal"  # equal | priority | proportional | lp: GPUs per job under the budget
    order: str = "fcfs"  # fcfs | sjf | priority: submission (array task) order
    objective: str = "makespan"  # policy=lp only: makespan | throughput
    budget_gpus: Optional[int] = None  # GPUs in use at once (CPU jobs count one per node); None: no limit
    budget_gpu_hours: Optional[float] = None  # GPU-hours for the whole sweep; None: no limit
    budget_money: Optional[float] = None  # at telemetry.price_per_gpu_hour; None: no limit
    array_parallelism: Optional[int] = None  # jobs running at once (the array's %N); None: from the plan
    est_duration_h: Optional[float] = None  # wall hours of this job on its requested GPUs; None: from history
    priority: float = 1.0  # larger starts first (order=priority) and gets GPUs first (policy=priority)
    min_gpus: Optional[int] = None  # one-node GPU jobs: fewest GPUs the policy may give (None: as requested)
    max_gpus: Optional[int] = None  # one-node GPU jobs: most GPUs the policy may give (None: as requested)
    parallel_fraction: float = 1.0  # Amdahl's p of the job: 1.0 scales linearly with GPUs
    history: List[str] = field(default_factory=list)  # earlier run or sweep dirs whose reports give durations


# The names tune.sampler, tune.pruner and tune.direction accept (hpc_ft.tune implements each; `hpc-ft tune` and
# Hydra's Optuna sweeper through the hpc_ft launcher read tune.metric).
TUNE_SAMPLERS = ("tpe", "random", "grid")
TUNE_PRUNERS = ("asha", "median", "none")
TUNE_DIRECTIONS = ("minimize", "maximize")


@dataclass
class TuneConf:
    """A hyperparameter search (`hpc-ft tune`): what is optimised, how trials are proposed and stopped early.

    The budget is sched.*'s (budget_gpu_hours, budget_gpus, budget_money); a single run ignores all of it.
    """

    metric: str = "eval_loss"  # the eval metric the search optimises (a key of the objective's metrics)
    direction: str = "minimize"  # minimize | maximize
    trials: int = 16  # trials to run in all (pruned and failed ones count)
    sampler: str = "tpe"  # tpe | random | grid: Optuna's sampler proposing each trial
    pruner: str = "asha"  # asha (successive halving) | median | none: stops bad trials at an evaluation
    min_steps: Optional[int] = None  # the pruner's first rung, in optimizer steps; None: train.eval_every_steps
    reduction_factor: int = 3  # asha: 1 of every reduction_factor trials goes on at each rung
    parallelism: Optional[int] = None  # trials at once; None: sched.budget_gpus // units per trial, else 1
    seed: int = 0  # the sampler's seed
    poll_interval_s: float = 0.5  # how often the driver reads running trials' metrics.jsonl


@dataclass
class ScriptConf:
    """A user's own torchrun script as the payload instead of hpc_ft's loop (README "Bring your own script").

    Set ``path`` (a .py file) or ``module`` (run as ``python -m``), not both; neither: hpc_ft's own loop. The
    script is started by torchrun on every node with the usual RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT
    and reads its own arguments from ``args``; model, data, optim and train.* are then not used.
    """

    path: Optional[str] = None  # the script file; made absolute at submission, so every node finds it
    module: Optional[str] = None  # or a module on the workers' Python path, e.g. my_pkg.train
    args: List[str] = field(default_factory=list)  # the script's own command-line arguments, passed as they are
    # Set by hpc_ft's Hydra launcher for a job of a user's own Hydra app: the app's command (python my_app.py).
    hydra_app: Optional[str] = None


@dataclass
class RunConf:
    name: str = "hpc_ft"  # job name shown by the scheduler
    dir: str = "${hydra:runtime.output_dir}"  # run directory: spec, checkpoints, telemetry, reports


@dataclass
class JobConf:
    # {_target_: ...}: the training task (hpc_ft/train/tasks/): builds data and model, loss, metrics, baseline.
    # Defaulted so job.yaml files written before tasks existed read as the sequence classification they were.
    task: Any = field(default_factory=lambda: {"_target_": DEFAULT_TASK})
    model: Any = MISSING  # {_target_: ..., kwargs}; built by the task (num_labels=, or model=hf's head)
    data: Any = MISSING  # {_target_: ..., kwargs}; a TaskData, or data=files (hpc_ft.data.FileDataSpec)
    optim: Any = MISSING  # {_target_: torch.optim.X, lr: ..., ...}; called with params=
    precision: PrecisionConf = field(default_factory=PrecisionConf)
    peft: PeftConf = field(default_factory=PeftConf)
    resources: ResourcesConf = field(default_factory=ResourcesConf)
    executor: ExecutorConf = field(default_factory=ExecutorConf)
    train: TrainConf = field(default_factory=TrainConf)
    telemetry: TelemetryConf = field(default_factory=TelemetryConf)
    sched: SchedConf = field(default_factory=SchedConf)
    tune: TuneConf = field(default_factory=TuneConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    run: RunConf = field(default_factory=RunConf)
    script: ScriptConf = field(default_factory=ScriptConf)  # a user's own script as the payload (None: the loop)
    dry_run: bool = False  # print the job description and dispatch nothing
    wait: bool = True  # wait for the job and show its report
    preflight: bool = True  # check the request against the Slurm cluster before submitting


@functools.lru_cache(maxsize=1)
def schema_shape() -> tuple:
    """Every field of JobConf, nested groups included, as (name, declared type, sub-shape).

    A JobConf pickled by one hpc_ft and read by another (upgraded while its job was pending) has the shape of the
    first: a node task compares shapes before using the spec it carries (hpc_ft.node.task).
    """
    def shape(c: type) -> tuple:
        out = []
        for f in dataclasses.fields(c):
            sub = f.default_factory if dataclasses.is_dataclass(f.default_factory) else None
            out.append((f.name, str(f.type), shape(sub) if sub is not None else None))
        return tuple(out)

    return shape(JobConf)


def register_configs() -> None:
    """Register the schema so conf/config.yaml can extend it (`defaults: [hpc_ft_schema, ...]`), and the resolver
    that names run and sweep dirs."""
    from hpc_ft.config.fresh_dir import register_resolver

    register_resolver()  # conf/config.yaml names run and sweep dirs with it
    register_schema()


def register_schema() -> None:
    """Store JobConf in Hydra's ConfigStore as ``hpc_ft_schema`` (what a composition of conf/ reads first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="hpc_ft_schema", node=JobConf)
