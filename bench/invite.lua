-- wrk script for `make bench` (bench/run.sh): POST /v0/users with a different
-- email on every request, so each invite creates a fresh row instead of
-- refreshing one. Environment:
--   BENCH_TOKEN  bearer token (empty for the bare-Echo baseline; it ignores it)
--   BENCH_RUN    tag unique per wrk invocation (emails stay unique across the
--                warm-up and every round against the same server)
--   BENCH_WORKSPACE  X-Blaxel-Workspace [bench]
-- Non-2xx answers are counted here too and printed by done() as
-- "lua_non2xx: N" (wrk itself prints "Non-2xx or 3xx responses: N").

local token = os.getenv("BENCH_TOKEN") or ""
local run = os.getenv("BENCH_RUN") or "0"
local workspace = os.getenv("BENCH_WORKSPACE") or "bench"

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  non2xx = 0
  headers = {
    ["Content-Type"] = "application/json",
    ["X-Blaxel-Workspace"] = workspace,
  }
  if token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  suffix = "-" .. tostring(id) .. "-" .. run .. "@bench.test\"}"
end

function request()
  counter = counter + 1
  local body = "{\"email\":\"u" .. counter .. suffix
  return wrk.format("POST", "/v0/users", headers, body)
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if non2xx <= 3 then
      io.stderr:write("non-2xx " .. status .. ": " .. string.sub(body or "", 1, 200) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (t:get("non2xx") or 0)
  end
  io.write(string.format("lua_non2xx: %d\n", total))
end
