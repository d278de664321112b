-- wrk script for the read cases of `make bench` (bench/run.sh): the same GET
-- on every request. Environment:
--   BENCH_TOKEN      bearer token
--   BENCH_PATH       path and query, e.g. /v0/users?limit=100
--   BENCH_WORKSPACE  X-Blaxel-Workspace (not sent when empty)
-- No response() callback: it would copy every body (megabytes for an
-- unpaged list) into Lua; wrk counts non-2xx answers itself.

local headers = { ["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "") }
local workspace = os.getenv("BENCH_WORKSPACE") or ""
if workspace ~= "" then
  headers["X-Blaxel-Workspace"] = workspace
end
local path = os.getenv("BENCH_PATH") or "/"
local req

-- Built in init, not at load: wrk sets the Host header a thread sends only
-- after loading the script (without it net/http answers 400).
function init(args)
  req = wrk.format("GET", path, headers)
end

function request()
  return req
end
