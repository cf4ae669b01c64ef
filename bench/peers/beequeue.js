// bee-queue peer: N no-op jobs, C producers saving one job at a time, processing
// with concurrency C; prints one JSON line like redwire-bench's queue-e2e.
// Usage: node beequeue.js <redis port> <jobs> <concurrency> [redis-server pid]
const Queue = require('bee-queue');
const { startCpu } = require('./cpu');

async function main() {
  const [port, jobs, concurrency, redisPid] = process.argv.slice(2).map(Number);
  const queue = new Queue(`bench-bee-${Date.now()}`, {
    redis: { host: '127.0.0.1', port },
    removeOnSuccess: true,
    removeOnFailure: true,
    storeJobs: false,
  });
  await queue.ready();
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  queue.process(concurrency, async () => {});
  queue.on('succeeded', () => { if (++done === jobs) finish(); });
  const started = process.hrtime.bigint();
  const cpu = startCpu(redisPid);
  let next = 0;
  const producer = async () => {
    while (next < jobs) {
      next++;
      await queue.createJob({ x: 1 }).save();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, producer));
  await finished;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuFields = cpu(jobs);
  console.log(JSON.stringify({ workload: 'BeeQueueE2e', ops: jobs, seconds, ops_per_sec: jobs / seconds, concurrency, ...cpuFields }));
  await queue.destroy();
  await queue.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
