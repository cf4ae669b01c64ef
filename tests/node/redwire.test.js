// Redwire from Node.js (@grpc/grpc-js + @grpc/proto-loader), against a real
// redwire binary: every service, each streaming rpc, the conversions Node users
// trip on (bytes, durations, 64-bit integers, enums, oneofs, field names) and
// the rich error details. Run: REDWIRE_BIN=target/debug/redwire npm test
'use strict';

const assert = require('node:assert/strict');
const { after, before, test } = require('node:test');

const { call, enumValue, errorDetails, millis, reader, startServer } = require('./client');

let rw;
before(async () => { rw = await startServer(); });
after(async () => { await rw.stop(); });

test('Cache: bytes are Buffers, durations {seconds, nanos}, enums checked names', async () => {
  // A string given for a bytes field is read as base64: send a Buffer.
  await call(rw.cache, 'Set', { key: 'greeting', value: Buffer.from('hello'), ttl: millis(60_000) });
  const got = await call(rw.cache, 'Get', { key: 'greeting' });
  assert.equal(got.found, true);
  assert.equal(Buffer.from(got.value).toString(), 'hello');

  const ttl = await call(rw.cache, 'GetTtl', { key: 'greeting' });
  assert.ok(Number(ttl.ttl.seconds) > 50, `ttl ${JSON.stringify(ttl.ttl)}`);

  // A checked enum name: IF_ABSENT does not overwrite.
  const ifAbsent = enumValue(rw.definition, 'SetCondition', 'SET_CONDITION_IF_ABSENT');
  const set = await call(rw.cache, 'Set', { key: 'greeting', value: Buffer.from('bye'), condition: ifAbsent });
  assert.equal(set.written, false);
  assert.throws(() => enumValue(rw.definition, 'SetCondition', 'SET_CONDITION_IF_ABSNT'), /no value/);

  // 64-bit integers arrive as strings (longs: String).
  const counter = await call(rw.cache, 'Increment', { key: 'visits', delta: '9007199254740993' });
  assert.equal(counter.value, '9007199254740993');
});

test('Queue: unary calls, EnqueueStream and a Consume stream with acks', async () => {
  const enqueued = await call(rw.queue, 'Enqueue', {
    queue: 'node-mail', job: { payload: Buffer.from('a'), job_id: 'node-1' },
  });
  assert.equal(enqueued.state, 'JOB_STATE_WAITING');

  // snake_case field names (keepCase): max_jobs is honoured.
  await call(rw.queue, 'EnqueueBatch', {
    queue: 'node-mail', jobs: [{ payload: Buffer.from('b') }, { payload: Buffer.from('c') }],
  });
  const taken = await call(rw.queue, 'Dequeue', { queue: 'node-mail', max_jobs: 3 });
  assert.equal(taken.jobs.length, 3);
  const acked = await call(rw.queue, 'Ack', {
    queue: 'node-mail',
    items: taken.jobs.map((j) => ({ job_id: j.job_id, lease_token: j.lease_token })),
  });
  assert.deepEqual(acked.accepted, [true, true, true]);

  const producer = rw.queue.EnqueueStream();
  const replies = reader(producer);
  producer.write({ queue: 'node-consumed', job: { payload: Buffer.from('streamed') } });
  const reply = await replies.next();
  assert.equal(reply.result, 'enqueued');
  producer.end();

  const consumer = rw.queue.Consume();
  const deliveries = reader(consumer);
  consumer.write({ subscribe: { queue: 'node-consumed', max_in_flight: 1, heartbeat_interval: millis(200) } });
  // oneofs: the decoded message names its member.
  const delivery = await deliveries.next((m) => m.message === 'delivery');
  assert.equal(Buffer.from(delivery.delivery.payload).toString(), 'streamed');
  consumer.write({ ack: { job_id: delivery.delivery.job_id, lease_token: delivery.delivery.lease_token } });
  const outcome = await deliveries.next((m) => m.message === 'outcome');
  assert.equal(outcome.outcome.ok, true);
  // Idle now: a heartbeat after the interval asked for.
  const heartbeat = await deliveries.next((m) => m.message === 'heartbeat');
  assert.ok(heartbeat.heartbeat.time, 'a heartbeat carries the server time');
  consumer.end();

  const stats = await call(rw.queue, 'Stats', { queue: 'node-consumed' });
  assert.equal([stats.waiting, stats.active, stats.dead].join(), '0,0,0');

  const page = await call(rw.queue, 'ListQueues', { page_size: 1 });
  assert.equal(page.queues.length, 1);
  assert.notEqual(page.next_page_token, '');
  const rest = await call(rw.queue, 'ListQueues', { page_token: page.next_page_token });
  assert.ok(!rest.queues.includes(page.queues[0]), 'the next page starts after the first');
});

test('PubSub: Subscribe confirms, then delivers what is published', async () => {
  const subscription = rw.pubsub.Subscribe({ channels: ['node-alerts'] });
  const events = reader(subscription);
  await events.next((e) => e.event === 'subscribed');
  const published = await call(rw.pubsub, 'Publish', { channel: 'node-alerts', payload: Buffer.from('hi') });
  assert.equal(published.receivers, '1');
  const message = await events.next((e) => e.event === 'message');
  assert.equal(Buffer.from(message.message.payload).toString(), 'hi');
  assert.ok(Number(message.sequence) >= 2);
  subscription.cancel();
});

test('Stream: Append, AppendStream, Range, Tail and a ReadGroup consumer', async () => {
  const first = await call(rw.stream, 'Append', { stream: 'node-orders', fields: { sku: Buffer.from('A-1') } });
  assert.match(first.id, /^\d+-\d+$/);

  const producer = rw.stream.AppendStream();
  const appended = reader(producer);
  producer.write({ stream: 'node-orders', fields: { sku: Buffer.from('A-2') } });
  assert.equal((await appended.next()).result, 'appended');
  producer.end();

  const range = await call(rw.stream, 'Range', { stream: 'node-orders' });
  assert.deepEqual(range.entries.map((e) => Buffer.from(e.fields.sku).toString()), ['A-1', 'A-2']);

  const tail = rw.stream.Tail({ streams: [{ stream: 'node-orders' }] });
  const tailed = reader(tail);
  await tailed.next((e) => e.event === 'started');
  await call(rw.stream, 'Append', { stream: 'node-orders', fields: { sku: Buffer.from('A-3') } });
  const entry = await tailed.next((e) => e.event === 'entry');
  assert.equal(Buffer.from(entry.entry.fields.sku).toString(), 'A-3');
  tail.cancel();

  await call(rw.stream, 'CreateGroup', { stream: 'node-orders', group: 'billing', start: '0' });
  const group = rw.stream.ReadGroup();
  const read = reader(group);
  group.write({ open: { stream: 'node-orders', group: 'billing', consumer: 'node-c' } });
  const delivered = await read.next((e) => e.event === 'entry');
  group.write({ ack: delivered.entry.id });
  const ackedId = await read.next((e) => e.event === 'acked');
  assert.equal(ackedId.acked, delivered.entry.id);
  group.end();
});

test('Lock: fencing tokens as strings, Hold until the stream closes', async () => {
  const grant = await call(rw.lock, 'Acquire', { resource: 'node-invoice', ttl: millis(30_000) });
  assert.equal(grant.acquired, true);
  assert.equal(typeof grant.fencing_token, 'string');
  assert.ok(grant.expire_time, 'the grant says when it ends');
  await call(rw.lock, 'Release', { resource: 'node-invoice', token: grant.token });

  const hold = rw.lock.Hold({ resource: 'node-leader', ttl: millis(3_000) });
  const events = reader(hold);
  const granted = await events.next((e) => e.event === 'granted');
  assert.equal(granted.granted.acquired, true);
  assert.equal((await call(rw.lock, 'Describe', { resource: 'node-leader' })).held, true);
  hold.cancel();
  const deadline = Date.now() + 10_000;
  while ((await call(rw.lock, 'Describe', { resource: 'node-leader' })).held) {
    assert.ok(Date.now() < deadline, 'closing the Hold stream releases the lock');
    await new Promise((r) => setTimeout(r, 20));
  }
});

test('errors carry ErrorInfo, BadRequest and RetryInfo details', async () => {
  await assert.rejects(call(rw.cache, 'Set', { key: '', value: Buffer.from('x') }), (error) => {
    assert.equal(error.code, 3); // INVALID_ARGUMENT
    const details = errorDetails(error);
    assert.equal(details.ErrorInfo.reason, 'INVALID_ARGUMENT');
    assert.equal(details.ErrorInfo.domain, 'redwire.dev');
    assert.equal(details.ErrorInfo.metadata.field, 'key');
    assert.equal(details.BadRequest.field_violations[0].field, 'key');
    assert.equal(details.RetryInfo, undefined);
    return true;
  });

  await call(rw.queue, 'Enqueue', { queue: 'node-errors', job: { job_id: 'e1' } });
  await assert.rejects(call(rw.queue, 'Ack', {
    queue: 'node-errors', items: [{ job_id: 'e1', lease_token: 'not-the-lease' }],
  }), (error) => {
    assert.equal(error.code, 9); // FAILED_PRECONDITION
    const info = errorDetails(error).ErrorInfo;
    assert.equal(info.reason, 'LEASE_STALE');
    assert.equal(info.metadata.job_id, 'e1');
    return true;
  });

  // A call on a key of another kind.
  await assert.rejects(call(rw.cache, 'SetMembers', { key: 'greeting' }), (error) => {
    assert.equal(errorDetails(error).ErrorInfo.reason, 'WRONG_TYPE');
    return true;
  });
});
