"""Multi-host tests on one machine: agents in network namespaces, and network faults."""
