#!/usr/bin/env node
// launch.js - starts a test server detached on free loopback ports, waits
// until it accepts connections, prints one JSON line and exits, leaving the
// server running (peers.lua stops it by pid).
//
//   node spec/support/launch.js <kinesis-local|kinesalite|dynalite|stub> ['{"env":{...},...}']
//
// Options (JSON): env (extra environment), args (extra argv), shard_limit
// (kinesalite), tls (stub: also serve HTTPS with a fresh self-signed cert for
// 127.0.0.1), parent (pid: a watchdog stops the server when it dies),
// timeout_ms (default 30000).
// Prints {"pid","port","tls_port","log","cafile"} or, on failure,
// {"error","log_tail"} with exit status 1.
'use strict';

const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const tls = require('tls');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const TMP = path.join(ROOT, 'spec', '.tmp');
const MODULES = path.join(ROOT, 'node_modules');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// A TLS port is probed with a full handshake and a clean close: kinesis-local
// never finishes a graceful shutdown (SIGTERM) after a TLS connection was
// dropped before its handshake.
function accepts(port, secure) {
  return new Promise((resolve) => {
    const opts = { port, host: '127.0.0.1', rejectUnauthorized: false };
    const sock = secure ? tls.connect(opts) : net.connect(opts);
    let settled = false;
    const finish = (ok) => {
      if (settled) return;
      settled = true;
      if (ok) sock.end();
      else sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(2000, () => finish(false));
    sock.once(secure ? 'secureConnect' : 'connect', () => finish(true));
    sock.once('error', () => finish(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tail(file, lines) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch (e) {
    return '';
  }
}

function selfSignedCert(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { key, cert };
}

// How each server is started: command, argv, cwd, env, ports to wait for.
async function plan(name, opts) {
  const port = await freePort();
  const env = Object.assign({}, process.env, opts.env || {});
  const extra = (opts.args || []).map(String);
  switch (name) {
    case 'kinesis-local': {
      const tlsPort = await freePort();
      const dir = path.join(MODULES, 'kinesis-local');
      // main.js reads server.json (its TLS certificate) from the working directory
      env.KINESIS_MOCK_PLAIN_PORT = String(port);
      env.KINESIS_MOCK_TLS_PORT = String(tlsPort);
      if (!(opts.env && opts.env.LOG_LEVEL)) env.LOG_LEVEL = 'WARN';
      return { cmd: process.execPath, argv: [path.join(dir, 'main.js'), ...extra],
               cwd: dir, env, port, tlsPort };
    }
    case 'kinesalite': {
      const dir = path.join(MODULES, 'kinesalite');
      const argv = [path.join(dir, 'cli.js'), '--port', String(port)];
      if (opts.shard_limit !== undefined) argv.push('--shardLimit', String(opts.shard_limit));
      return { cmd: process.execPath, argv: argv.concat(extra), cwd: dir, env, port };
    }
    case 'dynalite': {
      // DynamoDB on LevelDB, in memory unless --path is given
      const dir = path.join(MODULES, 'dynalite');
      const argv = [path.join(dir, 'cli.js'), '--port', String(port)];
      return { cmd: process.execPath, argv: argv.concat(extra), cwd: dir, env, port };
    }
    case 'stub': {
      const argv = [path.join(__dirname, 'stub.js'), '--port', String(port)];
      let tlsPort;
      let cafile;
      if (opts.tls) {
        tlsPort = await freePort();
        const c = selfSignedCert(path.join(TMP, `stub-cert-${port}`));
        argv.push('--tls-port', String(tlsPort), '--tls-cert', c.cert, '--tls-key', c.key);
        cafile = c.cert;
      }
      return { cmd: process.execPath, argv: argv.concat(extra), cwd: ROOT, env, port,
               tlsPort, cafile };
    }
    default:
      throw new Error(`unknown server '${name}' (kinesis-local, kinesalite, dynalite, stub)`);
  }
}

// Stops the server's process group once `parent` is gone, so a crashed test
// run leaves nothing behind; exits by itself when the server stops first.
function watchdog(parent, pid) {
  const script = `while kill -0 ${pid} 2>/dev/null; do ` +
    `if ! kill -0 ${parent} 2>/dev/null; then kill -TERM -${pid} 2>/dev/null; exit 0; fi; ` +
    'sleep 1; done';
  const w = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
  w.unref();
}

async function main() {
  const name = process.argv[2];
  const opts = process.argv[3] ? JSON.parse(process.argv[3]) : {};
  const timeout = opts.timeout_ms || 30000;
  fs.mkdirSync(TMP, { recursive: true });

  const p = await plan(name, opts);
  const log = path.join(TMP, `${name}-${p.port}.log`);
  const fd = fs.openSync(log, 'a');
  const child = spawn(p.cmd, p.argv, {
    cwd: p.cwd, env: p.env, detached: true, stdio: ['ignore', fd, fd],
  });
  fs.closeSync(fd);
  let exited = null;
  child.on('exit', (code, signal) => { exited = signal || `status ${code}`; });
  child.unref();

  const deadline = Date.now() + timeout;
  const ports = [[p.port, false]].concat(p.tlsPort ? [[p.tlsPort, true]] : []);
  for (;;) {
    if (exited) return fail(`${name} exited (${exited}) before it listened`, log);
    let ready = true;
    for (const [port, secure] of ports) {
      if (!(await accepts(port, secure))) { ready = false; break; }
    }
    if (ready) break;
    if (Date.now() > deadline) {
      try { process.kill(-child.pid, 'SIGKILL'); } catch (e) { /* already gone */ }
      return fail(`${name} did not listen on ${ports.map((x) => x[0]).join(', ')} within ${timeout} ms`, log);
    }
    await sleep(100);
  }
  if (opts.parent) watchdog(Number(opts.parent), child.pid);
  const out = { pid: child.pid, port: p.port, log };
  if (p.tlsPort) out.tls_port = p.tlsPort;
  if (p.cafile) out.cafile = p.cafile;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

function fail(message, log) {
  process.stdout.write(JSON.stringify({ error: message, log, log_tail: tail(log, 40) }) + '\n');
  process.exit(1);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
