#!/usr/bin/env node
// producer_proxy.js - a loopback HTTP/1.1 proxy in front of kinesis-local for
// the producer specs. On PutRecords it fails a random share of the entries
// with ProvisionedThroughputExceededException (they are taken out of the
// request it forwards, and failure entries are spliced into the answer at
// their places), resets some connections before forwarding, drops some
// answers after forwarding (keeping what those requests wrote, so a spec can
// tell an allowed duplicate from a bug), and can answer slowly. Other
// operations pass through unchanged. No npm dependencies.
//
//   node producer_proxy.js --upstream URL --port-file F [--parent PID]
// Control (never faulted):
//   POST /__proxy/config {fail_rate, reset_rate, drop_rate, delay_ms, seed, reset_every, drop_every}
//     (reset_every / drop_every: also reset the Nth PutRecords, drop the Nth
//     forwarded one, so a short run meets each fault whatever its batching)
//   GET  /__proxy/stats   {requests, forwarded, failed_entries, resets, drops, passed}
//   GET  /__proxy/dropped [{PartitionKey, Data (base64), ExplicitHashKey}] written by dropped answers
'use strict';

const http = require('http');
const fs = require('fs');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(.+)$/.exec(argv[i]);
    if (m) out[m[1]] = argv[++i];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const upstream = new URL(args.upstream);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

let cfg = { fail_rate: 0, reset_rate: 0, drop_rate: 0, delay_ms: 0, reset_every: 0, drop_every: 0 };
let nput = 0, nforward = 0;
let stats = { requests: 0, forwarded: 0, failed_entries: 0, resets: 0, drops: 0, passed: 0 };
let dropped = [];

// a small seeded generator (mulberry32) so a run can be repeated
let seed = 1;
function rand() {
  seed |= 0; seed = seed + 0x6D2B79F5 | 0;
  let t = Math.imul(seed ^ seed >>> 15, 1 | seed);
  t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
  return ((t ^ t >>> 14) >>> 0) / 4294967296;
}

function reply(res, status, obj) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

function control(req, res, body) {
  const what = req.url.slice('/__proxy/'.length);
  if (what === 'config' && req.method === 'POST') {
    const c = JSON.parse(body.toString() || '{}');
    cfg = { fail_rate: c.fail_rate || 0, reset_rate: c.reset_rate || 0, drop_rate: c.drop_rate || 0,
            delay_ms: c.delay_ms || 0, reset_every: c.reset_every || 0, drop_every: c.drop_every || 0 };
    nput = 0;
    nforward = 0;
    if (c.seed !== undefined) seed = c.seed;
    stats = { requests: 0, forwarded: 0, failed_entries: 0, resets: 0, drops: 0, passed: 0 };
    dropped = [];
    return reply(res, 200, cfg);
  }
  if (what === 'stats') return reply(res, 200, stats);
  if (what === 'dropped') return reply(res, 200, dropped);
  return reply(res, 404, { error: 'unknown control ' + what });
}

// forwards (method, url, headers, body) upstream; calls done(status, headers, body) or done(null, err)
function forward(req, body, done) {
  const headers = Object.assign({}, req.headers);
  headers['content-length'] = String(body.length);
  headers.host = upstream.host;
  const up = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url,
                            headers, agent }, (ures) => {
    const chunks = [];
    ures.on('data', (c) => chunks.push(c));
    ures.on('end', () => done(ures.statusCode, ures.headers, Buffer.concat(chunks)));
    ures.on('error', (e) => done(null, e));
  });
  up.on('error', (e) => done(null, e));
  up.end(body);
}

function later(fn) {
  if (cfg.delay_ms > 0) setTimeout(fn, cfg.delay_ms); else fn();
}

function handle(req, res, body) {
  if (req.url.startsWith('/__proxy/')) return control(req, res, body);
  stats.requests++;
  const target = String(req.headers['x-amz-target'] || '');
  if (!target.endsWith('.PutRecords')) {
    stats.passed++;
    return forward(req, body, (status, headers, out) => {
      if (status === null) { req.socket.destroy(); return; }
      res.writeHead(status, headers);
      res.end(out);
    });
  }
  nput++;
  if (rand() < cfg.reset_rate || (cfg.reset_every > 0 && nput % cfg.reset_every === 0)) {
    stats.resets++;
    req.socket.destroy();
    return;
  }
  let params;
  try { params = JSON.parse(body.toString()); } catch (e) { return reply(res, 400, { __type: 'SerializationException' }); }
  const records = params.Records || [];
  const keep = [], failed = new Set();
  records.forEach((r, i) => {
    if (rand() < cfg.fail_rate) failed.add(i); else keep.push(r);
  });
  stats.failed_entries += failed.size;
  const drop = rand() < cfg.drop_rate;
  const forced = keep.length > 0 && cfg.drop_every > 0 && (nforward + 1) % cfg.drop_every === 0;
  const splice = (upRecords) => {
    const out = [];
    let j = 0;
    for (let i = 0; i < records.length; i++) {
      if (failed.has(i)) {
        out.push({ ErrorCode: 'ProvisionedThroughputExceededException',
                   ErrorMessage: 'Rate exceeded for shard in stream ' + params.StreamName + ' (producer_proxy)' });
      } else {
        out.push(upRecords[j++]);
      }
    }
    return out;
  };
  if (keep.length === 0) {
    // nothing left to write: the whole answer is failures
    return later(() => reply(res, 200, { FailedRecordCount: records.length, Records: splice([]) }));
  }
  params.Records = keep;
  stats.forwarded++;
  nforward++;
  forward(req, Buffer.from(JSON.stringify(params)), (status, headers, out) => {
    if (status === null) { req.socket.destroy(); return; }
    if (drop || forced) {
      // written upstream, but the client never hears of it
      stats.drops++;
      for (const r of keep) dropped.push(r);
      req.socket.destroy();
      return;
    }
    if (status !== 200) { res.writeHead(status, headers); res.end(out); return; }
    const answer = JSON.parse(out.toString());
    const merged = splice(answer.Records);
    const failedCount = merged.filter((r) => r.ErrorCode).length;
    later(() => reply(res, 200, { FailedRecordCount: failedCount, Records: merged,
                                  EncryptionType: answer.EncryptionType }));
  });
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  req.on('error', () => {});
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(args['port-file'], String(server.address().port));
});

// stop with the process that started us
if (args.parent) {
  const parent = Number(args.parent);
  setInterval(() => {
    try { process.kill(parent, 0); } catch (e) { process.exit(0); }
  }, 500).unref();
}
