-- wrk script of `flashsale bench http`: builds each request of a scenario, counts the
-- answers by status (and the 201 answers that are PAID orders) and prints one JSON
-- line at the end, read by the bench.
--
-- wrk -s bench.lua URL -- MODE TOKENS [ARGS...]
--   healthz                              GET /healthz
--   coupon  TOKENS COUPON_ID             POST /api/v1/coupons/COUPON_ID/issue, a random user each
--   order   TOKENS FIRST_VARIANT COUNT MAX_LINES
--                                        POST /api/v1/orders (pay now), a random user each,
--                                        1..MAX_LINES distinct variants of FIRST_VARIANT ..
--                                        FIRST_VARIANT+COUNT-1, one unit of each
--   page    TOKENS PRODUCT_ID            GET /api/v1/products/PRODUCT_ID (public: no token sent)
-- TOKENS is a file of access tokens, one a line (one per user).

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
  table.insert(threads, thread)
end

local mode, tokens, ntokens, a1, a2, a3
local json_headers

function init(args)
  mode = args[1]
  statuses = {}
  paid = 0
  math.randomseed(os.time() * 1000 + index * 7919)
  tokens = {}
  if args[2] ~= nil then
    for line in io.lines(args[2]) do
      if #line > 0 then
        tokens[#tokens + 1] = line
      end
    end
  end
  ntokens = #tokens
  a1, a2, a3 = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  json_headers = { ["Content-Type"] = "application/json" }
end

local function authorized()
  json_headers["Authorization"] = "Bearer " .. tokens[math.random(ntokens)]
  return json_headers
end

local function order_body()
  local lines = math.random(a3)
  local chosen, items = {}, {}
  while #items < lines do
    local v = a1 + math.random(a2) - 1
    if not chosen[v] then
      chosen[v] = true
      items[#items + 1] = '{"variant_id":' .. v .. ',"quantity":1}'
    end
  end
  return '{"items":[' .. table.concat(items, ",") .. '],"pay":true}'
end

function request()
  if mode == "coupon" then
    return wrk.format("POST", "/api/v1/coupons/" .. a1 .. "/issue", authorized(), "")
  elseif mode == "order" then
    return wrk.format("POST", "/api/v1/orders", authorized(), order_body())
  elseif mode == "page" then
    return wrk.format("GET", "/api/v1/products/" .. a1)
  end
  return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 201 and body ~= nil and string.find(body, '"status":"PAID"', 1, true) then
    paid = paid + 1
  end
end

function done(summary, latency, requests)
  local counts, total_paid = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    total_paid = total_paid + thread:get("paid")
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'FLASHSALE_BENCH {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d},'
      .. '"statuses":{%s},"paid":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    table.concat(parts, ","), total_paid))
end
