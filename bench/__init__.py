"""fdffd's benchmark (``scripts/bench``, ``python -m bench.engine``): not part of the test run.

Each section measures fdffd against an anchor on this machine and returns plain dicts; the
engine prints them as one table (or JSON).  Sections live in their own modules so that more
of them (issue 5: the usual tool chain, parallel scaling, memory) slot in beside these:

- ``rawio``:   a whole job next to ``dd`` with ``O_DIRECT`` on the same tmpfs loop device
- ``payload``: the same with a payload profile, next to mkfs.fat + mcopy + read back + sha256sum
- ``probes``:  ``fdffctl probe`` next to ``f3probe --destructive`` on each simulated fake

Only devices created here through ``fdffd.sim`` are ever touched.
"""
