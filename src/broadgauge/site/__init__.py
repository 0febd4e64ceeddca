"""A whole site from one file: the topology (:mod:`.topology`) and what it builds (:mod:`.build`).

``broadgauge site init topology.toml`` reads the agents and links of a site and writes every
agent's config, with every invite exchanged, into one folder per host.  The demo builds its
in-process network through the same code.
"""
