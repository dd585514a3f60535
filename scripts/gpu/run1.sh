# The first command run on the lent GPU machine (results/README.md, "On a GPU"): GPU tests,
# the whole suite, and CPU vs GPU node throughput. Needs .whl/ (highspy for Python 3.12) and
# .gpubench/mnist_fc (a copy of ../shared/benchmarks/mnist_fc) carried along.
# (The recorded run called bnbver.verify through a small wrapper printing the same fields
# as `bnbver verify`'s summary line, which now carries the seconds per phase too.)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, numpy, highspy, onnx, onnxruntime; print(torch.__version__, torch.cuda.is_available(), numpy.__version__)"
lscpu | grep -E "Model name|^CPU\(s\)"
B=.gpubench/mnist_fc
verify() {  # NET PROP DEVICE [--option ...]: one 60 s run, summary line to $OUT/<name>.log
  local net=$1 prop=$2 device=$3 name="s_$1_$2_$3${4:+_$(echo "$5" | tr '=' '_')}"
  shift 3
  python3 -m bnbver.cli verify $B/onnx/mnist-net_$net.onnx $B/vnnlib/prop_$prop.vnnlib \
    --timeout 60 --device $device "$@" > $OUT/$name.log 2>&1
}
verify 256x4 6_0.03 cpu &
verify 256x6 7_0.03 cpu &
(timeout 400 python3 -m pytest -q -p no:cacheprovider -n 8 tests --deselect tests/test_gpu.py > $OUT/full_tests.log 2>&1) &
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > $OUT/gpu_tests.log 2>&1; tail -5 $OUT/gpu_tests.log
verify 256x4 6_0.03 cuda
verify 256x4 6_0.03 cuda --option batch_size=2048
verify 256x6 7_0.03 cuda --option batch_size=1024
wait
tail -4 $OUT/full_tests.log
cat $OUT/s_*.log
