"""The agent roles: one small module of business rules per role.

* :mod:`.portal` - entry point from portal software (``submit`` from the bridge)
* :mod:`.provider`, :mod:`.platform` - routers
* :mod:`.instance` - a cluster: where ``add_user`` becomes accounts, directories and limits
* :mod:`.accounts` - the account agent and its backends (local SQLite, LDAP, FreeIPA)
* :mod:`.filesystem` - home and project directories, quotas
* :mod:`.scheduler` - Slurm accounts, associations, limits and usage (or a local ledger)
"""
