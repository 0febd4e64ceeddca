"""Real (slapd) and stand-in (FreeIPA) directory servers for backend tests."""
