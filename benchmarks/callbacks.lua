-- wrk script for bench_callbacks: POST one result (the body in file $BJC_BODY) for
-- node-1 ... node-$BJC_NODES of execution $BJC_EID in turn, and print a JSON summary.
local f = assert(io.open(os.getenv("BJC_BODY"), "rb"))
local body = f:read("*a")
f:close()
local eid = os.getenv("BJC_EID")
local nodes = tonumber(os.getenv("BJC_NODES"))
local i = 0

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

request = function()
  i = i % nodes + 1
  return wrk.format(nil, "/report/node-" .. i .. "/" .. eid .. "/result")
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BJC-RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
