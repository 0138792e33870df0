#!/usr/bin/env bash
# Everything that needs a GPU, in one go, logs under ${OUT:-out/gpu}: the GPU test suite, the
# benchmark scenarios (both rasterizers), first-call compile times (cold and warm cache), long-run
# stability, the long fuzz, every example on CUDA, and DDP with two processes sharing one GPU.
# Each step has a time limit so the whole run stays within about nine minutes.
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "== $name: exit $? in $((SECONDS - t0)) s"
}
step tests 150 python3 -m pytest tests -q -p no:cacheprovider -W ignore::DeprecationWarning -m gpu -s
grep -E "passed|failed|FAILED|agree" "$OUT/tests.log" | tail -15
step bench 120 python3 benchmarks/run.py --reps 20 --warmup 5
grep scenario "$OUT/bench.log"
step bench_scale 150 python3 benchmarks/run.py --scenarios scale --reps 5 --warmup 2
grep scenario "$OUT/bench_scale.log"
step profile_scale 60 python3 benchmarks/profile_scale.py --copies 1 4 16 32
grep chain "$OUT/profile_scale.log"
step texture_kernels 60 python3 benchmarks/texture_kernels.py
cat "$OUT/texture_kernels.log"
step profile_step 60 python3 benchmarks/profile_step.py --functions
grep -E "^small|host ms" "$OUT/profile_step.log"
step profile_kernels 60 python3 benchmarks/profile_step.py --scenarios mid_4x1024 --kernels
head -n 20 "$OUT/profile_kernels.log"
CUPY_CACHE_DIR=/tmp/dr-cold step first_call_cold 60 python3 benchmarks/first_call.py
CUPY_CACHE_DIR=/tmp/dr-cold step first_call_warm 60 python3 benchmarks/first_call.py
tail -n1 "$OUT/first_call_cold.log" "$OUT/first_call_warm.log"
step stability 150 python3 benchmarks/stability.py --device cuda --contexts 1000 --steps 10000 --context cuda
cat "$OUT/stability.log" | tail -n 2
step fuzz_long 100 python3 -m benchmarks.fuzz_long --device cuda --examples 10000 --max-seconds 90
tail -n 3 "$OUT/fuzz_long.log"
for ex in triangle render; do
    step "example_$ex" 40 python3 "examples/$ex.py" --device cuda --outdir "$OUT/examples/$ex"
    tail -n 1 "$OUT/example_$ex.log"
done
for ex in cube earth envphong pose; do
    step "example_$ex" 60 python3 "examples/$ex.py" --device cuda --iterations 100 --outdir "$OUT/examples/$ex"
    tail -n 1 "$OUT/example_$ex.log"
done
step ddp_1 60 python3 examples/ddp_fit.py --device cuda --context cuda --iterations 200 --views 8 --resolution 256
step ddp_2 90 python3 -m torch.distributed.run --nproc-per-node 2 examples/ddp_fit.py --device cuda \
    --context cuda --backend gloo --iterations 200 --views 8 --resolution 256
tail -n 1 "$OUT/ddp_1.log" "$OUT/ddp_2.log"
