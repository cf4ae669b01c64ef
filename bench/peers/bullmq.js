// BullMQ peer: N no-op jobs, C producers adding one job at a time, a worker with
// concurrency C; prints one JSON line like redwire-bench's queue-e2e.
// Usage: node bullmq.js <redis port> <jobs> <concurrency> [redis-server pid]
const { Queue, Worker } = require('bullmq');
const { startCpu } = require('./cpu');

async function main() {
  const [port, jobs, concurrency, redisPid] = process.argv.slice(2).map(Number);
  const connection = { host: '127.0.0.1', port };
  const name = `bench-bullmq-${Date.now()}`;
  const queue = new Queue(name, { connection });
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker(name, async () => {}, { connection, concurrency });
  worker.on('completed', () => { if (++done === jobs) finish(); });
  await worker.waitUntilReady();
  const started = process.hrtime.bigint();
  const cpu = startCpu(redisPid);
  let next = 0;
  const producer = async () => {
    while (next < jobs) {
      next++;
      await queue.add('job', { x: 1 }, { removeOnComplete: true, removeOnFail: true });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, producer));
  await finished;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpuFields = cpu(jobs);
  console.log(JSON.stringify({ workload: 'BullmqE2e', ops: jobs, seconds, ops_per_sec: jobs / seconds, concurrency, ...cpuFields }));
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
