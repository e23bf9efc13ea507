#!/bin/bash
# A memtwin sweep on Slurm: an array job runs one shard per task
# (memtwin run --shard I/N, I = SLURM_ARRAY_TASK_ID of --array=0-(N-1)), and
# a job that depends on the whole array merges the shards into what one
# machine would have written (memtwin merge).
#
#   bash examples/slurm-array.sh [SCENARIO] [SHARDS]     # on a login node: submits both
#
# SCENARIO defaults to scenarios/free-page-hints.yaml (8 runs), SHARDS to 4.
# Run it from a directory on a filesystem the compute nodes share, where
# memtwin is installed (npm install, or npx memtwin from its package):
# shards go to out/<name>-shard-I-of-N/, the merged sweep to out/<name>/,
# the jobs' logs to out/slurm-*.log. A task that fails can be run again
# (scontrol requeue JOBID_I): its shard resumes, keeping the runs it had
# finished; then submit the merge again:
#   bash examples/slurm-array.sh merge-only [SCENARIO] [SHARDS]
set -euo pipefail

MEMTWIN=${MEMTWIN:-npx memtwin}

case "${1:-}" in
  shard) # one array task: shard SLURM_ARRAY_TASK_ID of SHARDS
    exec $MEMTWIN run "$SCENARIO" --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" \
      --workers "${SLURM_CPUS_PER_TASK:-1}" --out "out/$NAME-shard-$SLURM_ARRAY_TASK_ID-of-$SHARDS"
    ;;
  merge) # after every task succeeded: exit status 2 and one line if a shard is missing or unfinished
    shards=()
    for ((i = 0; i < SHARDS; i++)); do shards+=("out/$NAME-shard-$i-of-$SHARDS"); done
    exec $MEMTWIN merge "${shards[@]}" -o "out/$NAME"
    ;;
esac

# On the login node: submit the array, and the merge after it.
if [ "${1:-}" = merge-only ]; then
  shift
  only_merge=1
fi
SCENARIO=${1:-scenarios/free-page-hints.yaml}
SHARDS=${2:-4}
NAME=$(basename "$SCENARIO" .yaml)
mkdir -p out
export SCENARIO SHARDS NAME MEMTWIN
if [ -z "${only_merge:-}" ]; then
  array=$(sbatch --parsable --job-name="memtwin-$NAME" --array="0-$((SHARDS - 1))" \
    --cpus-per-task=2 --mem=4G --output="out/slurm-$NAME-%a.log" --export=ALL "$0" shard)
  echo "shards: job $array (tasks 0-$((SHARDS - 1)))"
  dependency=(--dependency="afterok:$array")
else
  dependency=()
fi
merge=$(sbatch --parsable --job-name="memtwin-$NAME-merge" ${dependency[@]+"${dependency[@]}"} \
  --cpus-per-task=1 --mem=1G --output="out/slurm-$NAME-merge.log" --export=ALL "$0" merge)
echo "merge: job $merge; results in out/$NAME/ (report.html, result.json, summary.csv)"
