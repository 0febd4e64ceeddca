"""The scheduler agent and its backends (Slurm through sacctmgr/sacct, or a local ledger)."""
