// bench/js_sdk.js - the AWS SDK for JavaScript v3 (@aws-sdk/client-kinesis)
// on the same nginx stub as the Lua client: sequential calls over keep-alive
// for SECONDS, after a warm-up. A baseline of bench/run.sh, not a test.
//
//   node bench/js_sdk.js KIND PORT SECONDS
//
// KIND: put_record (100 B), put_records (500 x 100 B) or get_records (the
// stub answers 10,000 records). Prints one JSON line: rate, calls, seconds,
// cpu_us (process CPU time per call, user + system), hwm_kb (peak RSS).
'use strict';
const fs = require('fs');
const http = require('http');
const { KinesisClient, PutRecordCommand, PutRecordsCommand, GetRecordsCommand } = require('@aws-sdk/client-kinesis');
const { NodeHttpHandler } = require('@smithy/node-http-handler');

const [kind, port, seconds] = process.argv.slice(2);
const client = new KinesisClient({
  region: 'us-east-1',
  endpoint: `http://127.0.0.1:${port}`,
  credentials: { accessKeyId: 'AKID', secretAccessKey: 'SECRET' },
  maxAttempts: 1,
  requestHandler: new NodeHttpHandler({ httpAgent: new http.Agent({ keepAlive: true, maxSockets: 1 }) }),
});

// 100-byte blobs, like bench/common.lua's (the values do not matter to the cost)
function bytes(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 31 + i * 7) % 256;
  return b;
}

function command() {
  if (kind === 'put_record') {
    return () => new PutRecordCommand({ StreamName: 'bench', PartitionKey: 'partition-key-0001', Data: bytes(100, 1) });
  }
  if (kind === 'put_records') {
    const records = [];
    for (let i = 1; i <= 500; i++) {
      records.push({ Data: bytes(100, i), PartitionKey: `partition-key-${String(i).padStart(4, '0')}` });
    }
    return () => new PutRecordsCommand({ StreamName: 'bench', Records: records });
  }
  if (kind === 'get_records') {
    return () => new GetRecordsCommand({ ShardIterator: 'AAAAAAAAAAGc0FbRMa3yT1p0c2Vy' });
  }
  throw new Error(`unknown kind ${kind}`);
}

function hwmKb() {
  const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : -1;
}

async function main() {
  const make = command();
  const check = (out) => {
    if (kind === 'get_records' && out.Records.length !== 10000) throw new Error('short GetRecords answer');
    if (kind === 'put_records' && out.Records.length !== 500) throw new Error('short PutRecords answer');
  };
  for (let i = 0; i < 20; i++) check(await client.send(make()));
  const limit = Number(seconds) * 1e3;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let calls = 0;
  let elapsed = 0;
  do {
    check(await client.send(make()));
    calls++;
    elapsed = performance.now() - t0;
  } while (elapsed < limit);
  const cpu = process.cpuUsage(c0);
  console.log(JSON.stringify({
    rate: calls / (elapsed / 1e3), calls, seconds: elapsed / 1e3,
    cpu_us: (cpu.user + cpu.system) / calls, hwm_kb: hwmKb(),
  }));
  client.destroy();
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
