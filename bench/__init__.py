"""fdffd's benchmark (``scripts/bench``, ``python -m bench.engine``): not part of the test run.

Each section measures fdffd against an anchor on this machine and returns plain dicts; the
engine grades them against issue 5's targets (``targets``), prints them as one table (or JSON)
and writes a plot (``plot``):

- ``rawio``:   a whole job next to ``dd`` with ``O_DIRECT`` on the same tmpfs loop device
- ``payload``: the same with a payload profile, next to the usual chain for the same assurance:
               f3probe + nwipe (``nwipe``: fenced in) + mkfs.fat + mcopy + read back + sha256sum
- ``probes``:  ``fdffctl probe`` next to ``f3probe --destructive`` on each simulated fake
- ``station``: the real daemon under udevd: parallel scaling at USB-stick speed (``throttle``:
               the blkio cgroup), and its memory over many consecutive jobs

Only devices created here through ``fdffd_testkit`` (testkit/) are ever touched.
"""
