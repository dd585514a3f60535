# The seed experiments sharded over the GPU machine's 16 cores (results/seeds.md):
# NET=mnist_fc20x3 EXTRA=mnist_fc8x3 T=45 bash scripts/gpu/run2.sh ran the first call with
# milp:extended as EXTRA's only run; the second, NET=mnist_fc40x3 EXTRA=mnist_pool, ran this
# version. Every shard is one process with one thread; rows and logs come back as one tarball.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
T=${T:-45}
mkdir -p logs
shards() {  # NET METHOD TIGHTEN: images 8000..8019 as two background shards of 10
  local name
  for first in 0 10; do
    name="$1_${2//:/-}_$3_${first}"
    python3 scripts/seed_experiments.py .gpubench --nets "$1" --methods "$2" --tighten "$3" \
      --images 10 --first $first --timeout "$T" --no-visualize --out-name "$name.md" \
      > "logs/$name.log" 2>&1 &
  done
}
for cfg in "bab none" "bab lp" "milp:bigm none" "milp:bigm lp" "milp:partition:2 none"; do
  shards "$NET" $cfg
done
if [ -n "$EXTRA" ]; then
  for cfg in "bab lp" "milp:bigm none" "milp:bigm lp"; do
    shards "$EXTRA" $cfg
  done
fi
wait
tar czf $OUT/seeds.tgz results/seeds/*.csv logs
grep -h "img" logs/*.log | awk '{print $1, $4, $5, $6}' | sort | uniq -c | sort -k2 | head -40
