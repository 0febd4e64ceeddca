"""The filesystem agent: home and project directories, and their quotas (notes §5.5).

* :mod:`.layout` - the ``[user_volumes]``/``[project_volumes]``/``[quota_engines]`` tables
* :mod:`.tree` - directory operations that cannot be led outside a volume root
* :mod:`.ids` - Unix names to uid/gid (NSS, or the embedded account directory)
* :mod:`.quota`, :mod:`.ledger`, :mod:`.linux` - the quota engines
* :mod:`.agent` - the instruction handlers
"""
