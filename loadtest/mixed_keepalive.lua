-- The mixed keep-alive profile: on every connection, 1 request in 8 is 10 ms of CPU (/work),
-- the rest the cheapest page (/). A fast request stuck behind slow ones shows in the tail.
-- done() prints one MIXED line the bench parses: how many requests took over 1 s and 2 s.
local n = 0

request = function()
  n = n + 1
  if n % 8 == 0 then
    return wrk.format(nil, "/work?ms=10")
  end
  return wrk.format(nil, "/")
end

done = function(summary, latency, requests)
  local over1, over2 = 0, 0
  for i = 1, #latency do
    local value, count = latency(i)
    if value > 1000000 then over1 = over1 + count end
    if value > 2000000 then over2 = over2 + count end
  end
  io.write(string.format("MIXED over_1s=%d over_2s=%d max_us=%d\n", over1, over2, latency.max))
end
