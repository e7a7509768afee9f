-- wrk script: benches/http/ingest.lua (POST an NDJSON batch to /v1/entries),
-- each connection waiting DELAY_MS between its requests (0: none), so a
-- bench can hold a rate below the maximum.
-- Usage: PAYLOAD=... INGEST_LUA=benches/http/ingest.lua DELAY_MS=40 wrk -s paced.lua URL
dofile(os.getenv("INGEST_LUA") or "benches/http/ingest.lua")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
function delay()
  return delay_ms
end
