-- wrk report hook: after wrk's own text report, print one machine-readable
-- line "WRK_JSON {...}" with throughput, latency percentiles (microseconds)
-- and error counts. errors.status counts responses with a status >= 400
-- (wrk's "Non-2xx or 3xx responses").
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"non_2xx_3xx":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
