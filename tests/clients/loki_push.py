"""Sends log lines to a Loki push URL with python-logging-loki (its JSON
push, emitter version 1), one logging record per line, as an application
that logs through it would. Driven by tests/loki.rs.

    loki_push.py URL SPEC.json

SPEC is {"tags": {...}, "records": [{"line": "...", "level": "INFO",
"tags": {...}}, ...]}: the handler's tags, and each record's line, level
and extra tags. Exits 1 if the handler reported a failed send (it prints
"--- Logging error ---" and goes on: python-logging-loki never retries).
"""

import json
import logging
import sys

import logging_loki


def main():
    url, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    handler = logging_loki.LokiHandler(url=url, tags=spec["tags"], version="1")
    failed = []
    report = handler.handleError

    def counted(record):
        failed.append(record)
        report(record)

    handler.handleError = counted
    logger = logging.getLogger("loghub")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    for record in spec["records"]:
        level = logging.getLevelName(record["level"])
        logger.log(level, record["line"], extra={"tags": record["tags"]})
    handler.close()
    print(json.dumps({"sent": len(spec["records"]), "failed": len(failed)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
