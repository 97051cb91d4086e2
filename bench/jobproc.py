"""Run one job the way the station daemon does: in a process that has already imported fdffd.

``python -m bench.jobproc --config FILE DEVICE`` prints one JSON object: the record, and the
wall and CPU seconds (user, system; all threads) spent inside the job only.  Start-up (the
interpreter, imports) is measured apart, since a daemon pays it once, not per drive.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("device")
    args = p.parse_args()
    t0 = time.perf_counter()
    from fdffd.audit import AuditLog, StationKeys
    from fdffd.config import load_config
    from fdffd.errors import UsageError
    from fdffd.job.pipeline import process_path
    from fdffd.log import configure

    configure(json=True, level="error")
    cfg = load_config(args.config)
    try:
        keys = StationKeys.load(cfg.station.state_dir)
    except UsageError:  # a bench drive's fresh state dir: keys as `fdffctl keys init` makes them
        keys = StationKeys.init(cfg.station.state_dir)
    startup = time.perf_counter() - t0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t1 = time.perf_counter()
    outcome = process_path(cfg, args.device, sealer=keys.sealer)
    wall = time.perf_counter() - t1
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    AuditLog(cfg.audit_log, keys).append(outcome.record)
    json.dump(
        {
            "record": outcome.record.to_json_dict(),
            "exit_code": outcome.exit_code,
            "wall": wall,
            "user": r1.ru_utime - r0.ru_utime,
            "sys": r1.ru_stime - r0.ru_stime,
            "startup": startup,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
