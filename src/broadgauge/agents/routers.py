"""Provider and platform agents: routers with no business rules of their own.

A provider (a research centre) routes jobs to its platforms; a platform (a class of
infrastructure, such as "the clusters") routes them to the instance that serves the job.
Both do it the same way: the job's destination names the whole path, and the runtime
(:mod:`broadgauge.runtime.agent`) passes each job to the next agent on it, records it on both
boards and sends the result back up.  What a router adds is *refusal*: it forwards only jobs
that come from above it (see :mod:`broadgauge.jobs.directions`), and it answers health,
diagnostics and restart requests for the agents beneath it.

A job addressed to a router itself fails with ``No default runner for job``, as in
OpenPortal.
"""
