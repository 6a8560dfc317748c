-- wrk script: POST /v1/charges (or the bare floor's /charge) with a unique Idempotency-Key per
-- request, keys (agents) taken round-robin from a file, one per line.
--
--   KEYS_FILE=keys.txt TARGET=service REFUSE_EVERY=10 wrk -s charges.lua ...
--
-- TARGET=service sends {"amount": ...} with the key as a bearer token; TARGET=bare sends
-- {"agent_id": ..., "amount": <nano-units>} (the line is the agent id). REFUSE_EVERY=N makes
-- every Nth request ask for more than the agents' per-charge limit. done() prints one JSON line.

local threads = {}
local counter = 1

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

function init(args)
    keys = {}
    for line in io.lines(os.getenv("KEYS_FILE")) do
        table.insert(keys, line)
    end
    target = os.getenv("TARGET") or "service"
    refuse_every = tonumber(os.getenv("REFUSE_EVERY") or "0")
    run = os.getenv("RUN_ID") or tostring(os.time())
    n = 0
    statuses = {}
    -- Threads start at different keys so that one hot key is shared, many keys are spread.
    offset = (id - 1) * 7919
end

function request()
    n = n + 1
    local key = keys[((n + offset) % #keys) + 1]
    local refused = refuse_every > 0 and n % refuse_every == 0
    local body, headers
    if target == "bare" then
        body = '{"agent_id":"' .. key .. '","amount":' .. (refused and "999999999999" or "1000") .. "}"
        headers = {["Content-Type"] = "application/json"}
    else
        body = '{"amount":"' .. (refused and "5" or "0.000001") .. '"}'
        headers = {
            ["Content-Type"] = "application/json",
            ["Authorization"] = "Bearer " .. key,
            ["Idempotency-Key"] = run .. "-" .. id .. "-" .. n,
        }
    end
    return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local counts = {}
    for _, thread in ipairs(threads) do
        local thread_statuses = thread:get("statuses")
        for status, count in pairs(thread_statuses) do
            counts[tostring(status)] = (counts[tostring(status)] or 0) + count
        end
    end
    local parts = {}
    for status, count in pairs(counts) do
        table.insert(parts, '"' .. status .. '":' .. count)
    end
    io.write(string.format(
        '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"statuses":{%s}}\n',
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, summary.errors.connect, summary.errors.read,
        summary.errors.write, summary.errors.timeout, table.concat(parts, ",")))
end
