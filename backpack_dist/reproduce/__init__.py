"""`python -m backpack_dist.reproduce` (or `bash slurm/reproduce_paper.sh`): the paper's whole study
as one plan of SLURM jobs - data prep when the MDS data is missing, the six trainings with the
paper's recipe (and, on request, the sense-count ablation), an eval of each final checkpoint and a
Table-2 comparison - that is either printed with its cost (--dry_run) or submitted with its
afterok dependencies.

plan.py builds the plan (one list of Job records), cost.py estimates GPU-hours, slurm.py turns a
Job into its sbatch command and submits the plan, show.py prints it."""
