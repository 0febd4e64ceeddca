"""Offers, reservations and sessions: from "yes, it can run here" to "it is running".

The IVOA ExecutionBroker step on top of the seed's planner, in Calycopis's API shape
(``POST /requests``, ``/offersets``, ``/sessions``, ``/direct``), joined to provisioning over
the agent network: :mod:`.model` (requests and their JSON, pure), :mod:`.records` (what is
stored), :mod:`.booking` (the store every planner process shares, SQLite or PostgreSQL) and
:mod:`.broker` (offers, acceptance and the session's phases).
"""
