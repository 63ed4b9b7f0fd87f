#!/usr/bin/env node
// stub.js - a programmable HTTP/1.1 server on loopback for transport and
// client specs (no npm dependencies). It records every request and answers
// from a queue of scripted responses; control endpoints live under /__stub/
// on the same port and are neither recorded nor counted. See peers.lua.
//
//   node stub.js --port P [--tls-port P2 --tls-cert cert.pem --tls-key key.pem]
//
// Queued response: { status, headers: {...}, body | body_b64 | body_repeat: [text, n]
//   | echo_body: true (the request's body), delay_ms,
//   action: "reset" | "close_after_headers" | "stall" | "truncate" }
//
// Streamed response (event streams), sent with chunked transfer coding (or
// as HTTP/2 DATA frames) as fast as the client reads, honouring backpressure:
// { status, headers, frames_b64: [...], repeat: n (send the list n times),
//   frame_delay_ms (pause before each frame after the first),
//   chunk_bytes (re-cut the bytes into pieces of this size, frames ignored),
//   stall_after: k (after k pieces send nothing more and keep the connection),
//   end: "finish" (default: terminating chunk) | "close" (FIN mid-body)
//      | "reset" (RST mid-body) }
// With --h2 1 the TLS port speaks HTTP/2 (ALPN h2, HTTP/1.1 still accepted).
'use strict';

const http = require('http');
const https = require('https');
const http2 = require('http2');
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
const state = {
  queue: [],
  log: [],
  inFlight: 0,
  maxInFlight: 0,
  total: 0,
  connections: 0,
  seq: 0,
};
const utf8 = new TextDecoder('utf-8', { fatal: true });

function responseBody(r, requestBody) {
  if (r.echo_body) return requestBody;
  if (r.body_b64 !== undefined) return Buffer.from(r.body_b64, 'base64');
  if (r.body_repeat !== undefined) return Buffer.from(String(r.body_repeat[0]).repeat(r.body_repeat[1]));
  if (r.body !== undefined) return Buffer.from(String(r.body));
  return Buffer.alloc(0);
}

function statusLine(status) {
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] || 'Status'}\r\n`;
}

function rawHeaders(headers) {
  let s = '';
  for (const [k, v] of Object.entries(headers || {})) s += `${k}: ${v}\r\n`;
  return s;
}

function sendJson(res, status, value) {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

function control(req, res, body) {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/__stub/queue') {
    let items;
    try {
      items = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return sendJson(res, 400, { error: 'queue body is not JSON: ' + e.message });
    }
    if (!Array.isArray(items)) items = [items];
    state.queue.push(...items);
    return sendJson(res, 200, { queued: state.queue.length });
  }
  if (req.method === 'GET' && path === '/__stub/requests') return sendJson(res, 200, state.log);
  if (req.method === 'POST' && path === '/__stub/reset') {
    state.queue = [];
    state.log = [];
    state.maxInFlight = state.inFlight;
    state.total = 0;
    return sendJson(res, 200, { ok: true });
  }
  if (req.method === 'GET' && path === '/__stub/stats') {
    return sendJson(res, 200, {
      max_in_flight: state.maxInFlight,
      in_flight: state.inFlight,
      total: state.total,
      connections: state.connections,
      queued: state.queue.length,
    });
  }
  return sendJson(res, 404, { error: 'unknown control endpoint ' + req.method + ' ' + path });
}

function record(req, body) {
  const entry = {
    seq: ++state.seq,
    conn: req.socket.__stubId,
    tls: Boolean(req.socket.encrypted),
    method: req.method,
    path: req.url,
    http_version: req.httpVersion,
    headers: req.headers,
    raw_headers: [],
    body_length: body.length,
    body_b64: body.toString('base64'),
    time: Date.now() / 1000,
  };
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    entry.raw_headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  }
  try {
    entry.body = utf8.decode(body);
  } catch (e) {
    // not UTF-8: body_b64 alone carries it
  }
  state.log.push(entry);
}

// The pieces of a streamed response, produced lazily so a long stream
// (repeat in the 10^4s) never sits in memory at once.
function* pieces(r) {
  // an empty Lua table arrives as {}: no frames
  const frames = (Array.isArray(r.frames_b64) ? r.frames_b64 : []).map((b) => Buffer.from(b, 'base64'));
  const repeat = r.repeat || 1;
  if (r.chunk_bytes > 0) {
    const all = Buffer.concat(frames);
    for (let k = 0; k < repeat; k++) {
      for (let i = 0; i < all.length; i += r.chunk_bytes) yield all.subarray(i, i + r.chunk_bytes);
    }
    return;
  }
  for (let k = 0; k < repeat; k++) {
    for (const f of frames) yield f;
  }
}

function stream(req, res, r) {
  const socket = req.socket;
  const headers = Object.assign({ 'Content-Type': 'application/vnd.amazon.eventstream' }, r.headers || {});
  res.writeHead(r.status || 200, headers);
  if (typeof res.flushHeaders === 'function') res.flushHeaders();
  const gen = pieces(r);
  let sent = 0;
  let gone = false;
  res.once('close', () => { gone = true; });
  const finish = () => {
    switch (r.end) {
      case 'close':
        // FIN without the terminating chunk: the body is cut short
        if (res.stream) res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        else socket.end();
        return;
      case 'reset':
        if (res.stream) res.stream.close(http2.constants.NGHTTP2_CANCEL);
        else if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
        else socket.destroy();
        return;
      default:
        res.end();
    }
  };
  const next = () => {
    for (;;) {
      if (gone || socket.destroyed) return;
      if (r.stall_after !== undefined && sent >= r.stall_after) return;   // stall: keep it open
      const it = gen.next();
      if (it.done) return finish();
      sent++;
      const ok = res.write(it.value);
      if (r.frame_delay_ms > 0) {
        setTimeout(next, r.frame_delay_ms);
        return;
      }
      if (!ok) {
        res.once('drain', next);
        return;
      }
    }
  };
  next();
}

function answer(req, res, r, requestBody) {
  const socket = req.socket;
  if (socket.destroyed) return;   // the client left during delay_ms
  if (r.frames_b64 !== undefined) return stream(req, res, r);
  const body = responseBody(r, requestBody);
  switch (r.action) {
    case 'stall':
      // never answer; the request ends when the client gives up
      return;
    case 'reset':
      // RST instead of FIN where node can do it (resetAndDestroy: node >= 16.17)
      if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
      else socket.destroy();
      return;
    case 'close_after_headers': {
      const len = r.content_length !== undefined ? r.content_length : Math.max(body.length, 1);
      socket.end(statusLine(r.status || 200) + rawHeaders(r.headers) +
                 `Content-Length: ${len}\r\n\r\n`);
      return;
    }
    case 'truncate': {
      const len = r.content_length !== undefined ? r.content_length : body.length + 1000;
      socket.write(statusLine(r.status || 200) + rawHeaders(r.headers) +
                   `Content-Length: ${len}\r\n\r\n`);
      socket.end(body);
      return;
    }
    default: {
      const headers = Object.assign({}, r.headers || {});
      if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-length')) {
        headers['Content-Length'] = body.length;
      }
      res.writeHead(r.status || 200, headers);
      res.end(body);
    }
  }
}

function handle(req, res) {
  const isControl = req.url.startsWith('/__stub/');
  let finished = false;
  const done = () => {
    if (finished) return;
    finished = true;
    state.inFlight--;
  };
  if (!isControl) {
    state.inFlight++;
    state.total++;
    if (state.inFlight > state.maxInFlight) state.maxInFlight = state.inFlight;
    // 'close' also fires when the client goes away or the socket is dropped
    res.once('finish', done);
    res.once('close', done);
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (isControl) return control(req, res, body);
    record(req, body);
    const r = state.queue.length > 0
      ? state.queue.shift()
      : { status: 500, headers: { 'Content-Type': 'application/json' },
          body: '{"__type":"StubNoResponseQueued"}' };
    if (r.delay_ms > 0) setTimeout(() => answer(req, res, r, body), r.delay_ms);
    else answer(req, res, r, body);
  });
}

function setup(server, secure) {
  // long keep-alive so connection reuse is visible; no server-side request limit
  server.keepAliveTimeout = 60000;
  server.headersTimeout = 65000;
  server.requestTimeout = 0;
  server.on(secure ? 'secureConnection' : 'connection', (socket) => {
    socket.__stubId = ++state.connections;
  });
  return server;
}

const host = args.host || '127.0.0.1';
const servers = [];
const plain = setup(http.createServer(handle));
plain.listen(Number(args.port || 0), host, () => {
  process.stdout.write(JSON.stringify({ listening: plain.address().port }) + '\n');
});
servers.push(plain);

if (args['tls-cert'] && args['tls-key']) {
  const tlsOpts = {
    cert: fs.readFileSync(args['tls-cert']),
    key: fs.readFileSync(args['tls-key']),
    ALPNProtocols: ['http/1.1'],
  };
  let tls;
  if (args.h2) {
    tls = http2.createSecureServer(Object.assign({}, tlsOpts,
      { allowHTTP1: true, ALPNProtocols: ['h2', 'http/1.1'] }), handle);
    tls.on('secureConnection', (socket) => { socket.__stubId = ++state.connections; });
  } else {
    tls = setup(https.createServer(tlsOpts, handle), true);
  }
  tls.listen(Number(args['tls-port'] || 0), host, () => {
    process.stdout.write(JSON.stringify({ listening_tls: tls.address().port }) + '\n');
  });
  servers.push(tls);
}

function shutdown() {
  for (const s of servers) {
    s.close();
    if (typeof s.closeAllConnections === 'function') s.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
