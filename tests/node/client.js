// What a Node user needs to talk to Redwire with @grpc/grpc-js and
// @grpc/proto-loader: the loader options that work (the README's "From Node"
// section shows the same), a running server for the tests, and the decoding of
// gRPC's rich error details.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const ROOT = path.resolve(__dirname, '..', '..');
const PROTO_DIR = path.join(ROOT, 'proto');

// keepCase: field names as in the .proto (max_jobs, not maxJobs): without it the
//   loader expects camelCase and silently drops snake_case fields.
// longs: String: 64-bit integers (fencing_token, counts) as strings, not Long objects.
// enums: String: enum values as their names ("JOB_STATE_WAITING").
// defaults: unset fields come back with their default (0, "", false, []).
// oneofs: a decoded message names its set oneof member (reply.event === "message").
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function load() {
  const files = fs.readdirSync(path.join(PROTO_DIR, 'redwire', 'v1'))
    .filter((f) => f.endsWith('.proto'))
    .map((f) => path.join('redwire', 'v1', f));
  const definition = protoLoader.loadSync(files, { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  return { proto: grpc.loadPackageDefinition(definition).redwire.v1, definition };
}

// The numeric value of an enum name, refusing names the enum does not have: a
// misspelled name would otherwise be dropped and the field sent as 0
// (UNSPECIFIED, the documented default), which may not be what was meant.
function enumValue(definition, enumName, valueName) {
  const values = definition[`redwire.v1.${enumName}`].type.value;
  const found = values.find((v) => v.name === valueName);
  if (!found) throw new Error(`${enumName} has no value ${valueName}`);
  return found.number;
}

// A google.protobuf.Duration from milliseconds: {seconds, nanos}, not "30s"
// (that string form is the JSON mapping grpcurl uses).
function millis(ms) {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

// google.rpc.Status and the three details Redwire sends, decoded from the
// grpc-status-details-bin trailer of a failed call.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } },
                },
              },
            },
          },
        },
      },
    },
  },
});

// {ErrorInfo, BadRequest, RetryInfo} of a failed call (each absent when not sent).
function errorDetails(error) {
  const [raw] = error.metadata.get('grpc-status-details-bin');
  if (!raw) return {};
  const status = rpcTypes.lookupType('google.rpc.Status').decode(raw);
  const found = {};
  for (const any of status.details) {
    const name = any.type_url.split('/').pop().replace('google.rpc.', '');
    const type = rpcTypes.lookup(`google.rpc.${name}`);
    if (type) found[name] = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
  }
  return found;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

// Starts the redwire binary ($REDWIRE_BIN) on a free port with its embedded Redis
// in a temporary directory; resolves once a call succeeds.
async function startServer() {
  const binary = process.env.REDWIRE_BIN;
  if (!binary) throw new Error('set REDWIRE_BIN to the redwire binary');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rw-node-'));
  const address = `127.0.0.1:${await freePort()}`;
  const child = spawn(binary, ['--listen', address, '--data-dir', path.join(dir, 'data'), '--admin-listen', 'off'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (chunk) => { log += chunk; });
  const { proto, definition } = load();
  const credentials = grpc.credentials.createInsecure();
  const clients = {
    cache: new proto.Cache(address, credentials),
    queue: new proto.Queue(address, credentials),
    pubsub: new proto.PubSub(address, credentials),
    stream: new proto.Stream(address, credentials),
    lock: new proto.Lock(address, credentials),
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await call(clients.cache, 'Get', { key: 'ping' });
      break;
    } catch (error) {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`redwire did not start: ${error.message}\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    ...clients,
    definition,
    async stop() {
      for (const client of Object.values(clients)) client.close();
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 10_000 }, (error, reply) => {
      if (error) reject(error);
      else resolve(reply);
    });
  });
}

// A reader of a server stream: `await reader.next(wanted)` gives the next message
// that satisfies `wanted`, within 10 s. Messages are buffered in between (the
// stream's async iterator), so none is lost while the test does something else.
function reader(stream) {
  const messages = stream[Symbol.asyncIterator]();
  return {
    async next(wanted = () => true) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        let timer;
        const timeout = new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('no wanted message within 10 s')),
            Math.max(1, deadline - Date.now()));
        });
        const item = await Promise.race([messages.next(), timeout]).finally(() => clearTimeout(timer));
        if (item.done) throw new Error('the stream ended');
        if (wanted(item.value)) return item.value;
      }
    },
  };
}

module.exports = { LOADER_OPTIONS, call, enumValue, errorDetails, load, millis, reader, startServer };
