# The first command run on the lent GPU machine (results/README.md, "On a GPU"): GPU tests,
# the whole suite, and CPU vs GPU node throughput. Needs .whl/ (highspy for Python 3.12) and
# .gpubench/mnist_fc (a copy of ../shared/benchmarks/mnist_fc) carried along.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, numpy, highspy, onnx, onnxruntime; print(torch.__version__, torch.cuda.is_available(), numpy.__version__)"
lscpu | grep -E "Model name|^CPU\(s\)"
python3 scripts/gpu/runm.py .gpubench/mnist_fc 256x4 6_0.03 60 device=cpu > $OUT/s4_cpu.log 2>&1 &
python3 scripts/gpu/runm.py .gpubench/mnist_fc 256x6 7_0.03 60 device=cpu > $OUT/s6_cpu.log 2>&1 &
(timeout 400 python3 -m pytest -q -p no:cacheprovider -n 8 tests --deselect tests/test_gpu.py > $OUT/full_tests.log 2>&1) &
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > $OUT/gpu_tests.log 2>&1; tail -5 $OUT/gpu_tests.log
python3 scripts/gpu/runm.py .gpubench/mnist_fc 256x4 6_0.03 60 device=cuda > $OUT/s4_cuda.log 2>&1
python3 scripts/gpu/runm.py .gpubench/mnist_fc 256x4 6_0.03 60 device=cuda batch_size=2048 > $OUT/s4_cuda2048.log 2>&1
python3 scripts/gpu/runm.py .gpubench/mnist_fc 256x6 7_0.03 60 device=cuda batch_size=1024 > $OUT/s6_cuda1024.log 2>&1
wait
tail -4 $OUT/full_tests.log
cat $OUT/s*.log
