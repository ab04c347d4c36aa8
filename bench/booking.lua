-- wrk script for garagebook's POST /api/bookings.
-- BENCH_SLOT_FIRST / BENCH_SLOT_COUNT: request k goes to slot FIRST + (k mod COUNT), spread
-- over threads without overlap (COUNT=1: every request hits one, already booked, slot).
-- BENCH_THREADS must equal wrk's -t. done() prints one line "BENCH_JSON {...}".
local first = tonumber(os.getenv("BENCH_SLOT_FIRST") or "1")
local count = tonumber(os.getenv("BENCH_SLOT_COUNT") or "1")
local service = tonumber(os.getenv("BENCH_SERVICE_ID") or "1")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  sent = 0
  statuses = {}
  by_reservation = 0
  by_database = 0
end

function request()
  local k = index + sent * nthreads
  sent = sent + 1
  local body = string.format(
    '{"slot_id":%d,"service_id":%d,' ..
    '"customer":{"name":"Bench Customer","email":"bench-%d-%d@example.com","phone":"+44 7700 900123"},' ..
    '"vehicle":{"registration":"BT%d %05d","make":"Ford","model":"Focus"},' ..
    '"notes":"rattle from the front left"}',
    first + (k % count), service, index, sent, index, sent % 100000)
  return wrk.format("POST", "/api/bookings", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 409 then
    if string.find(body, '"rejected_by":"reservation"', 1, true) then
      by_reservation = by_reservation + 1
    else
      by_database = by_database + 1
    end
  end
end

function done(summary, latency, requests)
  local codes = {}
  local reservation, database = 0, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      codes[status] = (codes[status] or 0) + n
    end
    reservation = reservation + thread:get("by_reservation")
    database = database + thread:get("by_database")
  end
  local parts = {}
  for status, n in pairs(codes) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local pct = {}
  for _, p in ipairs({1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9}) do
    table.insert(pct, string.format('"%g":%d', p, latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
    '"rejected_by":{"reservation":%d,"database":%d},"latency_us":{%s,"max":%d,"mean":%.1f},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}}\n',
    summary.requests, summary.duration, table.concat(parts, ","), reservation, database,
    table.concat(pct, ","), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status))
end
