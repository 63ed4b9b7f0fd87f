#!/usr/bin/env node
// faultproxy.js - a loopback HTTP/1.1 proxy that sits between the client and
// a real server (kinesis-local) and breaks exchanges on request: it resets
// the connection before or in the middle of a response, stalls, answers
// 500/503 or a throttle itself, truncates a body, sends invalid JSON, lies
// in Content-Length or sends bytes that are not HTTP. No npm dependencies.
// Driven by spec/support/faultproxy.lua.
//
//   node faultproxy.js launch '{"upstream":"http://127.0.0.1:P","tls":{"cert":..,"key":..},"parent":PID}'
//     starts the proxy detached, waits until it listens, prints
//     {"pid","port","log"} (or {"error"}) and exits
//   node faultproxy.js serve --upstream URL --port-file F [--tls-cert C --tls-key K] [--parent PID]
//
// Control (same port, path /__fault/..., never counted or faulted):
//   POST /__fault/script  [{kind, ...}, ...]  faults for the next requests, in order
//   POST /__fault/mix     {rate, kinds: [...], seed}  then a random fault with probability rate
//   POST /__fault/reset   {}  empties script, mix and counters; drops stalled connections
//   GET  /__fault/stats   {requests, forwarded, faults: {kind: n}, connections, stalled}
// Fault kinds: pass, delay (delay_ms, then pass), reset_before, reset_mid,
// stall, stall_mid, http500, http503, throttle, truncate, invalid_json,
// short_length, short_length_late (the bytes past Content-Length follow
// after delay_ms, 100 by default, once the client has the whole answer),
// long_length, garbage.
'use strict';

const net = require('net');
const tls = require('tls');
const http = require('http');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const KINDS = ['pass', 'delay', 'reset_before', 'reset_mid', 'stall', 'stall_mid', 'http500',
  'http503', 'throttle', 'truncate', 'invalid_json', 'short_length', 'short_length_late', 'long_length', 'garbage'];

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(.+)$/.exec(argv[i]);
    if (m) out[m[1]] = argv[++i];
  }
  return out;
}

// ------------------------------------------------------------------ launch

async function launch(opts) {
  const root = path.resolve(__dirname, '..', '..');
  const tmp = path.join(root, 'spec', '.tmp');
  fs.mkdirSync(tmp, { recursive: true });
  const tag = `${process.pid}-${Date.now()}`;
  const portFile = path.join(tmp, `faultproxy-${tag}.port`);
  const log = path.join(tmp, `faultproxy-${tag}.log`);
  const argv = [__filename, 'serve', '--upstream', opts.upstream, '--port-file', portFile];
  if (opts.tls) argv.push('--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key);
  if (opts.parent) argv.push('--parent', String(opts.parent));
  const fd = fs.openSync(log, 'a');
  const child = spawn(process.execPath, argv, { detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  let exited = null;
  child.on('exit', (code, signal) => { exited = signal || `status ${code}`; });
  child.unref();
  const deadline = Date.now() + (opts.timeout_ms || 10000);
  for (;;) {
    if (exited) return done({ error: `faultproxy exited (${exited})`, log });
    try {
      const port = Number(fs.readFileSync(portFile, 'utf8'));
      if (port > 0) {
        fs.unlinkSync(portFile);
        return done({ pid: child.pid, port, log });
      }
    } catch (e) { /* not yet */ }
    if (Date.now() > deadline) {
      try { process.kill(child.pid, 'SIGKILL'); } catch (e) { /* gone */ }
      return done({ error: 'faultproxy did not listen in time', log });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function done(v) {
  process.stdout.write(JSON.stringify(v) + '\n');
  process.exit(v.error ? 1 : 0);
}

// ------------------------------------------------------------------ serve

function serve(args) {
  const upstream = new URL(args.upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const state = {
    script: [], mix: null, rng: null,
    requests: 0, forwarded: 0, faults: {}, connections: 0, stalled: new Set(),
  };

  // mulberry32: a seeded generator, so a soak's fault sequence can be replayed
  function rng(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function nextFault() {
    if (state.script.length > 0) return state.script.shift();
    if (state.mix && state.rng() < state.mix.rate) {
      const kinds = state.mix.kinds;
      return Object.assign({}, state.mix.params || {}, { kind: kinds[Math.floor(state.rng() * kinds.length)] });
    }
    return { kind: 'pass' };
  }

  function statusLine(code) {
    return `HTTP/1.1 ${code} ${http.STATUS_CODES[code] || 'Status'}\r\n`;
  }

  function head(code, headers, length) {
    let s = statusLine(code);
    for (const [k, v] of headers) s += `${k}: ${v}\r\n`;
    if (length !== undefined) s += `Content-Length: ${length}\r\n`;
    return s + '\r\n';
  }

  function json(sock, code, value, extra) {
    const body = Buffer.from(JSON.stringify(value));
    sock.write(head(code, [['Content-Type', 'application/json']].concat(extra || []), body.length));
    sock.write(body);
  }

  // The upstream's answer to req: { status, headers: [[k, v]...], body }.
  function forward(req) {
    return new Promise((resolve, reject) => {
      const headers = {};
      for (const [k, v] of req.headers) {
        const lk = k.toLowerCase();
        if (lk !== 'connection' && lk !== 'keep-alive' && lk !== 'expect') headers[k] = v;
      }
      headers['Content-Length'] = String(req.body.length);
      const r = http.request({
        host: upstream.hostname, port: upstream.port, method: req.method, path: req.url,
        headers, agent,
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const out = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const lk = res.rawHeaders[i].toLowerCase();
            if (lk !== 'content-length' && lk !== 'transfer-encoding' && lk !== 'connection'
                && lk !== 'keep-alive') out.push([res.rawHeaders[i], res.rawHeaders[i + 1]]);
          }
          resolve({ status: res.statusCode, headers: out, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      });
      r.on('error', reject);
      r.end(req.body);
    });
  }

  function count(kind) {
    state.faults[kind] = (state.faults[kind] || 0) + 1;
  }

  function control(sock, req) {
    const p = req.url.split('?')[0];
    let body = null;
    try {
      body = req.body.length ? JSON.parse(req.body.toString('utf8')) : null;
    } catch (e) {
      return json(sock, 400, { error: 'not JSON: ' + e.message });
    }
    if (req.method === 'POST' && p === '/__fault/script') {
      const list = Array.isArray(body) ? body : [body];
      for (const f of list) {
        if (!f || KINDS.indexOf(f.kind) < 0) return json(sock, 400, { error: `unknown fault ${JSON.stringify(f)}` });
      }
      state.script.push(...list);
      return json(sock, 200, { queued: state.script.length });
    }
    if (req.method === 'POST' && p === '/__fault/mix') {
      if (!body || typeof body.rate !== 'number' || !Array.isArray(body.kinds)
          || body.kinds.some((k) => KINDS.indexOf(k) < 0)) {
        return json(sock, 400, { error: 'mix needs {rate, kinds}' });
      }
      state.mix = body;
      state.rng = rng(body.seed || 1);
      return json(sock, 200, { ok: true });
    }
    if (req.method === 'POST' && p === '/__fault/reset') {
      state.script = [];
      state.mix = null;
      state.requests = 0;
      state.forwarded = 0;
      state.faults = {};
      for (const s of state.stalled) s.destroy();
      state.stalled.clear();
      return json(sock, 200, { ok: true });
    }
    if (req.method === 'GET' && p === '/__fault/stats') {
      return json(sock, 200, {
        requests: state.requests, forwarded: state.forwarded, faults: state.faults,
        connections: state.connections, stalled: state.stalled.size, queued: state.script.length,
      });
    }
    return json(sock, 404, { error: 'no such control endpoint' });
  }

  // Answers one parsed request; resolves to false when the connection is
  // finished (reset, closed, stalled), true when it may carry another.
  async function handle(sock, req) {
    if (req.url.startsWith('/__fault/')) {
      control(sock, req);
      return true;
    }
    state.requests++;
    const f = nextFault();
    count(f.kind);
    switch (f.kind) {
      case 'reset_before':
        sock.resetAndDestroy();
        return false;
      case 'stall':
        state.stalled.add(sock);
        return false;
      case 'http500':
      case 'http503': {
        const code = f.kind === 'http500' ? 500 : 503;
        const type = code === 500 ? 'InternalFailure' : 'ServiceUnavailable';
        json(sock, code, { __type: type, message: `injected ${code}` },
          [['x-amzn-RequestId', `fault-${state.requests}`]]);
        return true;
      }
      case 'throttle':
        json(sock, 400, {
          __type: 'com.amazonaws.kinesis.v20131202#ProvisionedThroughputExceededException',
          message: 'Rate exceeded for shard (injected)',
        }, [['x-amzn-RequestId', `fault-${state.requests}`]]);
        return true;
      case 'invalid_json': {
        const body = Buffer.from('{"StreamNames": ["a", "b"');
        sock.write(head(200, [['Content-Type', 'application/x-amz-json-1.1']], body.length));
        sock.write(body);
        return true;
      }
      case 'garbage':
        sock.end('SSH-2.0-OpenSSH_9.0 this is not HTTP\r\n\r\n');
        return false;
      default:
        break;
    }
    if (f.kind === 'delay') await new Promise((r) => setTimeout(r, f.delay_ms || 100));
    let res;
    try {
      res = await forward(req);
    } catch (e) {
      json(sock, 502, { __type: 'BadGateway', message: String(e.message) });
      return true;
    }
    state.forwarded++;
    const half = Math.floor(res.body.length / 2);
    switch (f.kind) {
      case 'reset_mid':
        sock.write(head(res.status, res.headers, res.body.length));
        sock.write(res.body.subarray(0, half), () => setTimeout(() => sock.resetAndDestroy(), 20));
        return false;
      case 'stall_mid':
        sock.write(head(res.status, res.headers, res.body.length));
        sock.write(res.body.subarray(0, half));
        state.stalled.add(sock);
        return false;
      case 'truncate':
        // the promised length, half the bytes, then a clean close
        sock.write(head(res.status, res.headers, res.body.length));
        sock.end(res.body.subarray(0, half));
        return false;
      case 'short_length':
        // a Content-Length below the body, and the whole body after it
        sock.write(head(res.status, res.headers, half));
        sock.write(res.body);
        return true;
      case 'short_length_late':
        sock.write(head(res.status, res.headers, half));
        sock.write(res.body.subarray(0, half));
        await new Promise((r) => setTimeout(r, f.delay_ms || 100));
        if (!sock.destroyed) sock.write(res.body.subarray(half));
        return true;
      case 'long_length':
        sock.write(head(res.status, res.headers, res.body.length + 100));
        sock.end(res.body);
        return false;
      default:
        sock.write(head(res.status, res.headers, res.body.length));
        sock.write(res.body);
        return true;
    }
  }

  // Parses requests off the connection one at a time (HTTP/1.1 keep-alive).
  function onConnection(sock) {
    state.connections++;
    let buf = Buffer.alloc(0);
    let busy = false;
    let open = true;
    sock.on('error', () => { open = false; });
    sock.on('close', () => { open = false; state.stalled.delete(sock); });
    const pump = async () => {
      if (busy) return;
      busy = true;
      while (open) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const [method, url] = lines[0].split(' ');
        const headers = [];
        let length = 0;
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          if (i < 0) continue;
          const k = l.slice(0, i).trim();
          const v = l.slice(i + 1).trim();
          headers.push([k, v]);
          if (k.toLowerCase() === 'content-length') length = Number(v) || 0;
        }
        if (buf.length < end + 4 + length) break;
        const body = buf.subarray(end + 4, end + 4 + length);
        buf = buf.subarray(end + 4 + length);
        const keep = await handle(sock, { method, url, headers, body });
        if (!keep) {
          open = false;
          break;
        }
      }
      busy = false;
    };
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      pump();
    });
  }

  const server = args['tls-cert']
    ? tls.createServer({ cert: fs.readFileSync(args['tls-cert']), key: fs.readFileSync(args['tls-key']) },
      onConnection)
    : net.createServer(onConnection);
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1', () => {
    fs.writeFileSync(args['port-file'], String(server.address().port));
  });

  // gone with the test process that started it
  const parent = Number(args.parent || 0);
  if (parent > 0) {
    setInterval(() => {
      try { process.kill(parent, 0); } catch (e) { process.exit(0); }
    }, 1000).unref();
  }
  process.on('SIGTERM', () => process.exit(0));
}

const mode = process.argv[2];
if (mode === 'launch') {
  launch(JSON.parse(process.argv[3] || '{}')).catch((e) => done({ error: String(e && e.stack || e) }));
} else if (mode === 'serve') {
  serve(parseArgs(process.argv.slice(3)));
} else {
  process.stderr.write('usage: faultproxy.js launch JSON | serve --upstream URL --port-file F\n');
  process.exit(2);
}
