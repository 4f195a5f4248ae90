#!/usr/bin/env bash
# Issue 6's GPU checks as one prepared command for one device lease, most important first, all
# inside BUDGET seconds (default 540, leaving room in the 15-minute lease for the machine's start):
#   1. System B training speed on CUDA: 3 x ResNet50 at 224 px, bf16 + channels_last, batch 64 and
#      256, the real KREM loader against in-memory tensors (BENCHMARKS.md section system_b_gpu);
#   2. System B on real BACH, 5 contiguous folds, configs/liu2022/bach4_gpu_short.yaml; folds that
#      finish are kept, and running the script again continues the run (--resume);
#   3. the speed again with torch.compile, if at least COMPILE_S seconds are left.
# Everything comes back under $OUT: BENCHMARKS.md, session.log, nvidia-smi.txt and
# sysb_gpu_short.tar.gz (the run's configs, logs, predictions and report; no weights, no cache).
#
# On the device (its python3 has every dependency; the BACH copies travel in the ignored localdata/):
#   here:   mkdir -p localdata && cp -r ../shared/data/bach localdata/
#   device: run(command="bash benchmarks/device_session.sh", carry=["localdata"], timeout_s=600)
#   here:   tar xzf <files_at>/sysb_gpu_short.tar.gz -C runs (its report and metrics were written on
#           the device, with that machine's description: do not re-evaluate here), cp
#           <files_at>/BENCHMARKS.md . (check the diff), then add runs/sysb_gpu_short to
#           python -m benchmarks.bench_system_b --bach-runs ... (section system_b_bach).
# Smoke test of this script on the CPU (tiny model, 2 iterations of fold 1, no torch.compile,
# nothing written to BENCHMARKS.md; ~4 minutes):
#   SMOKE=1 OUT=/tmp/device_smoke PYTHON=.venv/bin/python bash benchmarks/device_session.sh
set -u
cd "$(dirname "$0")/.."
start=$SECONDS
BUDGET=${BUDGET:-540}
OUT=${OUT:?OUT must name the folder that receives the results}
DATA=${DATA:-$( [ -d localdata/bach ] && echo localdata/bach || echo ../shared/data/bach )}
RUN=runs/sysb_gpu_short
PYTHON=${PYTHON:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export HISTOBREAST_SHARED_DATA=$(dirname "$DATA")   # the benchmarks' real BACH copies
mkdir -p "$OUT" runs
exec > >(tee -a "$OUT/session.log") 2>&1

left() { echo $(( BUDGET - (SECONDS - start) )); }
until_reserve() { local s=$(( $(left) - $1 )); echo $(( s > 1 ? s : 1 )); }  # seconds to run, keeping $1 back
step() { echo; echo "== [$(( SECONDS - start )) s] $*"; }

if [ "${SMOKE:-0}" = 1 ]; then
    bench=(--device cpu --steps 1 --threads 2 --no-write)
    train=(--fold 1 --set model.kwargs.encoder=resnet18 --set preprocess.input_size=32
           --set train.iterations=2 --set train.eval_every=2 --set train.checkpoint_every=2
           --set train.batch_size=8 --set train.num_workers=0 --set evaluate.bootstrap=10)
    RUN=$OUT/smoke_run
    COMPILE_S=${COMPILE_S:-999999}
else
    bench=(--device cuda --steps 20)
    train=()
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
fi
COMPILE_S=${COMPILE_S:-150}

step "1. System B speed: ${bench[*]}"
timeout "$(until_reserve 60)" "$PYTHON" -m benchmarks.bench_system_b "${bench[@]}" || echo "speed benchmark failed or ran out of time (exit $?)"

step "2. System B on BACH ($DATA), configs/liu2022/bach4_gpu_short.yaml, $(left) s left"
timeout "$(until_reserve 30)" "$PYTHON" -m histobreast train --config configs/liu2022/bach4_gpu_short.yaml \
    --data "$DATA" --out "$RUN" --resume "${train[@]}" || echo "training stopped (exit $?): finished folds are kept"
cat "$RUN"/fold*/msmv/train_log.csv 2>/dev/null | tail -n 3  # the last logged training speed (samples/s)

if [ "$(left)" -ge "$COMPILE_S" ]; then
    step "3. System B speed with torch.compile"
    timeout "$(until_reserve 10)" "$PYTHON" -m benchmarks.bench_system_b "${bench[@]}" --compile \
        || echo "compiled speed benchmark failed or ran out of time (exit $?)"
else
    step "3. skipped: $(left) s left, torch.compile needs $COMPILE_S"
fi

step "collecting results"
cp BENCHMARKS.md "$OUT/" 2>/dev/null
tar czf "$OUT/sysb_gpu_short.tar.gz" -C "$(dirname "$RUN")" --exclude='*.safetensors' --exclude=cache \
    --exclude=checkpoints "$(basename "$RUN")" 2>/dev/null
echo "done in $(( SECONDS - start )) s"
