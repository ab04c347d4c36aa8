-- wrk script for garagebook's POST /api/bookings, GET /api/availability and the calendar reads.
-- BENCH_MODE: "slot" (default): request k books slot BENCH_SLOT_FIRST + (k mod BENCH_SLOT_COUNT),
-- spread over threads without overlap (COUNT=1: every request hits one, already booked, slot);
-- "day": request k books a drop-off on day k mod BENCH_DAY_COUNT after BENCH_DAY_FIRST (Unix
-- seconds of its UTC midnight); "availability": request k asks for that day's availability.
-- The calendar modes (issue 17) read their days from BENCH_DAYS, local dates "YYYY-MM-DD,…" (the
-- days the garage is open): "day_slots": request k asks for day k's free starts of service
-- BENCH_SERVICE_ID; "next_free": the next 50 free times; "booking_page": the booking page of
-- service BENCH_SERVICE_ID on day k.
-- BENCH_THREADS must equal wrk's -t. done() prints one line "BENCH_JSON {...}".
local mode = os.getenv("BENCH_MODE") or "slot"
local first = tonumber(os.getenv("BENCH_SLOT_FIRST") or "1")
local count = tonumber(os.getenv("BENCH_SLOT_COUNT") or "1")
local service = tonumber(os.getenv("BENCH_SERVICE_ID") or "1")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local day_first = tonumber(os.getenv("BENCH_DAY_FIRST") or "0")
local day_count = tonumber(os.getenv("BENCH_DAY_COUNT") or "1")
local days = {}
for i = 0, day_count - 1 do
  days[i] = os.date("!%Y-%m-%d", day_first + i * 86400)
end
local listed = {}
for d in string.gmatch(os.getenv("BENCH_DAYS") or "", "[^,]+") do
  table.insert(listed, d)
end
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
  if mode == "day_slots" then
    return wrk.format("GET", string.format(
      "/api/slots?date=%s&service_id=%d&available=true", listed[k % #listed + 1], service))
  elseif mode == "next_free" then
    return wrk.format("GET", "/api/slots?available=true&limit=50")
  elseif mode == "booking_page" then
    return wrk.format("GET", string.format("/?service=%d&day=%s", service, listed[k % #listed + 1]))
  end
  if mode == "availability" then
    return wrk.format("GET", string.format(
      "/api/availability?service_id=%d&date=%s", service, days[k % day_count]))
  end
  -- A customer and a car per request: the server caps live bookings per e-mail/registration.
  local what
  if mode == "day" then
    what = string.format('"day":"%s"', days[k % day_count])
  else
    what = string.format('"slot_id":%d', first + (k % count))
  end
  local body = string.format(
    '{%s,"service_id":%d,' ..
    '"customer":{"name":"Bench Customer","email":"bench-%d-%d@example.com","phone":"+44 7700 900123"},' ..
    '"vehicle":{"registration":"BT%d %05d","make":"Ford","model":"Focus"},' ..
    '"notes":"rattle from the front left"}',
    what, service, index, sent, index, sent % 100000)
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
