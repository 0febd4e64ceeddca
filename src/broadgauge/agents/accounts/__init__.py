"""The account agent and its directory backends (local SQLite, LDAP, FreeIPA)."""
