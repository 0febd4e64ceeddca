"""The chaos soak of issue 14: a seeded job mix, a seeded fault schedule, and the invariants.

* :mod:`.mix` plans the jobs (and the backend state they must leave) and drives them
  through the bridge with bounded concurrency;
* :mod:`.schedule` plans the faults and runs them through a :class:`.schedule.FaultInjector`;
* :mod:`.invariants` checks, after the run, that nothing was lost or run twice, that every
  audit chain verifies, and that memory and boards stayed bounded;
* :mod:`.loopback` is the site the soak runs on today (real processes on loopback, real
  slapd and Slurm accounting) and its injector (kill and restart only);
* :mod:`.soak` ties them together; ``test_soak.py`` is the CI soak and ``bench/chaos.py``
  prints the figures.
"""
