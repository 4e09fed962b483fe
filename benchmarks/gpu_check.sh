#!/usr/bin/env bash
# The GPU checks in one prepared run, for a machine with a CUDA GPU (CI never runs this).
#
#   bash benchmarks/gpu_check.sh wheels     # here, with network: pure-Python wheels the GPU machine may lack -> .whl/
#   bash benchmarks/gpu_check.sh run OUT    # there: installs .whl/ if present, then writes every result into OUT
#   bash benchmarks/gpu_check.sh quick OUT  # there: steps (1) and (2) only, ~1 min: NVML and a real submit
#
# run: (1) hpc_ft's NVML sampler against nvidia-smi, idle and under load; (2) a real `hpc-ft submit` on the
# local executor on one GPU (synthetic task, bf16, telemetry at 2 Hz) and its run report; (3) the GPU mode of
# the benchmarks (bf16/fp16 vs fp32, MFU, sampler cost, hpc_ft's loop vs the raw step; ~3 min on an H100),
# then the same with torch.compile (train.compile=true for hpc_ft's loop; compiling takes minutes). A failing
# step is reported and the next one still runs; the exit code is the first failure's.
# OUT receives two files (a device run brings back only a few): gpu-check.tgz with every log and JSON, and
# the GPU benchmark table (bench-gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}

case "${1:-}" in
wheels)
  # Versions as in this project's environment; all pure Python (antlr4 4.9.3 exists only as a source archive).
  "$py" -m pip wheel -q --no-deps -w .whl hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 \
    submitit==1.5.4
  ls -l .whl
  exit 0 ;;
run|quick) out=${2:?usage: bash benchmarks/gpu_check.sh run|quick OUT_DIR} ;;
*) echo "usage: bash benchmarks/gpu_check.sh wheels | run OUT_DIR | quick OUT_DIR" >&2; exit 2 ;;
esac

mkdir -p "$out"
work=$(mktemp -d /tmp/hpc_ft-gpu-check.XXXXXX)
if compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hpc_ft-site .whl/*.whl
  export PYTHONPATH="/tmp/hpc_ft-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME CMD...: run, log to OUT/NAME.log, remember the first failure, go on
  local name=$1; shift
  echo "== $name: $*"
  local rc=0
  "$@" > "$work/$name.log" 2>&1 || rc=$?
  tail -n 40 "$work/$name.log"
  echo "== $name: exit $rc"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
  cp "$work/bench-gpu.md" "$out/" 2>/dev/null || true
  tar -czf "$out/gpu-check.tgz" -C "$work" .  # after every step: a run cut short still brings its results back
}

step gpu nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
step nvml "$py" benchmarks/nvml_check.py --out "$work/nvml.json"
job=$(mktemp -d /tmp/hpc_ft-gpu-job.XXXXXX)
step job "$py" -m hpc_ft.cli submit model=mlp data=synthetic precision=bf16 resources=gpu resources.gpus_per_node=1 \
  resources.cpus_per_task=8 resources.mem_gb=32 train.max_steps=3000 train.log_every_steps=500 \
  train.eval_every_steps=0 telemetry.interval_s=0.5 "hydra.run.dir=$job/run"
cp "$job/run/results.json" "$work/job-results.json" 2>/dev/null || true
cp "$job/run/report/report.json" "$work/job-report.json" 2>/dev/null || true
[ "$1" = quick ] && exit "$status"
step bench "$py" benchmarks/run.py --gpu --out "$work/bench-gpu.json"
step bench-compile "$py" benchmarks/run.py --gpu --compile --out "$work/bench-gpu-compile.json"
exit "$status"
