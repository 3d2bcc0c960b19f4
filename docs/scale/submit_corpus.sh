#!/usr/bin/env bash
# Submit a simulated corpus as a SLURM array job (one shard per task) and the merge job that runs after every task
# succeeded. Settings are environment variables (see simulate_array.sbatch and merge.sbatch), e.g.
#
#   CORPUS_DIR=/scratch/$USER/corpus N_SAMPLES=3200 SHARDS=64 SIM_ARGS="--engine sionna --size 100 --frames 32" \
#       docs/scale/submit_corpus.sh
#
# Extra sbatch options for both jobs (partition, account, ...) go in SBATCH_ARGS.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${CORPUS_DIR:?set CORPUS_DIR to a folder every node sees}"
export CORPUS_DIR N_SAMPLES=${N_SAMPLES:-1000} SEED=${SEED:-0} SIM_ARGS=${SIM_ARGS:-} TOMOFORMER=${TOMOFORMER:-tomoformer}
SHARDS=${SHARDS:-16}
if [ "$SHARDS" -gt "$N_SAMPLES" ]; then
    echo "SHARDS=$SHARDS is more than N_SAMPLES=$N_SAMPLES: every shard needs a sample" >&2
    exit 2
fi
mkdir -p "$CORPUS_DIR"
# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
array=$(sbatch --parsable ${SBATCH_ARGS:-} --array=0-$((SHARDS - 1)) "$here/simulate_array.sbatch")
array=${array%%;*}  # --parsable prints "jobid" or "jobid;cluster"
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency=afterok:"$array" "$here/merge.sbatch")
echo "submitted array job $array ($SHARDS shards of $N_SAMPLES samples) and merge job ${merge%%;*}"
