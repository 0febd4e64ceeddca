"""The notebook platform's instance agent: one JupyterHub (:mod:`.rules`), its engines
(:mod:`.jupyterhub`, the embedded stand-in :mod:`.embedded`) and its session ledger."""
