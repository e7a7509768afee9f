"""Sends documents to wormdb's Elasticsearch API with the official Python
client (elasticsearch 8.x, pinned in requirements.txt): `info()` (GET /),
`ping()` (HEAD /), then `helpers.bulk` over the actions of a file.

Usage: es_bulk.py '<options as JSON>'
  url          the node's Elasticsearch URL, http://127.0.0.1:PORT/es
  actions      a file of actions, one JSON object a line, as helpers.bulk
               takes them (`_op_type`, `_index`, `_id`, the document's fields)
  token        optional bearer token
  index        optional default index (`/es/{index}/_bulk`)
  headers      optional headers (e.g. {"VL-Msg-Field": "content"})
  gzip         optional: compress request bodies (Content-Encoding: gzip)
  chunk_size, max_retries, initial_backoff, transport_retries: as the
               client and helpers.bulk take them

Prints one JSON object: the version the node answered, the ping, and what
helpers.bulk returned (successes and errors), plus how long it took.
"""

import json
import sys
import time

from elasticsearch import Elasticsearch, helpers


def main() -> None:
    options = json.loads(sys.argv[1])
    client = Elasticsearch(
        options["url"],
        bearer_auth=options.get("token"),
        max_retries=options.get("transport_retries", 3),
        request_timeout=30,
        http_compress=options.get("gzip", False),
    )
    if options.get("headers"):
        client = client.options(headers=options["headers"])
    info = client.info()
    ping = client.ping()
    with open(options["actions"], encoding="utf-8") as actions_file:
        actions = [json.loads(line) for line in actions_file if line.strip()]
    started = time.monotonic()
    kwargs = {}
    if options.get("index"):
        kwargs["index"] = options["index"]
    success, errors = helpers.bulk(
        client,
        actions,
        chunk_size=options.get("chunk_size", 500),
        max_retries=options.get("max_retries", 0),
        initial_backoff=options.get("initial_backoff", 2),
        max_backoff=options.get("max_backoff", 600),
        raise_on_error=False,
        **kwargs,
    )
    print(
        json.dumps(
            {
                "version": info["version"]["number"],
                "tagline": info["tagline"],
                "ping": ping,
                "success": success,
                "errors": errors,
                "seconds": time.monotonic() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
