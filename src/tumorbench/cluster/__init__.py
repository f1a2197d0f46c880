"""Running the grid on many machines: `tumorbench slurm` and `tumorbench grid`.

It owns the sbatch scripts (`slurm_scripts`) and their submission and follow-up (`slurm`), what a DVC
remote's run-cache holds (`runcache`), the commit a task clones (`gitcheck`) and sharing the grid
among workers (`grid`). It sits beside `report`: it may import `core`, `data`, `models` and
`validity`, and neither it nor `report` imports the other.
"""
