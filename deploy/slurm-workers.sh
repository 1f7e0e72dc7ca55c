#!/bin/bash
# An array of videosweep workers on SLURM: each task takes trials from the shared study until none are left.
#   sbatch --array=0-7 deploy/slurm-workers.sh sweeps/research-grid.yaml
#SBATCH --job-name=videosweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=logs/videosweep-%A_%a.out
set -euo pipefail
# Credentials: ~/.pgpass (chmod 600) or PGPASSWORD from a file only you can read; never on the command line.
export PGPASSFILE="${PGPASSFILE:-$HOME/.pgpass}"
export VIDEOSWEEP_STORAGE="${VIDEOSWEEP_STORAGE:-postgresql://videosweep@db.example.org/optuna}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-https://mlflow.example.org}"
export VIDEOSWEEP_CACHE="${TMPDIR:-/tmp}/videosweep-cache"   # node-local: features are recomputed per node
srun videosweep worker "$1" --gpus auto --workdir "${TMPDIR:-/tmp}/videosweep-$SLURM_ARRAY_TASK_ID"
