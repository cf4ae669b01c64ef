//! What a run measures besides latency: CPU seconds and memory of processes
//! (from /proc), and Redis's own counters (from `INFO`).

/// CPU seconds (user + system) of a process so far, from /proc/<pid>/stat.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A section of Redis's `INFO`, or None when Redis cannot be asked.
pub(crate) fn redis_info(url: &str, section: &str) -> Option<String> {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg(section).query(&mut c))
        .ok()
}

/// The number that follows `prefix` at the start of a line of `INFO` text
/// ("used_cpu_sys:", "cmdstat_evalsha:calls=").
pub(crate) fn info_number(info: &str, prefix: &str) -> Option<f64> {
    info.lines().find_map(|line| {
        let rest = line.strip_prefix(prefix)?;
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

/// Redis's own CPU seconds so far, from `INFO cpu` (getrusage: microseconds, where
/// /proc's utime and stime tick at 10 ms), for per-message figures too small for
/// ticks.
pub(crate) fn redis_cpu_seconds(url: &str) -> Option<f64> {
    let info = redis_info(url, "cpu")?;
    Some(info_number(&info, "used_cpu_sys:")? + info_number(&info, "used_cpu_user:")?)
}

/// How many times Redis has run `command` so far, scripts' calls included.
pub(crate) fn redis_command_calls(url: &str, command: &str) -> u64 {
    redis_info(url, "commandstats")
        .and_then(|info| info_number(&info, &format!("cmdstat_{command}:calls=")))
        .unwrap_or(0.0) as u64
}

/// Resident memory of a process in bytes, from /proc/<pid>/status.
pub(crate) fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
