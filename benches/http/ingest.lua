-- wrk script: POST an NDJSON batch (built by make_payload.py) to /v1/entries.
-- Usage: PAYLOAD=/tmp/payload.ndjson wrk -t1 -c32 -d20s -s ingest.lua http://127.0.0.1:8080/v1/entries
local path = os.getenv("PAYLOAD") or "/tmp/wormdb-payload.ndjson"
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/x-ndjson"

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write("status counts (thread-local in the last thread):")
  for status, count in pairs(statuses) do io.write(string.format(" %d=%d", status, count)) end
  io.write("\n")
end
