"""Crash tests: a whole site as real ``broadgauge <role> run`` processes, one SIGKILLed."""
