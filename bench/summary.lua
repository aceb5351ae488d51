-- Prints one machine-readable line when wrk finishes, for bench/harness.py.
-- Used on its own (`wrk -s summary.lua -H ...`: requests stay static, wrk's fast path)
-- and loaded by the other scripts of this folder.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d connect_errors=%d read_errors=%d " ..
      "write_errors=%d timeouts=%d non2xx=%d p50_us=%d p90_us=%d p99_us=%d " ..
      "max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      e.status, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
end
