// CPU seconds per 1,000 jobs for a peer's timed window, in the same units as
// redwire-bench reports for Redwire: this Node process (producers, workers and the
// queue library together) and, when its pid is given, the redis-server.
const { execSync } = require('child_process');
const fs = require('fs');

// Clock ticks per second of /proc/<pid>/stat's utime and stime.
const TICKS = Number(execSync('getconf CLK_TCK').toString().trim()) || 100;

function redisSeconds(pid) {
  if (!pid) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5); here 11 and 12 after the name.
    return (Number(fields[11]) + Number(fields[12])) / TICKS;
  } catch {
    return null;
  }
}

// Starts measuring; the returned function gives the JSON fields for `jobs` jobs.
function startCpu(redisPid) {
  const own = process.cpuUsage();
  const redis = redisSeconds(redisPid);
  return (jobs) => {
    const used = process.cpuUsage(own);
    const redisNow = redisSeconds(redisPid);
    const perK = (seconds) => (seconds === null ? null : seconds / (jobs / 1000));
    return {
      peer_cpu_s_per_1k: perK((used.user + used.system) / 1e6),
      redis_cpu_s_per_1k: perK(redis === null || redisNow === null ? null : redisNow - redis),
    };
  };
}

module.exports = { startCpu };
