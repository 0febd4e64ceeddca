"""``broadgauge doctor``: check an agent, or a whole site, and say what to fix.

* :mod:`.findings` - what a check found (ok, warn, fail), the fix, and the report;
* :mod:`.probes` - read-only looks at ports, peers, back ends and files;
* :mod:`.judge` - what those looks mean, in plain words (pure);
* :mod:`.links` - both ends of a link, and an instance's leaf agents (pure);
* :mod:`.backends`, :mod:`.schedulers`, :mod:`.settings` - the back ends an agent's settings name;
* :mod:`.checkup` - every check of one agent (``broadgauge doctor CONFIG``);
* :mod:`.sitewide` - every agent of a topology, and both ends of each link.

Nothing is changed unless ``--fix`` is given, and then only what the report lists as fixable.
"""

# Only the light findings here: the command line imports this package to build its parser.
from broadgauge.doctor.findings import DEFAULT_TIMEOUT, Finding, Repair, Report, Status

__all__ = ["DEFAULT_TIMEOUT", "Finding", "Repair", "Report", "Status"]
