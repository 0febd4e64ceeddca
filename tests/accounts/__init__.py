"""Tests of the account backends (local SQLite, LDAP on a real slapd, FreeIPA stand-in)."""
