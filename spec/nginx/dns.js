#!/usr/bin/env node
// dns.js - a minimal DNS server on loopback UDP for the nginx spec. nginx
// resolves cosocket host names only through its own `resolver` (never
// /etc/hosts), so this answers A queries for the names the spec uses
// (localhost -> 127.0.0.1) and NXDOMAIN for everything else. It prints
// {"port": N} once listening and exits when the process `--parent` is gone.
//
//   node dns.js [--parent PID]
'use strict';

const dgram = require('dgram');

const NAMES = { 'localhost': [127, 0, 0, 1], 'kinesis.spec.test': [127, 0, 0, 1] };

function readName(msg, off) {
  const labels = [];
  for (;;) {
    const len = msg[off];
    if (len === undefined) throw new Error('truncated name');
    if (len === 0) return [labels.join('.').toLowerCase(), off + 1];
    if (len >= 0xc0) throw new Error('compressed question names are not expected');
    labels.push(msg.toString('ascii', off + 1, off + 1 + len));
    off += 1 + len;
  }
}

function answer(query) {
  const id = query.readUInt16BE(0);
  const qd = query.readUInt16BE(4);
  if (qd !== 1) return null;
  const [name, end] = readName(query, 12);
  const qtype = query.readUInt16BE(end);
  const question = query.subarray(12, end + 4);
  const addr = NAMES[name];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  // QR, opcode 0, AA, RD copied, RA; rcode 3 (NXDOMAIN) for unknown names
  const rd = query[2] & 0x01;
  header[2] = 0x84 | rd;
  header[3] = 0x80 | (addr ? 0 : 3);
  header.writeUInt16BE(1, 4);
  let records = Buffer.alloc(0);
  if (addr && qtype === 1) {
    header.writeUInt16BE(1, 6);
    records = Buffer.alloc(16);
    records.writeUInt16BE(0xc00c, 0);   // pointer to the question name
    records.writeUInt16BE(1, 2);        // A
    records.writeUInt16BE(1, 4);        // IN
    records.writeUInt32BE(5, 6);        // TTL
    records.writeUInt16BE(4, 10);
    Buffer.from(addr).copy(records, 12);
  }
  return Buffer.concat([header, question, records]);
}

const args = process.argv.slice(2);
const parentIdx = args.indexOf('--parent');
const parent = parentIdx >= 0 ? Number(args[parentIdx + 1]) : 0;

const sock = dgram.createSocket('udp4');
sock.on('message', (msg, rinfo) => {
  let out;
  try {
    out = answer(msg);
  } catch (e) {
    return;
  }
  if (out) sock.send(out, rinfo.port, rinfo.address);
});
sock.bind(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: sock.address().port }) + '\n');
});

if (parent > 0) {
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch (e) {
      process.exit(0);
    }
  }, 1000).unref();
}
process.on('SIGTERM', () => process.exit(0));
