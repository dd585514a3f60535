# The third run on a lent GPU machine (results/README.md, "On a GPU"): the GPU tests (conv
# ResNets among them) and the hard conv suites on the GPU, many instances at once sharing it.
# Needs .whl/ (highspy for Python 3.12) and .gpubench/ (copies of ../shared/benchmarks/
# sri_resnet_a with open15.csv: the 15 timeouts of results/sri_resnet_a.csv with the best
# bounds, and oval21 with first15.csv: its first 15 instances) carried along.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, numpy, highspy, onnx, onnxruntime; print(torch.__version__, torch.cuda.is_available(), numpy.__version__, onnxruntime.__version__)"
lscpu | grep -E "Model name|^CPU\(s\)"
suite() {  # NAME CSV JOBS: every instance at 120 s on the GPU, JOBS at once
  (sleep 90; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv) &
  timeout 300 python3 -m bnbver.cli run-suite .gpubench/$1/$2 --out $OUT/$1_gpu.csv \
    --max-timeout 120 --jobs $3 --option device=cuda > $OUT/$1_gpu.log 2>&1
}
(timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc $?" >> $OUT/gpu_tests.log) &
suite sri_resnet_a open15.csv 15
wait
tail -3 $OUT/gpu_tests.log
suite oval21 first15.csv 15
cut -d, -f2-5,7,9 $OUT/*_gpu.csv
