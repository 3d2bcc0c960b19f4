"""The SLURM scripts of docs/scale/: the corpus array job and its merge run through a local stand-in for `sbatch`
(tasks in sequence, SLURM's array variables set) and give the single-process store; the DDP training script's
`srun tomoformer train` command line parses to the intended Lightning settings."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.test_shards import assert_same_store
from tomoformer.cli import build_parser, main

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "scale"
TOMOFORMER = f"{shlex.quote(sys.executable)} -m tomoformer.cli"

# A stand-in for sbatch: runs the job at once (array tasks in sequence, with SLURM's variables) and prints its id
# like --parsable. A failed task fails the submission, so nothing that depends on it runs.
FAKE_SBATCH = r"""#!/usr/bin/env bash
set -euo pipefail
array=""
while [ $# -gt 0 ]; do
    case "$1" in
        --array=*) array=${1#--array=} ;;
        --*) ;;
        *) break ;;
    esac
    shift
done
script=$1; shift
state=${SBATCH_STANDIN_DIR:?}
job=$(( $(cat "$state/next" 2>/dev/null || echo 1000) ))
echo $((job + 1)) > "$state/next"
echo "$job $array $(basename "$script")" >> "$state/jobs"
export SLURM_JOB_ID=$job SLURM_CPUS_PER_TASK=1
if [ -n "$array" ]; then
    lo=${array%-*}; hi=${array#*-}
    for ((task = lo; task <= hi; task++)); do
        SLURM_ARRAY_JOB_ID=$job SLURM_ARRAY_TASK_ID=$task SLURM_ARRAY_TASK_MIN=$lo SLURM_ARRAY_TASK_MAX=$hi \
            SLURM_ARRAY_TASK_COUNT=$((hi - lo + 1)) bash "$script" "$@" > "$state/job-${job}_$task.out" 2>&1
    done
else
    bash "$script" "$@" > "$state/job-$job.out" 2>&1
fi
echo "$job"
"""

FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "${SBATCH_STANDIN_DIR:?}/srun-args"
"""


@pytest.fixture
def standins(tmp_path: Path) -> dict[str, str]:
    """Environment with the stand-ins for sbatch and srun first on PATH."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_STANDIN_DIR": str(state)}
    env["TOMOFORMER"] = TOMOFORMER
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)
    return env


def test_array_job_and_merge_give_the_single_process_store(tmp_path: Path, standins: dict[str, str]) -> None:
    sim_args = "--frames 3 --size 16 --chunk 2 --style mixed --measured-fraction 0.5"
    full = tmp_path / "full.zarr"
    assert main(["simulate", *sim_args.split(), "--n", "7", "--seed", "9", "--out", str(full), "--no-progress"]) == 0
    corpus = tmp_path / "corpus"
    env = {**standins, "CORPUS_DIR": str(corpus), "N_SAMPLES": "7", "SEED": "9", "SHARDS": "3", "SIM_ARGS": sim_args}
    done = subprocess.run(["bash", str(SCRIPTS / "submit_corpus.sh")], env=env, capture_output=True, text=True)
    state = Path(standins["SBATCH_STANDIN_DIR"])
    logs = "\n".join(p.read_text() for p in sorted(state.glob("job-*.out")))
    assert done.returncode == 0, done.stderr + logs
    assert "array job 1000 (3 shards of 7 samples) and merge job 1001" in done.stdout
    jobs = (state / "jobs").read_text().splitlines()
    assert jobs == ["1000 0-2 simulate_array.sbatch", "1001  merge.sbatch"]
    assert_same_store(full, corpus / "corpus.zarr")
    assert not (corpus / "shards").exists()  # removed after the merge validated


def test_a_rerun_array_task_resumes_and_too_many_shards_are_refused(tmp_path: Path, standins: dict[str, str]) -> None:
    corpus = tmp_path / "corpus"
    sim_args = "--frames 2 --size 16 --chunk 2"
    env = {**standins, "CORPUS_DIR": str(corpus), "N_SAMPLES": "4", "SIM_ARGS": sim_args, "SLURM_ARRAY_TASK_MIN": "0"}
    env.update(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2")
    script = str(SCRIPTS / "simulate_array.sbatch")
    first = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "wrote shard 1/2 (samples 2 to 3 of 4)" in first.stdout
    again = subprocess.run(["bash", script], env=env, capture_output=True, text=True)  # a requeued task
    assert again.returncode == 0 and "is already complete" in again.stdout, again.stderr
    env.update(SHARDS="5")
    refused = subprocess.run(["bash", str(SCRIPTS / "submit_corpus.sh")], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "every shard needs a sample" in refused.stderr


def test_ddp_script_runs_srun_tomoformer_train_with_lightning_ddp_flags(tmp_path: Path, standins: dict[str, str]):
    env = {**standins, "DATA": str(tmp_path / "train.zarr"), "RUN_DIR": str(tmp_path / "run")}
    env.update(SLURM_NNODES="2", SLURM_NTASKS_PER_NODE="4", SLURM_CPUS_PER_TASK="8", TRAIN_ARGS="--max-steps 100")
    done = subprocess.run(["bash", str(SCRIPTS / "train_ddp.sbatch")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    argv = (Path(standins["SBATCH_STANDIN_DIR"]) / "srun-args").read_text().splitlines()
    prefix = shlex.split(TOMOFORMER)
    assert argv[: len(prefix)] == prefix
    args = build_parser().parse_args(argv[len(prefix) :])
    assert args.command == "train" and args.data == env["DATA"] and args.out == env["RUN_DIR"]
    assert (args.devices, args.num_nodes, args.strategy, args.accelerator) == ("4", 2, "ddp", "gpu")
    assert (args.num_workers, args.max_steps) == (7, 100)
    from tomoformer.cli.train_cmd import train_config_from_args

    config = train_config_from_args(args)  # the values pass the training config's own checks
    assert (config.devices, config.num_nodes, config.strategy) == (4, 2, "ddp")
