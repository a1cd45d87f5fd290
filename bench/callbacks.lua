-- wrk script for bench/callbacks.py: each request posts the next SMS's callback, read from the file
-- named by the first script argument (one JSON body a line); it counts the answers' HTTP statuses and
-- outcomes, and prints them with the totals as one JSON line when wrk is done. Run with -t 1.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  next_body, wrapped, ok, applied, duplicate, other = 0, 0, 0, 0, 0, 0
end

function request()
  next_body = next_body + 1
  if next_body > #bodies then
    next_body, wrapped = 1, wrapped + 1 -- out of distinct callbacks: repeats from here (reported)
  end
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, bodies[next_body])
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if string.find(body, '"applied"', 1, true) then
      applied = applied + 1
    elseif string.find(body, '"duplicate"', 1, true) then
      duplicate = duplicate + 1
    end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "ok": %d, "applied": %d, "duplicate": %d, "not_ok": %d, "wrapped": %d, "errors": %d, "p99_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, t:get("ok"), t:get("applied"), t:get("duplicate"),
    t:get("other"), t:get("wrapped"),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(99) / 1000))
end
